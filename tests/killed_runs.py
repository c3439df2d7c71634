"""Running the real ``flask ...`` commands in a process of their own, and killing them.

Shared by the crash tests: a command is started against a database of its own, killed with
SIGKILL (no handler, no cleanup: what a power cut or the OOM killer does) at a point drawn
from a seeded random generator, rerun to completion, and the database compared with a twin on
which the same command ran once, uninterrupted.

The databases are clones (``CREATE DATABASE … TEMPLATE``) of one migrated and seeded template,
so every seed starts from the same rows and the same ids, and seeding is paid once.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from flask_migrate import upgrade

from eldercare import create_app
from eldercare.db import db
from tests.conftest import TEST_CONFIG, TEST_DATABASE_URL, rules_off

ROOT = Path(__file__).resolve().parents[1]
# Marks the command's connections in pg_stat_activity, so that the test can see when the
# command is inside a transaction (and not still importing the app).
APPLICATION_NAME = "killed-run"


@dataclass
class Outcome:
    returncode: int
    out: str
    err: str
    killed: bool = False  # SIGKILL reached the process while it was still running


def flask_command(
    url: str, *args: str, env: dict | None = None, start_only: bool = False
) -> Outcome | subprocess.Popen:
    """``python -m flask --app wsgi <args>`` against ``url``, in a process of its own."""
    environment = os.environ | {"DATABASE_URL": url, "PYTHONPATH": str(ROOT)} | (env or {})
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, "-m", "flask", "--app", "wsgi", *args],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if start_only:
        return process
    out, err = process.communicate(timeout=600)
    return Outcome(process.returncode, out, err)


def _in_transaction(url: str) -> bool:
    """Whether a connection of the command has a transaction open on its database."""
    name = sa.make_url(url).database
    engine = sa.create_engine(TEST_DATABASE_URL, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            return bool(
                connection.scalar(
                    sa.text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = :db"
                        " AND application_name = :app AND xact_start IS NOT NULL"
                    ),
                    {"db": name, "app": APPLICATION_NAME},
                )
            )
    finally:
        engine.dispose()


def tagged(url: str) -> str:
    """``url`` with the application name the test watches for."""
    return (
        sa.make_url(url)
        .update_query_dict({"application_name": APPLICATION_NAME})
        .render_as_string(hide_password=False)
    )


def kill_points(seeds: tuple[int, ...], span: float) -> list[float]:
    """One kill delay per seed over ``span`` seconds of work, stratified: the i-th of n seeds
    draws (from ``random.Random(seed)``) a point in the i-th n-th of the span, so that a few
    seeds cover the start, the middle and the end of the work rather than clustering."""
    n = len(seeds)
    return [span * (i + random.Random(seed).random()) / n for i, seed in enumerate(seeds)]


def kill_part_way(url: str, args: tuple[str, ...], delay: float) -> Outcome:
    """Start the command, wait until it is inside its first transaction (the app is loaded and
    working), then SIGKILL it ``delay`` seconds later: somewhere in its work, or after it
    ended (then it simply finished)."""
    process = flask_command(tagged(url), *args, start_only=True)
    while process.poll() is None and not _in_transaction(url):
        time.sleep(0.01)
    time.sleep(delay)
    killed = process.poll() is None
    if killed:
        process.send_signal(signal.SIGKILL)
    out, err = process.communicate(timeout=600)
    return Outcome(process.returncode, out, err, killed=killed)


def timed_run(url: str, args: tuple[str, ...]) -> tuple[Outcome, float]:
    """The command run once to its end, and how long it worked in the database: from its
    first transaction to the end of its last (what the kill points are drawn over; the
    interpreter's exit after the work is not part of it). Not asserted."""
    process = flask_command(tagged(url), *args, start_only=True)
    while process.poll() is None and not _in_transaction(url):
        time.sleep(0.01)
    started = last_seen = time.monotonic()
    while process.poll() is None:
        if _in_transaction(url):
            last_seen = time.monotonic()
        time.sleep(0.01)
    out, err = process.communicate(timeout=600)
    return Outcome(process.returncode, out, err), last_seen - started


def _admin():
    return sa.create_engine(TEST_DATABASE_URL, isolation_level="AUTOCOMMIT")


@contextmanager
def seeded_template(prefix: str, seed: Callable) -> Iterator[str]:
    """A database migrated and seeded once (``seed(app)``), to be cloned; dropped after."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = _admin()
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(TEST_DATABASE_URL).set(database=name).render_as_string(hide_password=False)
    try:
        app = create_app(TEST_CONFIG | {"SQLALCHEMY_DATABASE_URI": url})
        with app.app_context():
            upgrade()
            rules_off()  # the anomaly rules judge in their own tests (tests/conftest.py)
            seed(app)
            db.session.remove()
            db.engine.dispose()  # a template may have no connection when it is cloned
        yield url
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@contextmanager
def clone(template_url: str) -> Iterator[str]:
    """A fresh copy of the template (same rows, same ids, same sequences), dropped after."""
    template = sa.make_url(template_url).database
    name = f"{template}_{uuid.uuid4().hex[:6]}"
    admin = _admin()
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield sa.make_url(template_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@contextmanager
def app_on(url: str):
    """An app context on ``url``, for checks; its connections closed after."""
    app = create_app(TEST_CONFIG | {"SQLALCHEMY_DATABASE_URI": url})
    with app.app_context():
        try:
            yield app
        finally:
            db.session.remove()
            db.engine.dispose()


# What a run leaves behind, in terms that do not depend on ids a sequence handed out (a killed
# transaction still used up its sequence numbers) nor on clock times: rows by natural key,
# money summed per ledger account and per entry kind, audit rows counted per action.
STATE_QUERIES = {
    "vouchers": "SELECT resident_id, month, kind, face_value_fen, balance_fen, held_fen, status"
    " FROM vouchers ORDER BY resident_id, month, kind",
    "balances": "SELECT a.code, sum(l.amount_fen) FROM journal_lines l"
    " JOIN ledger_accounts a ON a.id = l.account_id GROUP BY a.code ORDER BY a.code",
    "journal": "SELECT e.kind, a.code, sum(l.amount_fen) FROM journal_lines l"
    " JOIN journal_entries e ON e.id = l.entry_id JOIN ledger_accounts a ON a.id = l.account_id"
    " GROUP BY e.kind, a.code ORDER BY e.kind, a.code",
    "stored_balances": "SELECT a.code, sum(b.balance_fen) FROM ledger_balances b"
    " JOIN ledger_accounts a ON a.id = b.account_id GROUP BY a.code ORDER BY a.code",
    "audit": "SELECT action, count(*) FROM audit_logs GROUP BY action ORDER BY action",
    "statements": "SELECT provider_id, month, seq, status, line_count, subsidy_fen,"
    " card_copay_fen FROM statements ORDER BY provider_id, month, seq",
    "statement_lines": "SELECT l.redemption_id, s.provider_id, s.seq, l.subsidy_fen,"
    " l.card_copay_fen FROM statement_lines l JOIN statements s ON s.id = l.statement_id"
    " ORDER BY l.redemption_id",
    # (not last_run_lines: what the latest run added, 0 for a rerun that found all done)
    "settlement_months": "SELECT month, settles_from FROM settlement_months ORDER BY month",
}


def state(url: str) -> dict[str, list[tuple]]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            return {
                name: [tuple(row) for row in connection.execute(sa.text(sql))]
                for name, sql in STATE_QUERIES.items()
            }
    finally:
        engine.dispose()
