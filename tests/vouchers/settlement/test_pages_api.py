"""The bureau's settlement pages and API: who may see, prepare, approve and reject."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from eldercare.db import db
from eldercare.residents import mask_name
from eldercare.tokens import issue_token
from tests.vouchers.settlement.conftest import settle_day, spend
from vouchers.settlement.models import Statement
from vouchers.settlement.statements.run import run_settlement

EN = {"Accept-Language": "en"}


@pytest.fixture
def statement(shop, bureau):
    spend(shop, 1500)
    spend(shop, 1200)
    month = shop.voucher.month
    run_settlement(month, actor=bureau.officer, today=settle_day(month))
    db.session.commit()  # a refused request rolls back only its own changes
    return db.session.scalar(sa.select(Statement))


def test_anonymous_providers_and_district_staff_are_kept_out(shop, bureau, client, login, factory):
    assert client.get("/settlement/").status_code == 302  # to the sign-in page
    login(shop.station_admin)
    assert client.get("/settlement/").status_code == 403
    client.get("/logout")
    district_officer = factory.user("d.officer", roles=["bureau_officer"], district=shop.heping)
    login(district_officer)
    assert client.get("/settlement/").status_code == 403


def test_the_months_page_shows_the_cut_off_and_refuses_settling_too_early(
    shop, bureau, client, login
):
    spend(shop)
    month = f"{shop.voucher.month:%Y-%m}"
    login(bureau.officer)
    html = client.get("/settlement/", headers=EN).get_data(as_text=True)
    assert f'data-month="{month}"' in html
    assert settle_day(shop.voucher.month).isoformat() in html
    assert f'id="settle-{month}"' not in html  # not settleable yet: no button
    response = client.post(
        "/settlement/runs",
        data={"month": month, "confirm": "yes"},
        headers=EN,
        follow_redirects=True,
    )
    assert "cannot be settled before" in response.get_data(as_text=True)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Statement)) == 0


def test_an_officer_sees_a_statement_but_may_not_approve_it(shop, bureau, client, login, statement):
    login(bureau.officer)
    html = client.get(f"/settlement/statements/{statement.id}", headers=EN).get_data(as_text=True)
    assert 'id="statement-lines"' in html and html.count("data-redemption=") == 2
    assert mask_name(shop.elder.name) in html and shop.elder.name not in html
    assert 'id="approve-form"' not in html
    response = client.post(
        f"/settlement/statements/{statement.id}/approve", data={"confirm": "yes"}
    )
    assert response.status_code == 403
    db.session.refresh(statement)
    assert statement.status == "prepared"


def test_an_approver_confirms_the_amount_then_approves(shop, bureau, client, login, statement):
    login(bureau.approver)
    url = f"/settlement/statements/{statement.id}"
    html = client.get(url, headers=EN).get_data(as_text=True)
    assert 'id="approve-form"' in html
    amount = f"{statement.payable_fen // 100:,}.{statement.payable_fen % 100:02d}"
    assert f"approve paying ¥{amount}" in html
    unconfirmed = client.post(url + "/approve", data={}, headers=EN)
    assert unconfirmed.status_code == 422
    assert "Tick the box" in unconfirmed.get_data(as_text=True)
    db.session.refresh(statement)
    assert statement.status == "prepared"
    shown = {"expected_payable_fen": str(statement.payable_fen)}
    assert client.post(url + "/approve", data={"confirm": "yes", **shown}).status_code == 303
    db.session.refresh(statement)
    assert statement.status == "approved" and statement.approved_by_user_id == bureau.approver.id


def test_a_rejection_on_the_page_needs_a_reason(shop, bureau, client, login, statement):
    login(bureau.approver)
    url = f"/settlement/statements/{statement.id}/reject"
    assert client.post(url, data={"reason": " "}, headers=EN).status_code == 422
    assert client.post(url, data={"reason": "金额有误", "confirm": "1"}).status_code == 303
    db.session.refresh(statement)
    assert statement.status == "rejected" and statement.rejection_reason == "金额有误"


def _api(client, method, url, secret=None, **kwargs):
    headers = dict(EN)
    if secret:
        headers["Authorization"] = f"Bearer {secret}"
    return client.open("/api/v1/settlement" + url, method=method, headers=headers, **kwargs)


def test_the_api_for_the_bureau_only(shop, bureau, client, statement):
    month = f"{shop.voucher.month:%Y-%m}"
    officer = issue_token(bureau.officer, "finance", ["read", "bureau:write"])[1]
    approver = issue_token(bureau.approver, "finance", ["read", "bureau:write"])[1]
    provider = issue_token(shop.station_admin, "shop", ["read"])[1]
    db.session.commit()

    assert _api(client, "GET", f"/statements?month={month}").status_code == 401
    assert _api(client, "GET", f"/statements?month={month}", provider).status_code == 403
    listed = _api(client, "GET", f"/statements?month={month}", officer)
    assert listed.status_code == 200 and [s["id"] for s in listed.json] == [statement.id]
    detail = _api(client, "GET", f"/statements/{statement.id}", officer).json
    assert detail["line_count"] == 2 and len(detail["lines"]) == 2 and detail["pages"] == 1

    early = _api(client, "POST", "/runs", officer, json={"month": month})
    assert early.status_code == 422 and "cannot be settled before" in early.get_data(as_text=True)
    assert _api(client, "POST", "/runs", officer, json={"month": "2026-13"}).status_code == 422

    shown = {"expected_payable_fen": detail["payable_fen"]}
    url = f"/statements/{statement.id}/approve"
    assert _api(client, "POST", url, officer, json=shown).status_code == 403
    approved = _api(client, "POST", url, approver, json=shown)
    assert approved.status_code == 200 and approved.json["status"] == "approved"
    again = _api(
        client, "POST", f"/statements/{statement.id}/reject", approver, json={"reason": "x"}
    )
    assert again.status_code == 409
