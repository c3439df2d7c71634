"""Several processes on one SQLite file (``make run``: the web server and the scheduler).

Found by tests/test_run_platform.py: an approval in the web failed with "database is locked"
(a 500) while a scheduler job wrote. A transaction that has read and then wants to write
while another connection writes is refused at once (waiting could deadlock), whatever the
busy timeout. SQLITE_BEGIN_IMMEDIATE (which scripts/run_platform.py sets) makes every
transaction take the write lock when it begins, so the second one waits its turn instead."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from eldercare import create_app
from eldercare.db import db
from tests.conftest import TEST_CONFIG


def _read_then_write_while_another_writes(immediate: bool, tmp_path) -> None:
    app = create_app(
        TEST_CONFIG
        | {
            "SQLALCHEMY_DATABASE_URI": "sqlite:///" + str(tmp_path / "two.db"),
            "SQLITE_BEGIN_IMMEDIATE": immediate,
        }
    )
    with app.app_context():
        engine = db.engine
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE counts (n INTEGER)")
    wrote, done = threading.Event(), threading.Event()

    def other_writer():
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO counts VALUES (1)")
            wrote.set()
            done.wait(0.5)  # a job's transaction, still open
    thread = threading.Thread(target=other_writer)
    thread.start()
    try:
        wrote.wait(10)
        with engine.begin() as conn:  # a request: reads, then writes
            conn.exec_driver_sql("SELECT count(*) FROM counts").scalar()
            conn.exec_driver_sql("INSERT INTO counts VALUES (2)")
    finally:
        done.set()
        thread.join()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM counts").scalar() == 2
    engine.dispose()


def test_with_begin_immediate_a_second_writer_waits_its_turn(tmp_path):
    _read_then_write_while_another_writes(True, tmp_path)


def test_without_it_the_second_writer_is_refused(tmp_path):
    """What the setting is for (and why the suite, one connection per test, does without)."""
    with pytest.raises(sa.exc.OperationalError, match="database is locked"):
        _read_then_write_while_another_writes(False, tmp_path)
