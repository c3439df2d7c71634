"""Old sign-in rows deleted, daily: job ``accounts-purge``, command ``flask accounts purge``.

Every typed name adds sign-in throttle rows (``eldercare.login_throttle``) and every sign-in
a session row (``eldercare.user_sessions``); nothing else deletes them, so a password spray
of made-up names would grow ``login_throttles`` without bound. One set-based DELETE each:

- a throttle row once its window and its lock have both run out: its window is older than
  the longest window there is (max of ``LOGIN_LOCK_MINUTES`` and ``LOGIN_NAME_LOCK_MINUTES``)
  and it locks nothing. Such a row counts nothing any more (the next guess would start a new
  window), so deleting it changes no decision. Rows a sign-in holds at that moment are
  skipped (``FOR UPDATE SKIP LOCKED``: the purge never waits on, or deadlocks with, a
  sign-in; they go the next day), and a sign-in that finds its row deleted under it counts
  on a new one (``login_throttle.take_guess``).
- a session last used (``last_seen_at``), and revoked if it was, more than
  ``SESSION_KEEP_DAYS`` ago. Recent ones stay, ended or not, to tell who was signed in when
  (audit, forensics); an idle session ends after ``SESSION_IDLE_MINUTES`` anyway, long
  before it is deleted.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app

from eldercare.accounts import LoginThrottle
from eldercare.db import db
from eldercare.timeutil import now_utc
from eldercare.user_sessions import UserSession

SESSION_KEEP_DAYS = 30


def longest_window() -> timedelta:
    config = current_app.config
    return timedelta(minutes=max(config["LOGIN_LOCK_MINUTES"], config["LOGIN_NAME_LOCK_MINUTES"]))


def spent_throttles(now: datetime) -> sa.Delete:
    """The DELETE of the throttle rows whose window and lock have both run out."""
    table = LoginThrottle.__table__
    spent = (
        sa.select(table.c.username_key, table.c.client_key)
        .where(
            sa.or_(
                table.c.window_started_at.is_(None),
                table.c.window_started_at <= now - longest_window(),
            ),
            sa.or_(table.c.locked_until.is_(None), table.c.locked_until <= now),
        )
        .with_for_update(skip_locked=True)  # SQLite renders none: one writer there anyway
    )
    return sa.delete(table).where(sa.tuple_(table.c.username_key, table.c.client_key).in_(spent))


def old_sessions(now: datetime) -> sa.Delete:
    """The DELETE of the sessions last used, and ended if they were, before the kept days."""
    kept_from = now - timedelta(days=SESSION_KEEP_DAYS)
    return sa.delete(UserSession).where(
        UserSession.last_seen_at <= kept_from,
        sa.or_(UserSession.revoked_at.is_(None), UserSession.revoked_at <= kept_from),
    )


def purge(now: datetime | None = None) -> dict:
    """Delete the spent throttle rows and the old sessions; how many of each (the job's
    summary). Runs in the caller's unit of work."""
    now = now or now_utc()
    return {
        "login_throttles": db.session.execute(spent_throttles(now)).rowcount,
        "user_sessions": db.session.execute(old_sessions(now)).rowcount,
    }
