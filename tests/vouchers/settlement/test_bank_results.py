"""The bank's result file: paid and failed lines, the failed ones in the next batch, the
same file twice, wrong files refused whole, bad lines to the exception queue while the
others apply, and the books after paying."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from openpyxl import Workbook

from assessment.models import FeeRefund
from eldercare.audit import AuditLog
from eldercare.errors import Conflict, InvalidInput
from tests.vouchers.settlement.builders import approved_statement, books_balanced, result_csv
from tests.vouchers.settlement.conftest import spend
from vouchers.pool import ledger
from vouchers.settlement.bank import bank_files, bank_results
from vouchers.settlement.models import (
    BankResultImport,
    BankTransfer,
    SettlementException,
    Statement,
)


@pytest.fixture
def sent(shop, bureau, db_session):
    """A batch of two statements and the fee refund, sent to the bank."""
    station = shop.market.station
    first = approved_statement(
        station, [spend(shop, 1500), spend(shop, 1200)], preparer=bureau.officer,
        approver=bureau.approver,
    )  # fmt: skip
    second = approved_statement(
        station, [spend(shop, 1000)], preparer=bureau.officer, approver=bureau.approver
    )
    refund = db_session.scalar(sa.select(FeeRefund))
    refund.payee_account_name, refund.payee_bank_name = "王秀英", "中国工商银行沈阳和平支行"
    refund.payee_account_number = "6222020000001234567"
    db_session.flush()
    batch = bank_files.create_batch(actor=bureau.officer)
    lines = {t.statement_id or ("refund", t.fee_refund_id): t for t in batch.transfers}
    return SimpleNamespace(
        batch=batch,
        first=first,
        second=second,
        refund=refund,
        station=station,
        l1=lines[first.id],
        l2=lines[second.id],
        l3=lines[("refund", refund.id)],
    )


def row(line, status="成功", reason="", fen=None, number=None, ref=None):
    return (
        ref or line.reference,
        number or line.payee_account_number,
        line.amount_fen if fen is None else fen,
        status,
        reason,
    )


def _import(sent, data, bureau, name="result.csv"):
    return bank_results.import_result(sent.batch, data, name, actor=bureau.officer)


def _queued(db_session, kind):
    return list(
        db_session.scalars(
            sa.select(SettlementException).where(
                SettlementException.kind == kind, SettlementException.status == "open"
            )
        )
    )


def test_paid_and_failed_lines_then_a_batch_of_exactly_the_failed(sent, bureau, db_session):
    before = ledger.balances()
    payable = f"provider:{sent.station.id}:payable"
    data = result_csv([row(sent.l1), row(sent.l2, "失败", "户名与账号不符"), row(sent.l3)])
    outcome = _import(sent, data, bureau)
    assert outcome.paid == [sent.l1.reference, sent.l3.reference]
    assert outcome.failed == [(sent.l2.reference, "户名与账号不符")]
    assert outcome.exceptions == []
    db_session.expire_all()
    first, second = (
        db_session.get(Statement, sent.first.id),
        db_session.get(Statement, sent.second.id),
    )
    assert (first.status, second.status) == ("paid", "approved")
    assert first.paid_at is not None and second.paid_at is None
    failed = db_session.get(BankTransfer, sent.l2.id)
    assert (failed.status, failed.bank_reason) == ("failed", "户名与账号不符")
    refund = db_session.get(FeeRefund, sent.refund.id)
    assert refund.status == "paid" and refund.paid_at is not None
    after = ledger.balances()
    assert after[payable] == before[payable] - first.subsidy_fen == second.subsidy_fen
    assert after["settled"] == before["settled"] + first.subsidy_fen
    assert after["fee_refunds:payable"] == 0
    assert after["fee_refunds:paid"] == before["fee_refunds:paid"] + refund.amount_fen
    assert books_balanced()
    audit = db_session.scalars(
        sa.select(AuditLog.action).where(AuditLog.action.like("settlement.bank_%"))
    ).all()
    assert audit.count("settlement.bank_transfer_paid") == 2
    assert audit.count("settlement.bank_transfer_failed") == 1
    assert audit.count("settlement.bank_result_import") == 1

    again = bank_files.create_batch(actor=bureau.officer)
    assert [(t.statement_id, t.amount_fen) for t in again.transfers] == [
        (second.id, second.payable_fen)
    ]
    assert again.reference != sent.batch.reference
    # The refund's money was reserved once: paying it did not take the pool again.
    assert ledger.balances(["pool:available"]) == {"pool:available": before["pool:available"]}


def test_the_same_file_twice_changes_nothing_the_second_time(sent, bureau, db_session):
    data = result_csv([row(sent.l1), row(sent.l2, "失败", "账户冻结"), row(sent.l3)])
    _import(sent, data, bureau)
    balances = ledger.balances()
    audit_rows = db_session.scalar(sa.select(sa.func.count()).select_from(AuditLog))
    with pytest.raises(Conflict, match="already imported|已"):
        _import(sent, data, bureau, name="again.csv")
    assert ledger.balances() == balances
    assert db_session.scalar(sa.select(sa.func.count()).select_from(BankResultImport)) == 1
    assert db_session.scalar(sa.select(sa.func.count()).select_from(AuditLog)) == audit_rows


def test_a_second_different_file_repeating_lines_pays_nothing_twice(sent, bureau, db_session):
    _import(sent, result_csv([row(sent.l1), row(sent.l2, "失败", "账户冻结")]), bureau)
    settled = ledger.balances(["settled"])["settled"]
    # The bank sends a fuller file later: l1 again (paid), l2 now "paid" (contradicts), l3.
    outcome = _import(
        sent, result_csv([row(sent.l1), row(sent.l2), row(sent.l3)]), bureau, "full.csv"
    )
    assert outcome.already == [sent.l1.reference]
    assert outcome.paid == [sent.l3.reference]
    # l2 had failed and was "paid" later: possibly paid twice (test_paid_after_failure.py)
    assert [e["kind"] for e in outcome.exceptions] == ["bank.paid_after_failure"]
    assert ledger.balances(["settled"])["settled"] == settled  # l1 was not paid again
    assert db_session.get(BankTransfer, sent.l2.id).status == "failed"
    assert books_balanced()


@pytest.mark.parametrize(
    "titles",
    [
        ["参考号", "账号", "金额", "状态", "原因"],
        ["line ref", "amount yuan", "status", "reason", "x"],
    ],
)
def test_wrong_columns_refuse_the_whole_file(sent, bureau, db_session, titles):
    with pytest.raises(InvalidInput) as refused:
        _import(sent, result_csv([row(sent.l1)], titles=titles), bureau)
    assert "file" in refused.value.details
    assert db_session.get(BankTransfer, sent.l1.id).status == "sent"
    assert db_session.scalar(sa.select(sa.func.count()).select_from(BankResultImport)) == 0


def test_a_trailer_that_does_not_match_refuses_the_file(sent, bureau, db_session):
    for trailer in (["T", "2", "1.00"], ["T", "1", "999.99"], None):
        rows = [row(sent.l1)]
        data = result_csv(rows, trailer=trailer)
        if trailer is None:  # no trailer at all
            data = data.rsplit(b"T,", 1)[0]
        with pytest.raises(InvalidInput):
            _import(sent, data, bureau)
    assert db_session.get(BankTransfer, sent.l1.id).status == "sent"


def test_the_file_of_another_batch_is_refused(sent, bureau, shop, db_session):
    more = approved_statement(
        sent.station, [spend(shop, 800)], preparer=bureau.officer, approver=bureau.approver
    )
    other = bank_files.create_batch(actor=bureau.officer)
    line = other.transfers[0]
    assert line.statement_id == more.id
    with pytest.raises(InvalidInput) as refused:
        _import(sent, result_csv([row(line)]), bureau)
    assert other.reference in str(refused.value.message)
    assert db_session.get(BankTransfer, line.id).status == "sent"


def test_bad_lines_go_to_the_queue_and_the_others_still_apply(sent, bureau, db_session):
    data = result_csv(
        [
            row(sent.l1, fen=sent.l1.amount_fen + 1),  # amount differs
            row(sent.l2, ref=f"{sent.batch.reference}-99"),  # unknown reference
            row(sent.l3),  # fine
            row(sent.l2),  # l2 twice...
            row(sent.l2, "失败", "重复"),  # ...disagreeing with itself
        ]
    )
    outcome = _import(sent, data, bureau)
    assert outcome.paid == [sent.l3.reference]
    kinds = sorted(e["kind"] for e in outcome.exceptions)
    assert kinds == ["bank.amount_mismatch", "bank.duplicate_line", "bank.unknown_reference"]
    for kind in kinds:
        (queued,) = _queued(db_session, kind)
        assert queued.source == "bank_import" and queued.evidence["batch"] == sent.batch.reference
    assert _queued(db_session, "bank.duplicate_line")[0].evidence["rows"] == [5, 6]
    statuses = {t: db_session.get(BankTransfer, t).status for t in (sent.l1.id, sent.l2.id)}
    assert statuses == {sent.l1.id: "sent", sent.l2.id: "sent"}
    assert db_session.get(FeeRefund, sent.refund.id).status == "paid"
    record = db_session.scalar(sa.select(BankResultImport))
    assert (record.paid_count, record.failed_count, record.exception_count) == (1, 0, 3)


def test_an_xlsx_result_with_english_titles_is_read(sent, bureau, db_session):
    book = Workbook()
    sheet = book.active
    sheet.append(["line ref", "payee account number", "amount yuan", "status", "reason"])
    sheet.append([sent.l1.reference, sent.l1.payee_account_number, sent.l1.amount_fen / 100,
                  "SUCCESS", None])  # fmt: skip
    sheet.append(["T", 1, sent.l1.amount_fen / 100])
    out = io.BytesIO()
    book.save(out)
    outcome = _import(sent, out.getvalue(), bureau, "result.xlsx")
    assert outcome.paid == [sent.l1.reference]


def test_an_unreadable_status_or_amount_names_the_row(sent, bureau, db_session):
    with pytest.raises(InvalidInput) as refused:
        _import(sent, result_csv([row(sent.l1, status="OK")]), bureau)
    assert "2" in str(refused.value.message)


def test_a_result_for_another_account_is_queued_not_paid(sent, bureau, db_session):
    outcome = _import(sent, result_csv([row(sent.l1, number="6222000000009999")]), bureau)
    assert outcome.paid == [] and [e["kind"] for e in outcome.exceptions] == [
        "bank.account_mismatch"
    ]
    (queued,) = _queued(db_session, "bank.account_mismatch")
    assert queued.evidence["sent_account_number"] == sent.l1.payee_account_number
    assert db_session.get(Statement, sent.first.id).status == "approved"
