"""Streamed downloads read to the end with the request's session closed, as in production.

The WSGI server iterates a streamed body after the request has ended: its unit of work
committed (expiring what it loaded) and its session closed at the app context's end. A body
that reads a row the view loaded then raised DetachedInstanceError (a 500 on the statement's
XLSX, and a cut-off bank file). ``sessions_end_as_in_production`` makes the test session end
that way too (the suite's usual one only expires, which hid this).
"""

from __future__ import annotations

import csv
import io

import pytest
from openpyxl import load_workbook

from eldercare.db import db
from eldercare.tokens import issue_token
from tests.conftest import PASSWORD
from tests.vouchers.settlement.builders import approved_statement
from tests.vouchers.settlement.conftest import spend
from vouchers.settlement.bank import bank_files
from vouchers.settlement.documents import facts as statement_facts

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


@pytest.fixture
def statement(shop, bureau, db_session):
    """An approved statement of the station with two lines, committed as a request would."""
    made = approved_statement(
        shop.market.station,
        [spend(shop, 1500), spend(shop, 1000)],
        preparer=bureau.officer,
        approver=bureau.approver,
    )
    db_session.commit()
    return made


def _rows(data: bytes) -> list[tuple]:
    return list(load_workbook(io.BytesIO(data), read_only=True).active.iter_rows(values_only=True))


def _values(rows) -> set:
    return {value for row in rows for value in row if value is not None}


def _login(client, user) -> None:
    answer = client.post("/login", data={"username": user.username, "password": PASSWORD})
    assert answer.status_code == 302


def test_the_statement_xlsx_page_download_reads_to_the_end(statement, shop, production_client):
    client = production_client
    statement_id, number = statement.id, statement_facts.statement_number(statement)
    _login(client, shop.station_admin)
    answer = client.get(f"/settlement/statements/{statement_id}/xlsx")
    assert answer.status_code == 200 and answer.mimetype == XLSX
    rows = _rows(answer.get_data())
    assert {number, "南湖社区养老服务站"} <= _values(rows)
    # The two lines follow the header row, prices in yuan.
    header = next(i for i, row in enumerate(rows) if row and row[0] and "Redemption" in row[0])
    assert sorted(row[7] for row in rows[header + 1 :]) == [10, 15]


def test_the_statement_xlsx_and_pdf_of_the_api_read_to_the_end(statement, shop, production_client):
    client = production_client
    statement_id, number = statement.id, statement_facts.statement_number(statement)
    secret = issue_token(shop.station_admin, "accounts", ["read"])[1]
    db.session.commit()
    bearer = {"Authorization": f"Bearer {secret}"}

    xlsx = client.get(f"/api/v1/settlement/statements/{statement_id}/xlsx", headers=bearer)
    assert xlsx.status_code == 200
    assert number in _values(_rows(xlsx.get_data()))
    pdf = client.get(f"/api/v1/settlement/statements/{statement_id}/pdf", headers=bearer)
    assert pdf.status_code == 200 and pdf.get_data().startswith(b"%PDF")


def test_the_bank_batch_files_read_to_the_end(statement, bureau, db_session, production_client):
    client = production_client
    batch = bank_files.create_batch(actor=bureau.officer)
    db_session.commit()
    batch_id, reference, total = batch.id, batch.reference, batch.total_fen
    _login(client, bureau.officer)

    file = client.get(f"/settlement/bank/batches/{batch_id}/file.csv")
    assert file.status_code == 200
    rows = list(csv.reader(io.StringIO(file.get_data().decode("utf-8-sig"))))
    assert rows[0][:2] == ["H", reference] and rows[-1] == ["T", "1", f"{total / 100:.2f}"]
    xlsx = client.get(f"/settlement/bank/batches/{batch_id}/file.xlsx")
    assert xlsx.status_code == 200
    assert _rows(xlsx.get_data())[-1] == ("T", "1", f"{total / 100:.2f}")
