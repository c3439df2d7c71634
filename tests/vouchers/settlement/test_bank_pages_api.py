"""The bank and payee pages and their /api/v1 endpoints, end to end through the requests."""

from __future__ import annotations

import csv
import io

import pytest
import sqlalchemy as sa

from eldercare.tokens import issue_token
from tests.vouchers.settlement.builders import approved_statement, result_csv
from tests.vouchers.settlement.conftest import spend
from vouchers.settlement.models import BankBatch, PayeeChange, Statement

EN = {"Accept-Language": "en"}


@pytest.fixture
def approved(shop, bureau, db_session):
    return approved_statement(
        shop.market.station, [spend(shop, 1500)], preparer=bureau.officer, approver=bureau.approver
    )


def test_the_bank_page_makes_a_batch_with_the_confirmed_count_and_total(
    client, login, bureau, approved, db_session
):
    login(bureau.officer)
    page = client.get("/settlement/bank", headers=EN).get_data(as_text=True)
    assert f"Create the batch: 1 transfers, ¥{approved.payable_fen / 100:,.2f}" in page
    # The page was shown for 2; one is waiting: nothing is made.
    stale = client.post(
        "/settlement/bank/batches",
        data={"expected_count": "2", "expected_total_fen": str(approved.payable_fen)},
        headers=EN,
    )
    assert stale.status_code == 409 and "changed since the page was shown" in stale.get_data(
        as_text=True
    )
    assert db_session.scalar(sa.select(sa.func.count()).select_from(BankBatch)) == 0
    made = client.post(
        "/settlement/bank/batches",
        data={"expected_count": "1", "expected_total_fen": str(approved.payable_fen)},
    )
    assert made.status_code == 302
    batch = db_session.scalar(sa.select(BankBatch))
    page = client.get(made.headers["Location"], headers=EN).get_data(as_text=True)
    assert batch.reference in page and "Download CSV" in page
    download = client.get(f"/settlement/bank/batches/{batch.id}/file.csv")
    assert download.status_code == 200
    assert download.headers["Content-Disposition"].endswith(f'{batch.reference}.csv"')
    rows = list(csv.reader(io.StringIO(download.get_data().decode("utf-8-sig"))))
    assert rows[0][1] == batch.reference and rows[-1] == ["T", "1", f"{batch.total_fen / 100:.2f}"]
    xlsx = client.get(f"/settlement/bank/batches/{batch.id}/file.xlsx")
    assert xlsx.status_code == 200 and xlsx.get_data()[:2] == b"PK"


def test_the_result_upload_shows_paid_failed_and_queued(
    client, login, bureau, approved, shop, db_session
):
    from vouchers.settlement.bank import bank_files

    other = approved_statement(
        shop.market.station, [spend(shop, 1000)], preparer=bureau.officer, approver=bureau.approver
    )
    batch = bank_files.create_batch(actor=bureau.officer)
    one, two = batch.transfers
    data = result_csv(
        [
            (one.reference, one.payee_account_number, one.amount_fen, "成功", ""),
            (two.reference, two.payee_account_number, two.amount_fen, "失败", "账户已销户"),
            (f"{batch.reference}-9", "6222", 100, "成功", ""),
        ]
    )
    login(bureau.officer)
    response = client.post(
        f"/settlement/bank/batches/{batch.id}/results",
        data={"file": (io.BytesIO(data), "result.csv")},
        content_type="multipart/form-data",
        headers=EN,
    )
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Paid: 1. Failed: 1." in page and "账户已销户" in page
    assert "a reference that is not a line of the batch" in page
    assert db_session.get(Statement, other.id).status in ("approved", "paid")
    again = client.post(
        f"/settlement/bank/batches/{batch.id}/results",
        data={"file": (io.BytesIO(data), "result-again.csv")},
        content_type="multipart/form-data",
        headers=EN,
    )
    assert again.status_code == 409 and "already imported" in again.get_data(as_text=True)


def test_district_staff_and_providers_cannot_see_the_bank_pages(
    client, login, shop, factory, approved
):
    district = factory.user("heping.bank", roles=["bureau_officer"], district=shop.heping)
    login(district)
    assert client.get("/settlement/bank").status_code == 403
    client.post("/logout")
    login(shop.station_admin)
    assert client.get("/settlement/bank").status_code == 403


def test_the_payment_account_pages_request_and_approve(client, login, shop, bureau, db_session):
    login(shop.station_admin)
    page = client.get("/settlement/payment-account", headers=EN).get_data(as_text=True)
    assert "************2222" in page and "6222000011112222" not in page
    bad = client.post(
        "/settlement/payment-account",
        data={"account_name": "南湖", "bank_name": "中国银行", "account_number": "12"},
        headers=EN,
    )
    assert bad.status_code == 422 and "8 to 30 digits" in bad.get_data(as_text=True)
    sent = client.post(
        "/settlement/payment-account",
        data={
            "account_name": "南湖",
            "bank_name": "中国银行",
            "account_number": "6013820000005555",
        },
    )
    assert sent.status_code == 302
    page = client.get("/settlement/payment-account", headers=EN).get_data(as_text=True)
    assert "Change waiting for the bureau" in page and "************5555" in page
    client.post("/logout")
    login(bureau.approver)
    listing = client.get("/settlement/payee-changes", headers=EN).get_data(as_text=True)
    assert "6013820000005555" in listing
    change = db_session.scalar(sa.select(PayeeChange))
    refused = client.post(f"/settlement/payee-changes/{change.id}/reject", data={"reason": ""})
    assert refused.status_code == 422
    approve = f"/settlement/payee-changes/{change.id}/approve"
    assert client.post(approve, data={"confirm": "1"}).status_code == 302
    db_session.refresh(shop.market.station)
    assert shop.market.station.bank_account_number == "6013820000005555"


# --------------------------------------------------------------------------- the API


@pytest.fixture
def token(db_session):
    def _make(user, *scopes):
        _token, secret = issue_token(user, "Finance system", list(scopes))
        db_session.commit()
        return {"Authorization": f"Bearer {secret}", **EN}

    return _make


def test_the_api_makes_a_batch_serves_its_file_and_imports_the_result(
    client, bureau, approved, token, db_session
):
    writer = token(bureau.officer, "read", "bureau:write")
    reader = token(bureau.approver, "read")
    assert client.post("/api/v1/settlement/batches", json={}, headers=reader).status_code == 403
    made = client.post(
        "/api/v1/settlement/batches",
        json={"expected_count": 1, "expected_total_fen": approved.payable_fen},
        headers=writer,
    )
    assert made.status_code == 201, made.get_json()
    body = made.get_json()
    assert body["line_count"] == 1 and body["transfers"][0]["statement_id"] == approved.id
    listed = client.get("/api/v1/settlement/batches", headers=reader).get_json()
    assert [b["reference"] for b in listed] == [body["reference"]]
    detail = client.get(f"/api/v1/settlement/batches/{body['id']}", headers=reader).get_json()
    assert detail["transfers"][0]["status"] == "sent"
    file = client.get(
        f"/api/v1/settlement/batches/{body['id']}/file", query_string={"format": "csv"},
        headers=reader,
    )  # fmt: skip
    assert file.get_data().decode("utf-8-sig").startswith(f"H,{body['reference']},")
    line = body["transfers"][0]
    data = result_csv(
        [(line["reference"], line["payee_account_number"], line["amount_fen"], "SUCCESS", "")]
    )
    imported = client.post(
        f"/api/v1/settlement/batches/{body['id']}/results",
        data={"file": (io.BytesIO(data), "r.csv")},
        content_type="multipart/form-data",
        headers=writer,
    )
    assert imported.status_code == 200, imported.get_json()
    assert imported.get_json()["paid"] == [line["reference"]]
    assert db_session.get(Statement, approved.id).status == "paid"
    nothing = client.post("/api/v1/settlement/batches", json={}, headers=writer)
    assert nothing.status_code == 409


def test_the_api_lists_and_decides_payee_changes(client, shop, bureau, token, db_session):
    from vouchers.settlement.bank import payees

    change = payees.request_change(
        shop.market.station,
        account_name="南湖",
        bank_name="中国银行",
        account_number="6013820000006666",
        actor=shop.station_admin,
    )
    db_session.commit()
    writer = token(bureau.approver, "read", "bureau:write")
    listed = client.get("/api/v1/settlement/payee-changes", headers=writer).get_json()
    assert [c["id"] for c in listed] == [change.id]
    bad = client.post(
        f"/api/v1/settlement/payee-changes/{change.id}/reject", json={"reason": ""},
        headers=writer,
    )  # fmt: skip
    assert bad.status_code == 422
    done = client.post(
        f"/api/v1/settlement/payee-changes/{change.id}/reject",
        json={"reason": "户名与营业执照不符"},
        headers=writer,
    )
    assert done.status_code == 200 and done.get_json()["status"] == "rejected"
    db_session.refresh(shop.market.station)
    assert shop.market.station.bank_account_number == "6222000011112222"


def test_a_refused_result_file_is_explained_in_chinese(client, login, bureau, approved, db_session):
    from vouchers.settlement.bank import bank_files

    batch = bank_files.create_batch(actor=bureau.officer)
    login(bureau.officer)
    page = client.get(f"/settlement/bank/batches/{batch.id}").get_data(as_text=True)
    assert "导入银行结果文件" in page
    refused = client.post(
        f"/settlement/bank/batches/{batch.id}/results",
        data={"file": (io.BytesIO(b"a,b,c\r\nT,0,0.00\r\n"), "wrong.csv")},
        content_type="multipart/form-data",
    )
    assert refused.status_code == 422
    assert "这不是银行结果文件" in refused.get_data(as_text=True)
    assert db_session.get(BankBatch, batch.id).transfers[0].status == "sent"
