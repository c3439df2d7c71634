"""A late "paid" for a transfer that had failed and whose statement went into a later
batch: the finding names the newer transfer and its batch, the statement is held (no new
batch, a "paid" result for the newer transfer is queued, not booked), the bank page shows
it first, and resolving the finding lifts the hold."""

# ruff: noqa: F811 (the fixture is imported)

from __future__ import annotations

import pytest
import sqlalchemy as sa

from eldercare.db import db
from eldercare.errors import Conflict
from tests.vouchers.settlement.builders import books_balanced, result_csv
from tests.vouchers.settlement.test_bank_results import row, sent  # noqa: F401 (fixture)
from vouchers.pool import ledger
from vouchers.settlement import exceptions
from vouchers.settlement.bank import bank_files, bank_results
from vouchers.settlement.models import BankTransfer, SettlementException, Statement

EN = {"Accept-Language": "en"}


def _import(batch, rows, bureau, name):
    return bank_results.import_result(batch, result_csv(rows), name, actor=bureau.officer)


@pytest.fixture
def rebatched(sent, bureau):
    """l2 failed, its statement went into a second batch (t2, still 'sent'), then the bank
    sent a corrected file for the first batch: l2 paid after all."""
    _import(sent.batch, [row(sent.l1), row(sent.l2, "失败", "系统超时"), row(sent.l3)], bureau,
            "first.csv")  # fmt: skip
    second = bank_files.create_batch(actor=bureau.officer)
    [t2] = second.transfers
    assert t2.statement_id == sent.second.id
    sent.second_batch, sent.t2 = second, t2
    sent.settled = ledger.balances(["settled"])["settled"]
    sent.late = _import(sent.batch, [row(sent.l2)], bureau, "corrected.csv")
    return sent


def _open(kind="bank.paid_after_failure"):
    return db.session.scalars(
        sa.select(SettlementException).where(
            SettlementException.kind == kind, SettlementException.status == "open"
        )
    ).all()


def test_the_late_paid_names_the_newer_transfer_and_its_batch(rebatched):
    s = rebatched
    assert [e["kind"] for e in s.late.exceptions] == ["bank.paid_after_failure"]
    [finding] = _open()
    evidence = finding.evidence
    assert evidence["statement"] == s.second.id and evidence["reference"] == s.l2.reference
    assert evidence["newer_transfers"] == [
        {"transfer": s.t2.id, "reference": s.t2.reference,
         "batch": s.second_batch.reference, "status": "sent"}
    ]  # fmt: skip
    assert db.session.get(Statement, s.second.id).status == "approved"
    assert ledger.balances(["settled"])["settled"] == s.settled
    assert db.session.get(BankTransfer, s.l2.id).status == "failed"


def test_a_paid_result_for_the_held_newer_transfer_is_queued_not_booked(rebatched, bureau):
    s = rebatched
    outcome = _import(s.second_batch, [row(s.t2)], bureau, "second.csv")
    assert outcome.paid == []
    assert [e["kind"] for e in outcome.exceptions] == ["bank.paid_after_failure"]
    db.session.expire_all()
    assert db.session.get(BankTransfer, s.t2.id).status == "sent"
    assert db.session.get(Statement, s.second.id).status == "approved"
    assert ledger.balances(["settled"])["settled"] == s.settled
    assert len(_open()) == 2  # the hold and the queued result
    assert books_balanced()


def test_a_held_statement_goes_into_no_new_batch_until_resolved(rebatched, bureau):
    s = rebatched
    outcome = _import(s.second_batch, [row(s.t2, "失败", "账户冻结")], bureau, "second.csv")
    assert [r for r, _ in outcome.failed] == [s.t2.reference]  # failing moves nothing
    with pytest.raises(Conflict):
        bank_files.create_batch(actor=bureau.officer)
    [hold] = _open()
    exceptions.resolve(hold, resolution="银行确认原转账已付款，已记录", actor=bureau.officer)
    third = bank_files.create_batch(actor=bureau.officer)
    assert [t.statement_id for t in third.transfers] == [s.second.id]


def test_the_bank_page_shows_it_first(rebatched, client, login, bureau):
    db.session.commit()
    login(bureau.officer)
    page = client.get("/settlement/bank", headers=EN).get_data(as_text=True)
    assert 'id="paid-after-failure"' in page
    notice = page[page.index('id="paid-after-failure"') :]
    notice = notice[: notice.index("</div>")]
    assert rebatched.t2.reference in notice and rebatched.second_batch.reference in notice
    assert page.index('id="paid-after-failure"') < page.index("waiting-figures")
