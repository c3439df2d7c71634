"""The bank transfer batch and its files: what goes in, the header and trailer, the payee
from the snapshot, fee refunds reserved in the books, nothing in two live transfers."""

from __future__ import annotations

import csv
import io
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from openpyxl import load_workbook

from assessment.models import FeeRefund
from eldercare.errors import Conflict, PermissionDenied
from eldercare.timeutil import local_today
from tests.vouchers.settlement.builders import approved_statement, books_balanced
from tests.vouchers.settlement.conftest import spend
from vouchers.pool import funding as pool
from vouchers.pool import ledger
from vouchers.settlement.bank import bank_files


@pytest.fixture
def owed(shop, bureau, db_session):
    """Two approved statements of the station (two months' worth stands in as seq 1 and 2)
    and the elder's fee refund with an account."""
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
    return SimpleNamespace(first=first, second=second, refund=refund, station=station)


def _rows_of_csv(data: bytes) -> list[list[str]]:
    assert data.startswith("\ufeff".encode())  # Excel reads the Chinese right
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))


def test_a_batch_holds_every_approved_unpaid_statement_and_refund(owed, bureau, db_session):
    pool_before = ledger.balances(["pool:available"])["pool:available"]
    batch = bank_files.create_batch(actor=bureau.officer)
    expected_total = owed.first.payable_fen + owed.second.payable_fen + owed.refund.amount_fen
    assert batch.reference == f"EC{local_today():%Y%m%d}001"
    assert (batch.line_count, batch.total_fen) == (3, expected_total)
    lines = {(t.kind, t.statement_id or t.fee_refund_id): t for t in batch.transfers}
    assert set(lines) == {
        ("statement", owed.first.id),
        ("statement", owed.second.id),
        ("fee_refund", owed.refund.id),
    }
    assert [t.reference for t in batch.transfers] == [f"{batch.reference}-{n}" for n in (1, 2, 3)]
    line = lines[("statement", owed.first.id)]
    assert (line.payee_account_number, line.amount_fen) == (
        owed.first.payee_account_number,
        owed.first.payable_fen,
    )
    assert lines[("fee_refund", owed.refund.id)].payee_account_name == "王秀英"
    # The refund is reserved in the books; the statements were already payable.
    balances = ledger.balances(["pool:available", "fee_refunds:payable"])
    assert balances["pool:available"] == pool_before - owed.refund.amount_fen
    assert balances["fee_refunds:payable"] == owed.refund.amount_fen
    assert books_balanced()
    with pytest.raises(Conflict):  # nothing left waiting
        bank_files.create_batch(actor=bureau.officer)


def test_the_payee_is_the_statement_snapshot_not_the_provider_now(owed, bureau, db_session):
    owed.station.bank_account_number = "6222999988887777"  # say someone edited the row
    db_session.flush()
    batch = bank_files.create_batch(actor=bureau.officer)
    numbers = {t.payee_account_number for t in batch.transfers if t.kind == "statement"}
    assert numbers == {owed.first.payee_account_number} != {"6222999988887777"}


def test_the_csv_has_header_titles_lines_and_trailer(owed, bureau, app, db_session):
    batch = bank_files.create_batch(actor=bureau.officer)
    rows = _rows_of_csv(b"".join(bank_files.csv_chunks(batch)))
    total = f"{batch.total_fen / 100:.2f}"
    header = rows[0]
    assert header[:6] == [
        "H",
        batch.reference,
        f"{local_today():%Y-%m-%d}",
        app.config["SETTLEMENT_PAYER_ACCOUNT_NAME"],
        "3",
        total,
    ]
    assert rows[1] == list(bank_files.COLUMN_TITLES)
    details = rows[2:-1]
    assert [d[0] for d in details] == ["D"] * 3
    assert [d[2] for d in details] == [f"{batch.reference}-{n}" for n in (1, 2, 3)]
    first = details[0]
    assert first[3:7] == [
        owed.first.payee_account_number,
        owed.first.payee_account_name,
        owed.first.payee_bank_name,
        f"{owed.first.payable_fen / 100:.2f}",
    ]
    assert first[7] == f"养老服务补贴结算 {owed.first.month:%Y-%m}"
    assert details[2][7] == "评估费退费"
    assert rows[-1] == ["T", "3", total]
    assert sum(int(d[6].replace(".", "")) for d in details) == batch.total_fen


def test_the_xlsx_has_the_same_rows_as_text(owed, bureau, db_session):
    batch = bank_files.create_batch(actor=bureau.officer)
    csv_rows = _rows_of_csv(b"".join(bank_files.csv_chunks(batch)))
    book = load_workbook(io.BytesIO(b"".join(bank_files.xlsx_chunks(batch))), read_only=True)
    rows = [[c for c in row if c is not None] for row in book.active.iter_rows(values_only=True)]
    assert rows == csv_rows
    assert isinstance(rows[2][3], str)  # account numbers stay text, every digit kept


def test_a_refund_the_pool_cannot_cover_waits_for_a_later_batch(owed, bureau, shop, db_session):
    available = ledger.balances(["pool:available"])["pool:available"]
    pool.allocate(shop.heping, available - 100, memo="test: pool nearly empty", actor=shop.approver)
    batch = bank_files.create_batch(actor=bureau.officer)
    assert {t.kind for t in batch.transfers} == {"statement"}
    assert ledger.balances(["fee_refunds:payable"])["fee_refunds:payable"] == 0
    pool.allocate(shop.heping, -100_000, memo="test: money back", actor=shop.approver)
    later = bank_files.create_batch(actor=bureau.officer)
    assert [t.fee_refund_id for t in later.transfers] == [owed.refund.id]
    assert later.reference.endswith("002")
    assert books_balanced()


def test_the_confirmed_count_and_total_must_still_be_what_is_waiting(owed, bureau, db_session):
    waiting = bank_files.waiting_totals()
    assert waiting["count"] == 3
    with pytest.raises(Conflict):
        bank_files.create_batch(actor=bureau.officer, expect=(2, waiting["total_fen"]))
    batch = bank_files.create_batch(
        actor=bureau.officer, expect=(waiting["count"], waiting["total_fen"])
    )
    assert batch.total_fen == waiting["total_fen"]


def test_only_city_wide_bureau_staff_make_batches(owed, shop, factory, db_session):
    district_officer = factory.user(
        "heping.officer", roles=["bureau_officer"], district=shop.heping
    )
    for actor in (district_officer, shop.station_admin):
        with pytest.raises(PermissionDenied):
            bank_files.create_batch(actor=actor)


def test_the_database_refuses_a_second_live_transfer(owed, bureau, db_session):
    batch = bank_files.create_batch(actor=bureau.officer)
    line = next(t for t in batch.transfers if t.statement_id == owed.first.id)
    with pytest.raises(sa.exc.IntegrityError), db_session.begin_nested():
        db_session.execute(
            sa.text(
                "INSERT INTO bank_transfers (batch_id, line_no, reference, kind, statement_id, "
                "payee_account_name, payee_bank_name, payee_account_number, amount_fen, status) "
                "VALUES (:b, 99, 'X-99', 'statement', :s, 'x', 'y', '62220000', :a, 'sent')"
            ),
            {"b": batch.id, "s": owed.first.id, "a": line.amount_fen},
        )
