"""One active scheduler per database (eldercare.scheduler_leader): a second one stands by and
takes over when the first stops; one that loses its connection stops."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from eldercare.db import db
from eldercare.scheduler_leader import LEADER_LOCK_KEY, Leadership, watch
from tests.vouchers.test_issuance_crash import migrated_app, private_database

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def pg_app(tmp_path):
    with private_database("postgres", tmp_path) as url, migrated_app(url) as app:
        app.config["TEST_DATABASE_URL"] = url
        yield app


def _holders(engine) -> int:
    with engine.connect() as connection:
        return connection.scalar(
            sa.text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND ((classid::bigint << 32) | objid::bigint) = :key"
            ),
            {"key": LEADER_LOCK_KEY},
        )


@pytest.mark.postgres
def test_only_one_scheduler_leads_and_the_lock_passes_on_when_it_stops(pg_app):
    with pg_app.app_context():
        engine = db.engine
        first, second = Leadership(engine), Leadership(engine)
        assert first.try_acquire()
        assert not second.try_acquire()
        assert _holders(engine) == 1
        assert first.still_held() and not second.still_held()
        first.release()
        assert second.try_acquire()
        assert not first.try_acquire()
        second.release()
        assert _holders(engine) == 0


@pytest.mark.postgres
def test_a_scheduler_that_loses_its_connection_knows_and_the_standby_takes_over(pg_app):
    with pg_app.app_context():
        engine = db.engine
        leader, standby = Leadership(engine), Leadership(engine)
        assert leader.try_acquire()
        lost = threading.Event()
        stop = watch(leader, lost.set, interval_seconds=0.1)
        pid = leader.connection.scalar(sa.select(sa.func.pg_backend_pid()))
        with engine.connect() as connection:
            connection.scalar(sa.select(sa.func.pg_terminate_backend(pid)))
        try:
            assert lost.wait(10), "the watchdog did not notice the lost connection"
            assert not leader.still_held()
            assert standby.wait(poll_seconds=0.1, stop=threading.Event())
        finally:
            stop.set()
            standby.release()
            leader.release()


def test_on_sqlite_the_only_scheduler_always_leads(tmp_path):
    with private_database("sqlite", tmp_path) as url, migrated_app(url) as app:
        with app.app_context():
            assert Leadership(db.engine).try_acquire()
            assert Leadership(db.engine).try_acquire()


def _start_scheduler(url: str, log: Path) -> subprocess.Popen:
    env = os.environ | {
        "DATABASE_URL": url,
        "PYTHONPATH": str(ROOT),
        "SCHEDULER_STANDBY_POLL_SECONDS": "0.3",
    }
    env.pop("TEST_DATABASE_URL", None)
    with log.open("w") as out:
        return subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
            [sys.executable, "-m", "flask", "--app", "wsgi", "scheduler", "run"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _wait_for(log: Path, text: str, seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if text in log.read_text():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.postgres
def test_two_scheduler_processes_one_runs_the_other_stands_by_then_takes_over(pg_app, tmp_path):
    url = pg_app.config["TEST_DATABASE_URL"]
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = _start_scheduler(url, first_log)
    second = None
    try:
        assert _wait_for(first_log, "scheduler active"), first_log.read_text()
        second = _start_scheduler(url, second_log)
        assert _wait_for(second_log, "standing by"), second_log.read_text()
        time.sleep(1)  # several polls: still standing by while the first runs
        assert "scheduler active" not in second_log.read_text()
        first.send_signal(signal.SIGINT)
        first.wait(30)
        assert _wait_for(second_log, "scheduler active"), second_log.read_text()
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(30)
