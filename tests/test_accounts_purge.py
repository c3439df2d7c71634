"""The daily purge of spent sign-in throttle rows and old sessions (eldercare.accounts_purge):
what must go goes, what still counts or may still be asked about stays; the job and the
command; and a sign-in whose spent row the purge deletes under it still counts its guess."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import sqlalchemy as sa

from eldercare import accounts_purge, login_throttle
from eldercare.accounts import LoginThrottle
from eldercare.db import db, unit_of_work
from eldercare.scheduler import all_jobs, execute
from eldercare.timeutil import now_utc
from eldercare.user_sessions import UserSession

MIN = timedelta(minutes=1)
DAY = timedelta(days=1)


def _throttles(session) -> set[tuple[str, str]]:
    return set(session.execute(sa.select(LoginThrottle.username_key, LoginThrottle.client_key)))


def _agents(session) -> set[str]:
    return set(session.scalars(sa.select(UserSession.user_agent)))


@pytest.fixture
def rows(app, db_session, factory):
    """Throttle rows and sessions on both sides of the lines, as of ``now``. The app's windows
    are 15 minutes (per name and client, per client) and 60 (per name, across clients)."""
    assert (app.config["LOGIN_LOCK_MINUTES"], app.config["LOGIN_NAME_LOCK_MINUTES"]) == (15, 60)
    now = now_utc()
    throttle = [
        # spent: the window began 61 minutes ago, nothing locked
        ("spray-1", "10.0.0.1", now - 61 * MIN, None),
        # spent: a lock that ran out a minute ago
        ("spray-2", "", now - 120 * MIN, now - MIN),
        # kept: a name's lock still on
        ("wang", "", now - 90 * MIN, now + 5 * MIN),
        # kept: a window of 30 minutes ago, over for a client's count but not for a name's
        ("li", "", now - 30 * MIN, None),
        # kept: a fresh window
        ("", "10.0.0.2", now - MIN, None),
    ]
    for name, client, started, locked in throttle:
        db_session.add(
            LoginThrottle(
                username_key=name,
                client_key=client,
                failures=3,
                window_started_at=started,
                locked_until=locked,
            )
        )
    user = factory.user("purge.user")
    sessions = [
        ("idle 31 days", now - 31 * DAY, None),
        ("ended 40 days ago", now - 40 * DAY, now - 40 * DAY),
        ("live", now - MIN, None),
        ("ended 2 days ago", now - 2 * DAY, now - 2 * DAY),
        ("idle 35 days, ended yesterday", now - 35 * DAY, now - DAY),
    ]
    for number, (agent, seen, revoked) in enumerate(sessions):
        db_session.add(
            UserSession(
                token_sha256=f"{number:064d}",
                user_id=user.id,
                created_at=seen,
                last_seen_at=seen,
                revoked_at=revoked,
                user_agent=agent,
            )
        )
    db_session.flush()
    return now


KEPT_THROTTLES = {("wang", ""), ("li", ""), ("", "10.0.0.2")}
KEPT_SESSIONS = {"live", "ended 2 days ago", "idle 35 days, ended yesterday"}


def test_the_purge_deletes_spent_throttles_and_old_sessions_only(app, rows, db_session):
    with app.app_context():
        summary = accounts_purge.purge(rows)
    assert summary == {"login_throttles": 2, "user_sessions": 2}
    assert _throttles(db_session) == KEPT_THROTTLES
    assert _agents(db_session) == KEPT_SESSIONS
    with app.app_context():  # again: nothing more
        assert accounts_purge.purge(rows) == {"login_throttles": 0, "user_sessions": 0}


def test_the_longest_window_is_what_counts(app, rows, db_session, monkeypatch):
    monkeypatch.setitem(app.config, "LOGIN_NAME_LOCK_MINUTES", 20)  # now 30 minutes is spent
    with app.app_context():
        assert accounts_purge.purge(rows)["login_throttles"] == 3
    assert ("li", "") not in _throttles(db_session)


def test_the_job_is_registered_daily_and_recorded(app, rows, db_session):
    from eldercare.job_runs import JobRun

    job = all_jobs(app)["accounts-purge"]
    assert job.trigger == "cron" and set(job.trigger_args) == {"hour", "minute"}
    with app.app_context():
        ok, result = execute(job)
    assert ok and result == {"login_throttles": 2, "user_sessions": 2}
    run = db_session.scalar(sa.select(JobRun).where(JobRun.job_id == "accounts-purge"))
    assert run.status == "ok" and run.result == result
    assert _throttles(db_session) == KEPT_THROTTLES


def test_the_command_purges_and_says_how_many(app, rows, db_session):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["accounts", "purge", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {"login_throttles": 2, "user_sessions": 2}
    again = runner.invoke(args=["accounts", "purge"])
    assert again.exit_code == 0 and "0 sign-in throttle rows" in again.output
    assert _agents(db_session) == KEPT_SESSIONS


@pytest.mark.postgres
def test_a_guess_whose_spent_row_is_purged_under_it_still_counts(app, app_ctx, db_session):
    """The purge deletes the name's spent row (committed) between the sign-in's INSERT … ON
    CONFLICT DO NOTHING (which found it and locked nothing) and its SELECT … FOR UPDATE:
    the guess must still be counted on every counter, on a new row."""
    now = now_utc()
    name, client = "spray-victim", "10.9.9.9"
    assert login_throttle.take_guess(name, client, now - 2 * timedelta(hours=1))

    where, purged = login_throttle._where, []

    def purge_first(key):
        if not purged:  # the INSERT has run; the SELECT is being built

            def purge():
                with app.app_context(), db.engine.begin() as conn:
                    purged.append(conn.execute(accounts_purge.spent_throttles(now)).rowcount)

            thread = threading.Thread(target=purge)
            thread.start()
            thread.join()
        return where(key)

    login_throttle._where = purge_first
    try:
        attempt = login_throttle.take_guess(name, client, now)
    finally:
        login_throttle._where = where
    assert purged and purged[0] >= 3  # the three spent rows went under the sign-in
    assert attempt is not None
    keys = {(name, client), (name, ""), ("", client)}
    with db.engine.connect() as conn:
        table = LoginThrottle.__table__
        counted = {
            (row.username_key, row.client_key): row.failures
            for row in conn.execute(sa.select(table))
            if (row.username_key, row.client_key) in keys
        }
    assert counted == dict.fromkeys(keys, 1)  # each counter counted the guess, once


@pytest.mark.postgres
def test_a_burst_of_guesses_during_purges_judges_no_more_than_allowed(private_app):
    """Thirty guesses at one name from one client, all at once, while purges run beside
    them, on rows left spent by an old spray: exactly the allowance is judged, the counters
    end locked, and no purge nor guess fails."""
    app, now = private_app, now_utc()
    name, client = "burst-victim", "10.7.7.7"
    allowed = app.config["LOGIN_MAX_FAILURES"]
    with app.app_context():
        for key in [(name, client), (name, ""), ("", client)] + [
            (f"spray-{n}", "") for n in range(50)
        ]:
            db.session.add(
                LoginThrottle(
                    username_key=key[0],
                    client_key=key[1],
                    failures=allowed - 1,
                    window_started_at=now - timedelta(hours=2),
                )
            )
        db.session.commit()
        db.session.remove()
    guesses, purges = 30, 5
    barrier = threading.Barrier(guesses + 1)

    def guess(_):
        with app.app_context():
            barrier.wait(timeout=60)
            return login_throttle.take_guess(name, client, now)

    def purge_again_and_again():
        done = []
        with app.app_context():
            barrier.wait(timeout=60)
            for _ in range(purges):
                with unit_of_work():
                    done.append(accounts_purge.purge(now)["login_throttles"])
        return done

    with ThreadPoolExecutor(max_workers=guesses + 1) as threads:
        purged = threads.submit(purge_again_and_again)
        attempts = list(threads.map(guess, range(guesses)))
        purged = purged.result()
    assert sum(attempt is not None for attempt in attempts) == allowed
    assert sum(purged) >= 50  # the spray's rows went
    with app.app_context():
        row = db.session.get(LoginThrottle, (name, client))
        assert (row.failures, row.window_started_at) == (allowed, now)
        assert row.locked_until is not None and row.locked_until > now
