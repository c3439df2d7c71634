"""How the scheduler keeps its jobs across restarts and runs them (eldercare.scheduler)."""

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import BaseScheduler

from eldercare.db import db
from eldercare.scheduler import add_jobs, make_scheduler, run_job
from tests.vouchers.test_issuance_crash import migrated_app, private_database

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def store_app(request, tmp_path):
    """An app on a database of its own: the job store commits for real."""
    with private_database(request.param, tmp_path) as url, migrated_app(url) as app:
        yield app


class StoreOnly(BaseScheduler):
    """A scheduler that never runs a job: it only reads and writes its job store."""

    def wakeup(self):
        pass

    def shutdown(self, wait=True):
        super().shutdown(wait)


def _paused(app):
    scheduler = make_scheduler(app, StoreOnly)
    add_jobs(scheduler, app)
    scheduler.start()
    return scheduler


def test_readding_the_jobs_keeps_every_stored_next_run_time(store_app):
    scheduler = _paused(store_app)
    # The scheduler was down when this job was due: its next run lies in the past.
    overdue = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    scheduler.modify_job("notifications-deliver", next_run_time=overdue)
    before = {job.id: job.next_run_time for job in scheduler.get_jobs(jobstore="default")}
    scheduler.shutdown(wait=False)

    restarted = _paused(store_app)
    try:
        after = {job.id: job.next_run_time for job in restarted.get_jobs(jobstore="default")}
    finally:
        restarted.shutdown(wait=False)
    assert after == before
    assert after["notifications-deliver"] == overdue  # still due: it runs at once


def test_job_runs_reuse_the_scheduler_apps_engine(store_app, tmp_path, monkeypatch):
    """Each run used to build a new app, and with it a new engine and connection pool that
    nothing closed."""
    url = store_app.config["SQLALCHEMY_DATABASE_URI"]
    monkeypatch.setenv("DATABASE_URL", url)  # where an app built from the environment goes
    monkeypatch.setenv("MAIL_FILE_DIR", str(tmp_path / "mail"))
    make_scheduler(store_app, BackgroundScheduler)  # what `flask scheduler run` builds
    engines, connections = [], []

    def seen_engine(connection):
        if all(connection.engine is not e for e in engines):
            engines.append(connection.engine)

    def new_connection(*_):
        connections.append(1)

    sa.event.listen(sa.engine.Engine, "engine_connect", seen_engine)
    sa.event.listen(sa.pool.Pool, "connect", new_connection)
    try:
        for _ in range(5):
            run_job("notifications-deliver")
    finally:
        sa.event.remove(sa.engine.Engine, "engine_connect", seen_engine)
        sa.event.remove(sa.pool.Pool, "connect", new_connection)
    with store_app.app_context():
        assert engines == [db.engine]
    assert len(connections) <= 1  # the pool's connection is reused run after run


def test_a_changed_job_replaces_the_stored_one_without_postponing_its_run(store_app):
    """The previous release stored vouchers-monthly as a cron job on the 1st; its due run
    must survive the change to a catch-up every 10 minutes. A job no longer registered goes."""
    overdue = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=30)
    old = make_scheduler(store_app, StoreOnly)
    old.start()
    old.add_job(
        "eldercare.scheduler:run_job",
        trigger="cron",
        day=1,
        hour=0,
        minute=5,
        args=["vouchers-monthly"],
        id="vouchers-monthly",
        next_run_time=overdue,
    )
    old.add_job("eldercare.scheduler:run_job", "interval", minutes=5, args=["gone"], id="gone")
    old.shutdown(wait=False)

    restarted = _paused(store_app)
    try:
        monthly = restarted.get_job("vouchers-monthly", jobstore="default")
        gone = restarted.get_job("gone")
    finally:
        restarted.shutdown(wait=False)
    assert str(monthly.trigger) == "interval[0:10:00]"
    assert monthly.next_run_time == overdue
    assert gone is None


def test_jobs_take_turns_on_sqlite_and_run_side_by_side_on_postgresql(store_app):
    """Found running `make run`: three every-minute jobs writing to the demo's SQLite file at
    the same moment failed with "database is locked" (SQLite has one writer, and a read
    transaction cannot wait to become a write one)."""
    scheduler = make_scheduler(store_app, StoreOnly)
    pool = scheduler._lookup_executor("default")._pool  # APScheduler's ThreadPoolExecutor
    with store_app.app_context():
        dialect = db.engine.dialect.name
    assert pool._max_workers == (1 if dialect == "sqlite" else 4)


def test_a_configured_cap_shortens_every_interval_job_and_no_cron_job(store_app):
    """SCHEDULER_INTERVAL_CAP_SECONDS lets a demo or a test see the catch-ups work within
    seconds (issue 14: the demo runs the scheduler as production does); cron jobs keep
    their hour, and without the setting every interval is the job's own."""
    store_app.config["SCHEDULER_INTERVAL_CAP_SECONDS"] = 2
    scheduler = _paused(store_app)
    try:
        jobs = {job.id: job for job in scheduler.get_jobs(jobstore="default")}
    finally:
        scheduler.shutdown(wait=False)
    assert str(jobs["vouchers-eligibility-events"].trigger) == "interval[0:00:02]"
    assert str(jobs["notifications-deliver"].trigger) == "interval[0:00:02]"
    assert str(jobs["vouchers-monthly"].trigger) == "interval[0:00:02]"
    assert str(jobs["accounts-purge"].trigger).startswith("cron[")

    store_app.config["SCHEDULER_INTERVAL_CAP_SECONDS"] = 0  # unset: the jobs' own intervals
    restarted = _paused(store_app)
    try:
        monthly = restarted.get_job("vouchers-monthly", jobstore="default")
    finally:
        restarted.shutdown(wait=False)
    assert str(monthly.trigger) == "interval[0:10:00]"
