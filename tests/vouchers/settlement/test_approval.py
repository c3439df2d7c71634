"""Maker-checker approval, the threshold, freezing, rejection and the books."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from eldercare.db import db
from eldercare.errors import Conflict, InvalidInput, PermissionDenied
from eldercare.timeutil import local_today
from tests.vouchers.settlement.conftest import settle_day, spend
from vouchers.pool import ledger
from vouchers.settlement import books
from vouchers.settlement.models import SettlementRules, Statement, StatementLine
from vouchers.settlement.statements import approval, hashing
from vouchers.settlement.statements.run import run_settlement


def prepared(shop, bureau, *prices, actor=None):
    for price in prices or (1500,):
        spend(shop, price)
    month = shop.voucher.month
    run_settlement(month, actor=actor or bureau.officer, today=settle_day(month))
    return db.session.scalars(
        sa.select(Statement).where(Statement.status == "prepared").order_by(Statement.id.desc())
    ).first()


def low_threshold(fen=100):
    db.session.add(
        SettlementRules(
            effective_from=local_today() - timedelta(days=1), second_approval_above_fen=fen
        )
    )
    db.session.flush()


def test_the_preparer_may_not_approve_nor_reject(app_ctx, shop, bureau):
    statement = prepared(shop, bureau, actor=bureau.approver)  # an approver prepared it
    with pytest.raises(PermissionDenied) as refused:
        approval.approve(statement, actor=bureau.approver)
    assert "由您制作" in str(refused.value)  # "you prepared this statement"
    with pytest.raises(PermissionDenied):
        approval.reject(statement, actor=bureau.approver, reason="no")
    assert statement.status == "prepared" and statement.approved_by_user_id is None


def test_the_database_refuses_a_checker_who_is_the_maker(app_ctx, shop, bureau):
    statement = prepared(shop, bureau)
    with pytest.raises(sa.exc.IntegrityError), db.session.begin_nested():
        db.session.execute(
            sa.update(Statement)
            .where(Statement.id == statement.id)
            .values(approved_by_user_id=Statement.prepared_by_user_id)
        )


def test_an_officer_or_a_district_approver_may_not_approve(app_ctx, shop, bureau, factory):
    statement = prepared(shop, bureau, actor=bureau.second)
    with pytest.raises(PermissionDenied):
        approval.approve(statement, actor=bureau.officer)
    district_approver = factory.user(
        "district.approver", roles=["bureau_approver"], district=shop.heping
    )
    with pytest.raises(PermissionDenied):
        approval.approve(statement, actor=district_approver)


def test_below_the_threshold_one_approval_freezes_and_posts(app_ctx, shop, bureau):
    statement = prepared(shop, bureau, 1500, 1200)
    unsettled = ledger.balances(["redeemed:unsettled"])["redeemed:unsettled"]
    approval.approve(statement, actor=bureau.approver)
    assert statement.status == "approved" and statement.approved_by_user_id == bureau.approver.id
    assert statement.lines_hash == hashing.statement_hash(statement)
    payable = books.payable_code(statement.provider_id)
    after = ledger.balances(["redeemed:unsettled", payable])
    assert after[payable] == statement.subsidy_fen
    assert after["redeemed:unsettled"] == unsettled - statement.subsidy_fen
    assert ledger.verify_ledger().ok


def test_above_the_threshold_a_second_different_approver_is_needed(app_ctx, shop, bureau):
    low_threshold()
    statement = prepared(shop, bureau)
    approval.approve(statement, actor=bureau.approver)
    assert statement.status == "awaiting_second" and statement.lines_hash is None
    with pytest.raises(PermissionDenied) as twice:
        approval.approve(statement, actor=bureau.approver)
    assert "第二次" in str(twice.value)  # "a second, different approver"
    with pytest.raises(PermissionDenied):
        approval.approve(statement, actor=bureau.officer)  # not an approver (and the maker)
    approval.approve(statement, actor=bureau.second)
    assert statement.status == "approved"
    assert statement.second_approved_by_user_id == bureau.second.id
    assert ledger.verify_ledger().ok


def test_an_approved_or_rejected_statement_cannot_be_approved_again(app_ctx, shop, bureau):
    statement = prepared(shop, bureau)
    approval.approve(statement, actor=bureau.approver)
    with pytest.raises(Conflict):
        approval.approve(statement, actor=bureau.second)
    with pytest.raises(Conflict):
        approval.reject(statement, actor=bureau.second, reason="late")
    other = prepared(shop, bureau)
    approval.reject(other, actor=bureau.approver, reason="wrong provider")
    with pytest.raises(Conflict):
        approval.approve(other, actor=bureau.second)


def test_a_rejection_needs_a_reason_and_its_lines_are_settled_again(app_ctx, shop, bureau):
    statement = prepared(shop, bureau)
    [redemption_id] = db.session.scalars(sa.select(StatementLine.redemption_id))
    with pytest.raises(InvalidInput):
        approval.reject(statement, actor=bureau.approver, reason="  ")
    approval.reject(statement, actor=bureau.approver, reason="双重计费 / double billed")
    assert statement.status == "rejected" and statement.rejection_reason.startswith("双重")
    assert db.session.scalar(sa.select(sa.func.count()).select_from(StatementLine)) == 0
    assert statement.line_count == 1  # its totals stay, for the record
    month = shop.voucher.month
    report = run_settlement(month, actor=bureau.officer, today=settle_day(month))
    assert report["lines_added"] == 1
    again = db.session.scalar(sa.select(Statement).where(Statement.status == "prepared"))
    assert again.seq == 2
    assert db.session.scalar(sa.select(StatementLine.statement_id)) == again.id
    assert db.session.scalar(sa.select(StatementLine.redemption_id)) == redemption_id


@pytest.mark.parametrize(
    "change",
    [
        lambda sid: (
            sa.update(StatementLine)
            .where(StatementLine.statement_id == sid)
            .values(subsidy_fen=StatementLine.subsidy_fen + 1)
        ),
        lambda sid: (
            sa.update(Statement)
            .where(Statement.id == sid)
            .values(subsidy_fen=Statement.subsidy_fen + 1)
        ),
        lambda sid: sa.delete(StatementLine).where(StatementLine.statement_id == sid),
        lambda sid: sa.delete(Statement).where(Statement.id == sid),
        lambda sid: sa.update(Statement).where(Statement.id == sid).values(status="prepared"),
    ],
    ids=["line", "total", "delete-line", "delete-statement", "unfreeze"],
)
def test_a_frozen_statement_cannot_change_in_sql(app_ctx, shop, bureau, change):
    statement = prepared(shop, bureau)
    approval.approve(statement, actor=bureau.approver)
    sid, approved_hash = statement.id, statement.lines_hash
    with pytest.raises(sa.exc.DBAPIError), db.session.begin_nested():
        db.session.execute(change(sid).execution_options(synchronize_session=False))
    db.session.expire_all()
    statement = db.session.get(Statement, sid)
    assert statement.status == "approved" and hashing.statement_hash(statement) == approved_hash


def test_the_ledger_check_follows_what_providers_are_owed(app_ctx, shop, bureau):
    statement = prepared(shop, bureau)
    approval.approve(statement, actor=bureau.approver)
    assert ledger.verify_ledger().ok
    payable = books.payable_code(statement.provider_id)
    # One fen moved out of the provider's payable with no statement behind it.
    ledger.post("settle", "nudge", [(payable, -1), ("pool:available", 1)])
    check = ledger.verify_ledger()
    assert not check.ok
    assert {m["account"] for m in check.subledger_mismatches} == {"provider:%:payable"}
