"""`flask settlement run` and the hourly catch-up job."""

from __future__ import annotations

import json
from datetime import date

import sqlalchemy as sa

from eldercare.db import db
from eldercare.scheduler import all_jobs, execute
from tests.vouchers.settlement.conftest import settle_day, spend
from vouchers.models import Voucher
from vouchers.settlement.models import StatementLine


def invoke(app, *args):
    return app.test_cli_runner().invoke(args=["settlement", "run", *args])


def two_months_back(shop) -> str:
    """Make the shop's voucher (and so its redemptions) belong to a month whose cut-off has
    passed, as if the run had been missed."""
    m = shop.voucher.month
    back = date(m.year - (m.month <= 2), (m.month - 3) % 12 + 1, 1)
    db.session.execute(sa.update(Voucher).where(Voucher.id == shop.voucher.id).values(month=back))
    db.session.flush()
    return f"{back:%Y-%m}"


def test_a_month_before_its_cut_off_exits_non_zero_with_the_reason(app, shop, db_session):
    spend(shop)
    result = invoke(app, "--month", f"{shop.voucher.month:%Y-%m}")
    assert result.exit_code == 1
    assert settle_day(shop.voucher.month).isoformat() in result.output  # from when it may
    assert db_session.scalar(sa.select(sa.func.count()).select_from(StatementLine)) == 0


def test_a_bad_month_exits_non_zero(app, db_session):
    result = invoke(app, "--month", "2026-13")
    assert result.exit_code == 1 and "YYYY-MM" in result.output


def test_a_due_month_is_settled_and_reported_as_json(app, shop, db_session):
    r = spend(shop)
    month = two_months_back(shop)
    result = invoke(app, "--month", month, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["month"] == month and report["lines_added"] == 1
    assert report["subsidy_fen"] == r.subsidy_fen
    again = json.loads(invoke(app, "--month", month, "--json").output)
    assert again["lines_added"] == 0


def test_without_a_month_every_due_month_is_caught_up(app, shop, db_session):
    spend(shop)
    month = two_months_back(shop)
    result = invoke(app)
    assert result.exit_code == 0, result.output
    assert f"{month}: 1 statements created" in result.output
    assert "nothing to settle" in invoke(app).output


def test_the_hourly_job_settles_what_was_missed(app, shop, db_session):
    spend(shop)
    month = two_months_back(shop)
    with app.app_context():
        ok, result = execute(all_jobs(app)["settlement-run"])
    assert ok and result["settled"][month]["lines_added"] == 1 and result["failed"] == {}
    assert db_session.scalar(sa.select(sa.func.count()).select_from(StatementLine)) == 1
