"""Bad input is a clear 4xx and changes nothing, never a 500: result files the readers
choked on, NUL characters (PostgreSQL cannot store them in text), a page number past any
statement, months outside the programme's years."""

# ruff: noqa: F811 (the fixture is imported)

from __future__ import annotations

import io
import zipfile

import pytest
import sqlalchemy as sa
from openpyxl import Workbook

from eldercare.db import db
from eldercare.errors import InvalidInput
from eldercare.tokens import issue_token
from tests.vouchers.settlement.builders import result_csv
from tests.vouchers.settlement.conftest import settle_day, spend
from tests.vouchers.settlement.test_bank_results import row, sent  # noqa: F401 (fixture)
from vouchers.settlement.bank import bank_results
from vouchers.settlement.models import (
    BankResultImport,
    BankTransfer,
    ReconciliationRun,
    SettlementMonth,
    Statement,
)
from vouchers.settlement.statements.run import run_settlement

EN = {"Accept-Language": "en"}
HEAD = "业务参考号,收款账号,金额(元),状态,失败原因\r\n"
UNREADABLE = "The file could not be read"
TRAILER = "the trailer must be T,&lt;count&gt;,&lt;total yuan&gt;"
NUL = "NUL character"


def _broken_xlsx() -> bytes:
    workbook = Workbook()
    workbook.active.append(["业务参考号"])
    whole = io.BytesIO()
    workbook.save(whole)
    source = zipfile.ZipFile(io.BytesIO(whole.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "xl/worksheets/sheet1.xml":
                data = data[: len(data) // 2]  # the sheet's XML cut in the middle
            target.writestr(item, data)
    return out.getvalue()


def _file(case: str, sent) -> bytes:
    line = row(sent.l1)
    good = f"{line[0]},{line[1]},{line[2] / 100:.2f},成功,\r\n"
    return {
        "superscript_count": lambda: (HEAD + good + f"T,²,{line[2] / 100:.2f}\r\n").encode(),
        "huge_count": lambda: (HEAD + good + "T," + "9" * 5000 + ",0.00\r\n").encode(),
        "huge_field": lambda: (HEAD + "x" * 200_000 + ",1,1.00,成功,\r\nT,1,1.00\r\n").encode(),
        "nul_reference": lambda: result_csv([row(sent.l1, ref=sent.l1.reference + "\x00")]),
        "broken_xlsx": _broken_xlsx,
    }[case]()


FILE_CASES = {
    "superscript_count": TRAILER,
    "huge_count": TRAILER,
    "huge_field": UNREADABLE,
    "nul_reference": NUL,
    "broken_xlsx": UNREADABLE,
}


def _nothing_imported(sent) -> None:
    assert db.session.scalar(sa.select(sa.func.count()).select_from(BankResultImport)) == 0
    db.session.expire_all()
    assert {t.status for t in db.session.scalars(sa.select(BankTransfer))} == {"sent"}


def _token(user) -> dict:
    _, secret = issue_token(user, "Finance system", ["read", "bureau:write"])
    db.session.commit()
    return {"Authorization": f"Bearer {secret}"} | EN


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_a_bad_result_file_is_refused_on_the_page(case, sent, client, login, bureau):
    db.session.commit()
    login(bureau.officer)
    response = client.post(
        f"/settlement/bank/batches/{sent.batch.id}/results",
        data={"file": (io.BytesIO(_file(case, sent)), "result.csv")},
        content_type="multipart/form-data",
        headers=EN,
    )
    assert response.status_code == 422, response.status_code
    assert FILE_CASES[case] in response.get_data(as_text=True)
    _nothing_imported(sent)


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_a_bad_result_file_is_refused_by_the_api(case, sent, client, bureau):
    headers = _token(bureau.officer)
    response = client.post(
        f"/api/v1/settlement/batches/{sent.batch.id}/results",
        data={"file": (io.BytesIO(_file(case, sent)), "result.csv")},
        content_type="multipart/form-data",
        headers=headers,
    )
    assert response.status_code == 422, response.get_json()
    details = str(response.get_json()["error"]["details"]).replace("<", "&lt;")
    assert FILE_CASES[case].replace("&gt;", ">") in details.replace("&gt;", ">")
    _nothing_imported(sent)


def test_a_result_file_name_with_nul_is_refused(sent, client, login, bureau):
    with pytest.raises(InvalidInput) as refused:
        bank_results.import_result(
            sent.batch, result_csv([row(sent.l1)]), "r\x00.csv", actor=bureau.officer
        )
    assert "NUL" in str(refused.value.details["file"])  # either language
    db.session.commit()
    login(bureau.officer)
    response = client.post(
        f"/settlement/bank/batches/{sent.batch.id}/results",
        data={"file": (io.BytesIO(result_csv([row(sent.l1)])), "r\x00.csv")},
        content_type="multipart/form-data",
        headers=EN,
    )
    assert response.status_code == 422 and "NUL characters" in response.get_data(as_text=True)
    _nothing_imported(sent)


@pytest.fixture
def prepared(shop, bureau):
    spend(shop)
    month = shop.voucher.month
    run_settlement(month, actor=bureau.officer, today=settle_day(month))
    statement = db.session.scalar(sa.select(Statement))
    db.session.commit()
    return statement


def test_nul_in_a_reject_reason_is_refused(prepared, client, login, bureau):
    login(bureau.approver)
    response = client.post(
        f"/settlement/statements/{prepared.id}/reject", data={"reason": "bad\x00 line"},
        headers=EN,
    )  # fmt: skip
    assert response.status_code == 422
    assert "NUL characters" in response.get_data(as_text=True)
    db.session.expire_all()
    assert db.session.get(Statement, prepared.id).status == "prepared"


def test_nul_in_another_form_and_in_json_is_refused(client, bureau):
    """The refusal is the application's, not settlement's: the sign-in form, and a JSON
    body of the API."""
    headers = _token(bureau.officer)
    response = client.post("/login", data={"username": "a\x00b", "password": "x"}, headers=EN)
    assert response.status_code == 422 and "NUL characters" in response.get_data(as_text=True)
    response = client.post(
        "/api/v1/settlement/runs", json={"month": "2026-1\x001"}, headers=headers
    )
    assert response.status_code == 422
    assert "NUL characters" in response.get_json()["error"]["details"]["month"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(SettlementMonth)) == 0


HUGE = "999999999999999999"


def test_a_page_past_the_end_shows_the_last_page(prepared, client, login, bureau):
    login(bureau.approver)
    response = client.get(f"/settlement/statements/{prepared.id}?page={HUGE}", headers=EN)
    assert response.status_code == 200
    headers = _token(bureau.officer)
    response = client.get(f"/api/v1/settlement/statements/{prepared.id}?page={HUGE}",
                          headers=headers)  # fmt: skip
    body = response.get_json()
    assert response.status_code == 200, body
    assert (body["page"], body["pages"], len(body["lines"])) == (1, 1, 1)


MONTH = "Give the month as YYYY-MM"
BAD_MONTHS = ["9999-12", "0000-05", "1999-12", "3000-01"]


@pytest.mark.parametrize("month", BAD_MONTHS)
def test_a_month_outside_the_programme_is_refused_on_the_pages(month, client, login, bureau):
    login(bureau.officer)
    assert client.get(f"/settlement/months/{month}", headers=EN).status_code == 404
    # The settle button's form answers as its other refusals do: back to the months, told.
    response = client.post(
        "/settlement/runs", data={"month": month, "confirm": "yes"}, headers=EN,
        follow_redirects=True,
    )  # fmt: skip
    assert response.request.path == "/settlement/" and MONTH in response.get_data(as_text=True)
    for response in (
        client.get(f"/settlement/reconcile?month={month}", headers=EN),
        client.post("/settlement/reconcile", data={"month": month}, headers=EN),
        client.get(f"/settlement/exceptions?month={month}", headers=EN),
    ):
        assert response.status_code == 422, (response.request.path, response.status_code)
        assert MONTH in response.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(SettlementMonth)) == 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ReconciliationRun)) == 0


@pytest.mark.parametrize("month", BAD_MONTHS)
def test_a_month_outside_the_programme_is_refused_by_the_api(month, client, bureau):
    headers = _token(bureau.officer)
    for response in (
        client.post("/api/v1/settlement/runs", json={"month": month}, headers=headers),
        client.post("/api/v1/settlement/reconciliations", json={"month": month}, headers=headers),
        client.get(f"/api/v1/settlement/statements?month={month}", headers=headers),
        client.get(f"/api/v1/settlement/reconciliations?month={month}", headers=headers),
        client.get(f"/api/v1/settlement/exceptions?month={month}", headers=headers),
    ):
        body = response.get_json()
        assert response.status_code == 422, (response.request.path, body)
        # The document's pattern refuses it: the field under its location, "json" or "query".
        (where,) = body["error"]["details"].values()
        assert where["month"][0].startswith(MONTH)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(SettlementMonth)) == 0
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ReconciliationRun)) == 0
