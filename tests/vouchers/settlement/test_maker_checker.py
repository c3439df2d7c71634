"""Maker-checker over reruns (review defect 3): everyone who prepared lines of a statement is
its maker; and approval of what the approver saw (defect 4): the payable amount and the
fingerprint shown, refused (Conflict) if the statement changed since."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from eldercare.db import db
from eldercare.errors import Conflict, PermissionDenied
from eldercare.tokens import issue_token
from tests.vouchers.settlement.conftest import settle_day, spend
from vouchers.settlement.models import Statement
from vouchers.settlement.statements import approval
from vouchers.settlement.statements.run import run_settlement

EN = {"Accept-Language": "en"}


def _run(shop, actor, *prices):
    for price in prices:
        spend(shop, price)
    month = shop.voucher.month
    run_settlement(month, actor=actor, today=settle_day(month))
    statement = db.session.scalar(sa.select(Statement))
    db.session.refresh(statement)
    return statement


def test_an_approver_who_reran_the_statement_may_not_approve_nor_reject_it(app_ctx, shop, bureau):
    _run(shop, bureau.officer, 1500)
    statement = _run(shop, bureau.approver, 1200)  # the approver adds a line
    assert statement.line_count == 2
    assert statement.prepared_by_user_id == bureau.approver.id  # the latest maker
    with pytest.raises(PermissionDenied):
        approval.approve(statement, actor=bureau.approver)
    with pytest.raises(PermissionDenied):
        approval.reject(statement, actor=bureau.approver, reason="x")
    assert statement.status == "prepared"
    assert approval.preparers(statement) == {bureau.officer.id, bureau.approver.id}
    approval.approve(statement, actor=bureau.second)  # a person who prepared nothing
    assert statement.status == "approved"


def test_the_first_maker_stays_a_maker_after_someone_else_reruns(app_ctx, shop, bureau, factory):
    """An approver opened the statement, an officer added to it: the approver still may not
    approve it (prepared_by is the officer now; the audit row keeps the approver)."""
    _run(shop, bureau.approver, 1500)
    statement = _run(shop, bureau.officer, 1200)
    assert statement.prepared_by_user_id == bureau.officer.id
    with pytest.raises(PermissionDenied) as refused:
        approval.approve(statement, actor=bureau.approver)
    assert "制作" in str(refused.value)  # "you prepared this statement"


def test_a_statement_the_job_opened_and_an_approver_extended_is_theirs(app_ctx, shop, bureau):
    _run(shop, None, 1500)
    statement = _run(shop, bureau.approver, 1200)
    assert statement.prepared_by_user_id == bureau.approver.id
    with pytest.raises(PermissionDenied):
        approval.approve(statement, actor=bureau.approver)
    approval.approve(statement, actor=bureau.second)
    assert statement.status == "approved"


def test_a_statement_only_the_job_prepared_any_approver_may_check(app_ctx, shop, bureau):
    _run(shop, None, 1500)
    statement = _run(shop, None, 1200)
    assert statement.prepared_by_user_id is None and approval.preparers(statement) == set()
    approval.approve(statement, actor=bureau.approver)
    assert statement.status == "approved"


def test_approval_refuses_a_statement_that_changed_since_it_was_shown(app_ctx, shop, bureau):
    statement = _run(shop, bureau.officer, 1500)
    shown_payable, shown_print = statement.payable_fen, approval.fingerprint(statement)
    statement = _run(shop, bureau.officer, 1200)  # a rerun adds a line meanwhile
    with pytest.raises(Conflict) as changed:
        approval.approve(statement, actor=bureau.approver, expected_payable_fen=shown_payable)
    assert "重新审核" in str(changed.value)  # "review it again"
    with pytest.raises(Conflict):
        approval.approve(
            statement,
            actor=bureau.approver,
            expected_payable_fen=statement.payable_fen,
            expected_fingerprint=shown_print,
        )
    assert statement.status == "prepared" and statement.approved_by_user_id is None
    approval.approve(
        statement,
        actor=bureau.approver,
        expected_payable_fen=statement.payable_fen,
        expected_fingerprint=approval.fingerprint(statement),
    )
    assert statement.status == "approved"


def test_the_fingerprint_sees_lines_swapped_at_equal_totals(app_ctx, shop, bureau):
    spend_a = spend(shop, 1500)
    month = shop.voucher.month
    run_settlement(month, actor=bureau.officer, today=settle_day(month))
    statement = db.session.scalar(sa.select(Statement))
    shown = approval.fingerprint(statement)
    from vouchers.redemption import steps as redemption

    redemption.reverse(spend_a, actor=bureau.officer, reason="x")
    spend(shop, 1500)
    run_settlement(month, actor=bureau.officer, today=settle_day(month))
    db.session.refresh(statement)
    assert statement.line_count == 1  # the same count and totals, another line
    assert approval.fingerprint(statement) != shown


@pytest.fixture
def statement(shop, bureau):
    spend(shop, 1500)
    month = shop.voucher.month
    run_settlement(month, actor=bureau.officer, today=settle_day(month))
    db.session.commit()
    return db.session.scalar(sa.select(Statement))


def test_the_page_approves_what_it_showed_and_refuses_a_stale_form(
    shop, bureau, client, login, statement
):
    login(bureau.approver)
    url = f"/settlement/statements/{statement.id}"
    html = client.get(url, headers=EN).get_data(as_text=True)
    assert f'name="expected_payable_fen" value="{statement.payable_fen}"' in html
    shown = approval.fingerprint(statement)
    assert f'name="expected_fingerprint" value="{shown}"' in html
    spend(shop, 1200)
    run_settlement(shop.voucher.month, actor=bureau.officer, today=settle_day(shop.voucher.month))
    db.session.commit()
    stale = client.post(
        url + "/approve",
        data={"confirm": "yes", "expected_payable_fen": "900", "expected_fingerprint": shown},
        headers=EN,
    )
    assert stale.status_code == 409
    assert "changed since you opened it" in stale.get_data(as_text=True)
    db.session.refresh(statement)
    assert statement.status == "prepared"
    fresh = client.post(
        url + "/approve",
        data={
            "confirm": "yes",
            "expected_payable_fen": str(statement.payable_fen),
            "expected_fingerprint": approval.fingerprint(statement),
        },
    )
    assert fresh.status_code == 303
    db.session.refresh(statement)
    assert statement.status == "approved"


def test_the_api_needs_the_expected_amount(shop, bureau, client, statement):
    token = issue_token(bureau.approver, "finance", ["read", "bureau:write"])[1]
    headers = {"Authorization": f"Bearer {token}", **EN}
    url = f"/api/v1/settlement/statements/{statement.id}"
    read = client.get(url, headers=headers).json
    assert read["fingerprint"] == approval.fingerprint(statement)
    assert client.post(url + "/approve", headers=headers, json={}).status_code == 422
    wrong = client.post(
        url + "/approve", headers=headers, json={"expected_payable_fen": read["payable_fen"] + 1}
    )
    assert wrong.status_code == 409
    db.session.refresh(statement)
    assert statement.status == "prepared"
    right = client.post(
        url + "/approve",
        headers=headers,
        json={
            "expected_payable_fen": read["payable_fen"],
            "expected_fingerprint": read["fingerprint"],
        },
    )
    assert right.status_code == 200 and right.json["status"] == "approved"
