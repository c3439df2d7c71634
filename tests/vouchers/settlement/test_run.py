"""Settlement runs: the cut-off, what a run takes, reruns, holds and flags."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from eldercare.db import db
from eldercare.errors import InvalidInput
from tests.vouchers.settlement.conftest import settle_day, spend
from vouchers.integrity.models import RedemptionFlag
from vouchers.redemption import steps as redemption
from vouchers.settlement.models import SettlementMonth, Statement, StatementLine
from vouchers.settlement.statements import approval, periods
from vouchers.settlement.statements.run import run_settlement


def lines_of(statement_id=None):
    query = sa.select(StatementLine.redemption_id)
    if statement_id is not None:
        query = query.where(StatementLine.statement_id == statement_id)
    return set(db.session.scalars(query))


def statements():
    return list(db.session.scalars(sa.select(Statement).order_by(Statement.seq)))


def test_settles_from_is_the_month_after_plus_the_reversal_window(app_ctx, shop):
    month = shop.voucher.month
    assert periods.settles_from(month) == settle_day(month)
    assert periods.settles_from(month.replace(day=17)) == settle_day(month)


def test_a_run_before_the_cut_off_is_refused_and_changes_nothing(app_ctx, shop, bureau):
    month = shop.voucher.month
    spend(shop)
    with pytest.raises(InvalidInput) as refused:
        run_settlement(month, actor=bureau.officer, today=settle_day(month) - timedelta(days=1))
    assert settle_day(month).isoformat() in str(refused.value.details["month"])
    assert statements() == []
    assert db.session.scalar(sa.select(sa.func.count()).select_from(SettlementMonth)) == 0


def test_a_run_makes_one_statement_with_the_totals_and_the_payee(app_ctx, shop, bureau):
    month = shop.voucher.month
    first, second = spend(shop, 1500), spend(shop, 1200)
    report = run_settlement(month, actor=bureau.officer, today=settle_day(month))
    [statement] = statements()
    assert report["statements_created"] == 1 and report["lines_added"] == 2
    assert lines_of(statement.id) == {first.id, second.id}
    assert statement.subsidy_fen == first.subsidy_fen + second.subsidy_fen == report["subsidy_fen"]
    assert statement.line_count == 2 and statement.card_copay_fen == 0
    assert statement.provider_id == shop.market.station.id
    assert statement.payee_account_number == shop.market.station.bank_account_number
    assert statement.prepared_by_user_id == bureau.officer.id
    row = db.session.get(SettlementMonth, month)
    assert row.last_run_lines == 2 and row.last_run_at is not None
    assert periods.settleable_months(settle_day(month)) == []


def test_a_rerun_adds_only_what_is_new_to_the_open_statement(app_ctx, shop, bureau):
    month = shop.voucher.month
    first = spend(shop)
    run_settlement(month, actor=bureau.officer, today=settle_day(month))
    again = run_settlement(month, actor=bureau.officer, today=settle_day(month))
    assert again["lines_added"] == 0 and again["statements_extended"] == 0
    later = spend(shop, 1000)
    assert periods.settleable_months(settle_day(month)) == [month]
    third = run_settlement(month, actor=bureau.officer, today=settle_day(month))
    [statement] = statements()
    assert third["lines_added"] == 1 and third["statements_extended"] == 1
    assert third["subsidy_fen"] == later.subsidy_fen
    assert lines_of(statement.id) == {first.id, later.id} and statement.line_count == 2


def test_a_pending_hold_and_an_open_flag_stay_out_then_come_in(app_ctx, shop, bureau):
    month = shop.voucher.month
    r = redemption.check_in(
        shop.voucher,
        scan_digest="held-1",
        staff_user=shop.caregiver,
        service_id=shop.market.meals.id,
    )
    redemption.set_price(r, price_fen=1500, staff_user=shop.caregiver)
    redemption.hold(r, method="cash")  # the co-payment still running
    flagged = spend(shop)
    flag = RedemptionFlag(redemption_id=flagged.id, rule="bureau", evidence={})
    db.session.add(flag)
    db.session.flush()
    report = run_settlement(month, actor=bureau.officer, today=settle_day(month))
    assert report["lines_added"] == 0 and statements() == []  # no empty statement kept

    redemption.capture(r)
    flag.status, flag.decided_at = "cleared", flag.raised_at
    db.session.flush()
    report = run_settlement(month, actor=bureau.officer, today=settle_day(month))
    assert report["lines_added"] == 2
    assert lines_of() == {r.id, flagged.id}


def test_after_approval_new_lines_go_to_a_supplementary_statement(app_ctx, shop, bureau):
    month = shop.voucher.month
    first = spend(shop)
    run_settlement(month, actor=bureau.officer, today=settle_day(month))
    approval.approve(statements()[0], actor=bureau.approver)
    late = spend(shop)
    report = run_settlement(month, actor=bureau.officer, today=settle_day(month))
    one, two = statements()
    assert report["statements_created"] == 1
    assert (one.seq, one.status, two.seq, two.status) == (1, "approved", 2, "prepared")
    assert lines_of(one.id) == {first.id} and lines_of(two.id) == {late.id}


def test_the_catch_up_settles_every_due_month(app_ctx, shop, bureau):
    from vouchers.settlement.statements.run import settle_due

    month = shop.voucher.month
    spend(shop)
    assert settle_due(settle_day(month) - timedelta(days=1))["settled"] == {}
    report = settle_due(settle_day(month))
    assert list(report["settled"]) == [f"{month:%Y-%m}"]
    assert report["settled"][f"{month:%Y-%m}"]["lines_added"] == 1


def test_a_statement_awaiting_its_second_approver_is_not_changed_by_a_run(app_ctx, shop, bureau):
    from eldercare.timeutil import local_today
    from vouchers.settlement.models import SettlementRules

    db.session.add(
        SettlementRules(
            effective_from=local_today() - timedelta(days=1), second_approval_above_fen=100
        )
    )
    month = shop.voucher.month
    first = spend(shop)
    run_settlement(month, actor=bureau.officer, today=settle_day(month))
    [statement] = statements()
    approval.approve(statement, actor=bureau.approver)
    assert statement.status == "awaiting_second"
    late = spend(shop)
    report = run_settlement(month, actor=bureau.officer, today=settle_day(month))
    assert report["lines_added"] == 0 and report["awaiting_second_statements"] == 1
    assert lines_of(statement.id) == {first.id}
    approval.approve(statement, actor=bureau.second)
    report = run_settlement(month, actor=bureau.officer, today=settle_day(month))
    assert report["lines_added"] == 1
    one, two = statements()
    assert two.seq == 2 and lines_of(two.id) == {late.id}
