"""The monthly catch-up (vouchers-monthly) and how its runs are recorded and shown: a missed
month is expired, a failing step neither stops the other nor goes unseen, the next run
retries; two catch-ups at once issue each elder once."""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from eldercare.db import db
from eldercare.job_runs import JobRun
from eldercare.scheduler import all_jobs, execute
from eldercare.timeutil import local_today
from tests.conftest import ON_POSTGRES
from tests.vouchers.test_issuance import HEPING, HOME_CAP, OUTSTANDING, assert_books_balance
from tests.vouchers.test_issuance_crash import (
    CAP,
    check_books,
    migrated_app,
    private_database,
    seed_elders,
)
from vouchers import jobs
from vouchers.issuance.monthly import issuance_day, month_of, previous_month, try_issue
from vouchers.models import Voucher, VoucherPolicy
from vouchers.pool import ledger

MONTHLY = "vouchers-monthly"


@pytest.fixture
def current(scheme):
    return month_of(scheme.today)


def catch_up(app):
    with app.app_context():
        return execute(all_jobs(app)[MONTHLY])


def scheduler_list(app) -> dict:
    result = app.test_cli_runner().invoke(args=["scheduler", "list", "--json"])
    assert result.exit_code == 0, result.output
    return {row["id"]: row for row in json.loads(result.output)}


def pool_page(client, lang="en") -> str:
    return client.get("/vouchers/bureau/pool", headers={"Accept-Language": lang}).get_data(
        as_text=True
    )


def status_of(session, voucher) -> str:
    return session.scalar(sa.select(Voucher.status).where(Voucher.id == voucher.id))


def test_every_missed_month_is_expired_oldest_first_and_the_money_returns(
    app, scheme, current, db_session
):
    """Only the previous month used to be expired: a month missed by a stopped scheduler
    kept its balances in vouchers:outstanding for ever."""
    two_ago, last = previous_month(previous_month(current)), previous_month(current)
    missed = [
        try_issue(scheme.elder.id, month, actor_id=None, reason="monthly").voucher
        for month in (two_ago, last)
    ]
    before = ledger.balances()

    ok, result = catch_up(app)

    assert ok, result
    assert list(result) == [
        f"expire {two_ago:%Y-%m}",
        f"expire {last:%Y-%m}",
        f"issue {current:%Y-%m}",
    ]
    assert [status_of(db_session, v) for v in missed] == ["expired", "expired"]
    after = ledger.balances()
    # Two missed months' balances back in the district, this month's voucher paid from it.
    assert after[HEPING] == before[HEPING] + 2 * HOME_CAP - HOME_CAP
    assert after[OUTSTANDING] == before[OUTSTANDING] - 2 * HOME_CAP + HOME_CAP == HOME_CAP
    assert_books_balance(db_session)
    run = db_session.scalar(sa.select(JobRun).where(JobRun.job_id == MONTHLY))
    assert (run.status, run.error) == ("ok", None) and run.finished_at is not None

    again_ok, again = catch_up(app)  # nothing left to do
    assert again_ok and list(again) == [f"issue {current:%Y-%m}"]
    assert again[f"issue {current:%Y-%m}"]["issued"] == 0
    assert ledger.balances() == after


def _end_policies_before(session, month):
    """No voucher policy covers ``month`` (a version forgotten at the turn of the year)."""
    session.execute(
        sa.update(VoucherPolicy)
        .where(VoucherPolicy.effective_to.is_(None))
        .values(effective_to=month)
    )


def test_a_failing_issuance_is_recorded_shown_and_retried_without_stopping_expiry(
    app, scheme, current, db_session, client, login
):
    last_months = try_issue(
        scheme.elder.id, previous_month(current), actor_id=None, reason="monthly"
    ).voucher
    _end_policies_before(db_session, current)
    district_before = ledger.balances()[HEPING]

    ok, error = catch_up(app)

    # The voucher's face value is the version in force on the day of issue.
    assert not ok and "NotFound" in error and issuance_day(current).isoformat() in error
    # The expiry step went through: last month's balance is back in the district.
    assert status_of(db_session, last_months) == "expired"
    assert ledger.balances()[HEPING] == district_before + HOME_CAP
    assert db_session.scalar(sa.select(Voucher).where(Voucher.month == current)) is None
    assert_books_balance(db_session)

    row = scheduler_list(app)[MONTHLY]
    assert row["failing"] is True and row["last_run"]["status"] == "failed"
    assert row["last_success"] is None
    failure = row["last_failure"]
    assert f"issue {current:%Y-%m}" in failure["error"] and "NotFound" in failure["error"]
    assert failure["result"]["done"][f"expire {previous_month(current):%Y-%m}"]["expired"] == 1
    assert list(failure["result"]["failed"]) == [f"issue {current:%Y-%m}"]

    login(scheme.approver)
    english = pool_page(client)
    assert 'data-job="vouchers-monthly"' in english
    assert "This month&#39;s voucher job failed" in english and "retry it automatically" in english
    chinese = pool_page(client, "zh-CN")
    assert "本月电子券发放作业失败" in chinese and "系统将自动重试" in chinese

    # The bureau adds the missing policy version; the next run issues the month.
    db_session.execute(
        sa.update(VoucherPolicy)
        .where(VoucherPolicy.effective_to == current)
        .values(effective_to=None)
    )
    ok, result = catch_up(app)
    assert ok and result[f"issue {current:%Y-%m}"]["issued"] == 1
    row = scheduler_list(app)[MONTHLY]
    assert row["failing"] is False and row["last_success"]["status"] == "ok"
    assert row["last_failure"]["status"] == "failed"  # still listed, for the record
    assert 'data-job="vouchers-monthly"' not in pool_page(client)
    assert_books_balance(db_session)


def test_a_failing_expiry_does_not_stop_issuance(app, scheme, current, db_session, monkeypatch):
    last_months = try_issue(
        scheme.elder.id, previous_month(current), actor_id=None, reason="monthly"
    ).voucher

    def connection_lost(month, **_):
        raise sa.exc.OperationalError(
            "UPDATE vouchers ...", {"id": 1}, Exception("server closed the connection unexpectedly")
        )

    monkeypatch.setattr(jobs, "expire_month", connection_lost)
    ok, error = catch_up(app)
    assert not ok and "server closed the connection" in error and "UPDATE" not in error
    assert status_of(db_session, last_months) == "active"
    assert db_session.scalar(sa.select(Voucher.status).where(Voucher.month == current)) == "active"
    assert_books_balance(db_session)

    monkeypatch.undo()
    ok, result = catch_up(app)
    assert ok and result[f"expire {previous_month(current):%Y-%m}"]["expired"] == 1
    assert status_of(db_session, last_months) == "expired"


def test_the_pool_page_says_when_the_monthly_job_never_succeeded(scheme, client, login):
    login(scheme.approver)
    html = pool_page(client)
    assert 'data-job="vouchers-monthly"' in html and "has never succeeded" in html
    assert "每月消费券作业从未成功运行" in pool_page(client, "zh-CN")


def test_a_failed_run_of_another_vouchers_job_shows_too(app, scheme, db_session, client, login):
    failing = jobs.ScheduledJob(
        id="vouchers-eligibility-events",
        func=lambda: 1 / 0,
        trigger="interval",
        trigger_args={"minutes": 1},
    )
    with app.app_context():
        ok, error = execute(failing)
    assert not ok and error == "ZeroDivisionError: division by zero"
    login(scheme.approver)
    html = pool_page(client)
    assert 'data-job="vouchers-eligibility-events"' in html and "division by zero" in html


@pytest.mark.postgres
def test_two_catch_ups_at_once_issue_every_elder_once(tmp_path, monkeypatch):
    if not ON_POSTGRES:
        pytest.skip("PostgreSQL-only; set TEST_DATABASE_URL (CI does)")
    # Commit often, so that the two runs interleave batch by batch.
    monkeypatch.setattr(jobs, "BATCH_SIZE", 25)
    with private_database("postgres", tmp_path) as url, migrated_app(url) as app:
        ids = seed_elders(app, 300)

        def run(_):
            try:
                return catch_up(app)
            finally:
                with app.app_context():
                    db.session.remove()

        with ThreadPoolExecutor(max_workers=2) as threads:
            outcomes = list(threads.map(run, range(2)))
        assert all(ok for ok, _ in outcomes), outcomes
        reports = [result[f"issue {month_of(local_today()):%Y-%m}"] for _, result in outcomes]
        assert sum(r["issued"] for r in reports) == len(ids)
        assert all(r["issued"] + r["already_issued"] == len(ids) for r in reports)
        check_books(app, expected_count=len(ids))
        with app.app_context():
            assert ledger.balances()["vouchers:outstanding"] == len(ids) * CAP
            runs = db.session.scalars(sa.select(JobRun.status)).all()
            db.session.remove()
        assert runs == ["ok", "ok"]
