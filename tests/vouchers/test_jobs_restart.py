"""The scheduler restarted across the 1st of a month still issues that month (defect: a
restart re-added the jobs with ``replace_existing=True``, recomputing their next run from
now, and the monthly step ran only from a cron trigger on the 1st)."""

import threading
from datetime import UTC, date, datetime, time

import pytest
import sqlalchemy as sa
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED
from apscheduler.schedulers.background import BackgroundScheduler

from eldercare import timeutil
from eldercare.db import db
from eldercare.scheduler import add_jobs, all_jobs, make_scheduler
from tests.vouchers.test_issuance_crash import CAP, migrated_app, private_database, seed_elders
from vouchers.issuance.monthly import month_of, next_month
from vouchers.models import Voucher
from vouchers.pool import ledger

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
ELDERS = 4


def stored_next_runs(app) -> dict[str, float]:
    with app.app_context():
        rows = db.session.execute(sa.text("SELECT id, next_run_time FROM apscheduler_jobs")).all()
        db.session.remove()
    return dict(rows)


def run_scheduler_once(app) -> None:
    """Start a background scheduler with the monthly job, wait until that job has run once
    (it should at start), stop it."""
    finished = threading.Event()

    def on_event(event):
        if event.job_id.startswith("vouchers-monthly"):
            finished.set()

    scheduler = make_scheduler(app, BackgroundScheduler)
    add_jobs(scheduler, app, [all_jobs(app)["vouchers-monthly"]])
    scheduler.add_listener(on_event, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)
    scheduler.start()
    try:
        ran = finished.wait(timeout=120)
    finally:
        scheduler.shutdown(wait=True)
    assert ran, "the monthly catch-up did not run when the scheduler started"


def vouchers_by_status(app, month: date) -> dict[str, int]:
    with app.app_context():
        rows = db.session.execute(
            sa.select(Voucher.status, sa.func.count())
            .where(Voucher.month == month)
            .group_by(Voucher.status)
        ).all()
        db.session.remove()
    return dict(rows)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_scheduler_restarted_after_the_first_issues_the_month(backend, tmp_path, monkeypatch):
    this_month = month_of(timeutil.local_today())
    with private_database(backend, tmp_path) as url, migrated_app(url) as app:
        seed_elders(app, ELDERS)
        run_scheduler_once(app)  # this month, as on any day: the month is issued at start
        assert vouchers_by_status(app, this_month) == {"active": ELDERS}
        stored = stored_next_runs(app)
        assert set(stored) == {"vouchers-monthly"}
        with app.app_context():
            districts_before = {
                code: value
                for code, value in ledger.balances().items()
                if code.startswith("district:")
            }
            db.session.remove()

        # The scheduler was down over the 1st; it comes back on the 2nd of the next month.
        new_month = next_month(this_month)
        second = datetime.combine(new_month.replace(day=2), time(10), tzinfo=timeutil.SHANGHAI)
        monkeypatch.setattr(timeutil, "now_utc", lambda: second.astimezone(UTC))
        assert timeutil.local_today() == new_month.replace(day=2)
        run_scheduler_once(app)

        assert stored_next_runs(app) == stored  # kept, not recomputed by the restart
        assert vouchers_by_status(app, this_month) == {"expired": ELDERS}
        assert vouchers_by_status(app, new_month) == {"active": ELDERS}
        with app.app_context():
            balances = ledger.balances()
            assert ledger.verify_ledger().ok
            db.session.remove()
        # Each district got last month's balances back and paid this month's out of them.
        for code, before in districts_before.items():
            assert balances[code] == before
        assert balances["vouchers:outstanding"] == ELDERS * CAP
