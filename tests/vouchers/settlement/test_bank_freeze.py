"""A payment cannot be diverted by editing its bank transfer (migration 0019's triggers),
and reconciliation catches a transfer edited around them; the statements' freeze covers
who prepared, rejected and paid, and when."""

# ruff: noqa: F811, S608 (the fixtures are imported; the SQL is the test's own text)

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from eldercare.db import db
from tests.vouchers.settlement.builders import result_csv
from tests.vouchers.settlement.test_bank_results import row, sent  # noqa: F401 (fixture)
from tests.vouchers.settlement.test_reconcile import bypass_freeze
from vouchers.settlement.bank import bank_files, bank_results
from vouchers.settlement.models import BankTransfer, SettlementException, Statement
from vouchers.settlement.reconcile import reconcile

DIVERT = "6200009999999999"


def _refused(sql: str, params: dict) -> None:
    with pytest.raises(sa.exc.DBAPIError), db.session.begin_nested():
        db.session.execute(sa.text(sql), params)


@pytest.mark.parametrize(
    "change",
    [
        f"payee_account_number = '{DIVERT}'",
        "payee_account_name = 'X'",
        "payee_bank_name = 'X'",
        "amount_fen = amount_fen + 1",
        "reference = reference || 'x'",
        "line_no = line_no + 100",
        "batch_id = batch_id + 1000",
        "kind = 'fee_refund', statement_id = NULL, fee_refund_id = 1",
    ],
)
def test_a_sent_transfer_cannot_be_edited(sent, change):
    _refused(f"UPDATE bank_transfers SET {change} WHERE id = :i", {"i": sent.l1.id})
    db.session.expire_all()
    transfer = db.session.get(BankTransfer, sent.l1.id)
    assert transfer.payee_account_number == sent.first.payee_account_number
    assert transfer.amount_fen == sent.first.payable_fen
    file_text = b"".join(bank_files.csv_chunks(sent.batch)).decode("utf-8-sig")
    assert DIVERT not in file_text


def test_a_transfer_cannot_be_deleted(sent):
    _refused("DELETE FROM bank_transfers WHERE id = :i", {"i": sent.l1.id})
    assert db.session.get(BankTransfer, sent.l1.id) is not None


def test_the_bank_answer_is_written_once_from_sent(sent, bureau):
    out = bank_results.import_result(
        sent.batch, result_csv([row(sent.l1), row(sent.l2, "失败", "户名不符")]), "r.csv",
        actor=bureau.officer,
    )  # fmt: skip
    assert out.paid == [sent.l1.reference] and len(out.failed) == 1
    for tid, change in (
        (sent.l1.id, "status = 'failed'"),
        (sent.l1.id, "result_import_id = NULL"),
        (sent.l2.id, "status = 'sent'"),
        (sent.l2.id, "bank_reason = 'x'"),
        (sent.l2.id, "decided_at = NULL"),
    ):
        _refused(f"UPDATE bank_transfers SET {change} WHERE id = :i", {"i": tid})
    db.session.expire_all()
    assert db.session.get(BankTransfer, sent.l1.id).status == "paid"
    assert db.session.get(BankTransfer, sent.l2.id).status == "failed"


def _mismatches(month, kind):
    run = reconcile.reconcile_month(month)
    return run, [m for m in run.findings["mismatches"] if m["kind"] == kind]


def test_reconciliation_catches_a_transfer_diverted_around_the_triggers(sent, bureau):
    bypass_freeze(
        f"UPDATE bank_transfers SET payee_account_number = '{DIVERT}', "
        "payee_account_name = 'X' WHERE id = :i",
        {"i": sent.l1.id},
    )
    month = sent.first.month
    run, [found] = _mismatches(month, "bank.transfer_payee")
    assert not run.ok
    assert found["evidence"]["transfer_payee"]["account_number"] == DIVERT
    assert found["evidence"]["approved_payee"]["account_number"] == sent.first.payee_account_number
    assert found["evidence"]["statement"] == sent.first.id
    queued = db.session.scalars(
        sa.select(SettlementException).where(SettlementException.kind == "bank.transfer_payee")
    ).all()
    assert len(queued) == 1 and queued[0].status == "open"


def test_reconciliation_catches_a_fee_refund_transfer_of_another_amount(sent):
    bypass_freeze("UPDATE bank_transfers SET amount_fen = amount_fen + 1 WHERE id = :i",
                  {"i": sent.l3.id})  # fmt: skip
    _, found = _mismatches(sent.first.month, "bank.transfer_payee")
    assert [f["evidence"]["fee_refund"] for f in found] == [sent.refund.id]


def test_an_untouched_batch_reconciles_without_payee_findings(sent):
    _, found = _mismatches(sent.first.month, "bank.transfer_payee")
    assert found == []


@pytest.mark.parametrize(
    "change",
    [
        "prepared_at = prepared_at + 1",
        "rejected_at = approved_at",
        "rejection_reason = 'x'",
        "rejected_by_user_id = approved_by_user_id",
    ],
)
def test_who_and_when_of_an_approved_statement_cannot_change(sent, change):
    before = db.session.get(Statement, sent.second.id)
    prepared_at, rejected_at = before.prepared_at, before.rejected_at
    if change.startswith("prepared_at") and db.session.get_bind().dialect.name == "postgresql":
        change = "prepared_at = prepared_at + interval '1 day'"
    elif change.startswith("prepared_at"):
        change = "prepared_at = '2001-01-01 00:00:00.000000'"
    _refused(f"UPDATE statements SET {change} WHERE id = :i", {"i": sent.second.id})
    db.session.expire_all()
    after = db.session.get(Statement, sent.second.id)
    assert (after.prepared_at, after.rejected_at) == (prepared_at, rejected_at)


def test_paid_at_of_a_paid_statement_cannot_change(sent, bureau):
    bank_results.import_result(sent.batch, result_csv([row(sent.l1)]), "r.csv",
                               actor=bureau.officer)  # fmt: skip
    db.session.expire_all()
    paid = db.session.get(Statement, sent.first.id)
    assert paid.status == "paid"
    paid_at = paid.paid_at
    _refused("UPDATE statements SET paid_at = NULL WHERE id = :i", {"i": paid.id})
    _refused("UPDATE statements SET paid_at = :t WHERE id = :i",
             {"i": paid.id, "t": paid_at - timedelta(days=3)})  # fmt: skip
    db.session.expire_all()
    assert db.session.get(Statement, sent.first.id).paid_at == paid_at
