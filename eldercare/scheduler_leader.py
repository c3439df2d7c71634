"""One active scheduler per database; any other waits, ready to take over.

Every job is idempotent, so two schedulers would do nothing twice; but on several hosts each
one would run every job, doubling the load on the 1st of the month and racing for the same
rows. So `flask scheduler run` first takes a PostgreSQL session-level advisory lock on a
connection of its own and keeps it for as long as it runs. A second scheduler (on this host or
another) finds the lock taken and stands by, asking again every few seconds; when the active
one stops or dies, its connection closes, PostgreSQL frees the lock, and the standby takes over
and catches up (every job is a catch-up).

A scheduler that loses its connection has lost the lock too (another may have taken it), so a
watchdog checks the connection and stops the scheduler when it is gone; the process exits
non-zero and whatever supervises it starts it again, to stand by or to lead.

SQLite (the demo) has one machine and one file: there the scheduler is always the leader.
"""

from __future__ import annotations

import logging
import threading

import sqlalchemy as sa

log = logging.getLogger(__name__)

# Any constant works; it names the advisory lock that only the active scheduler holds.
LEADER_LOCK_KEY = 7_305_420_195


class Leadership:
    def __init__(self, engine: sa.Engine):
        self.engine = engine
        self.connection: sa.Connection | None = None

    @property
    def needs_lock(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def try_acquire(self) -> bool:
        """Take the lock if it is free; True when this process now leads."""
        if not self.needs_lock:
            return True
        if self.connection is not None:
            return True
        # Autocommit: the lock belongs to the session, and no transaction stays open on the
        # connection for the scheduler's lifetime (it would hold back vacuum).
        connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            got = connection.scalar(sa.select(sa.func.pg_try_advisory_lock(LEADER_LOCK_KEY)))
        except Exception:
            connection.close()
            raise
        if not got:
            connection.close()
            return False
        self.connection = connection
        return True

    def wait(self, poll_seconds: float, stop: threading.Event | None = None) -> bool:
        """Stand by until the lock is free (True) or ``stop`` is set (False)."""
        stop = stop or threading.Event()
        while not stop.is_set():
            if self.try_acquire():
                return True
            stop.wait(poll_seconds)
        return False

    def still_held(self) -> bool:
        """Whether the connection holding the lock is still alive (and so the lock ours)."""
        if not self.needs_lock:
            return True
        if self.connection is None:
            return False
        try:
            self.connection.scalar(sa.select(1))
        except sa.exc.SQLAlchemyError:
            # Gone for good: a Connection would reconnect on its next use, to a new session
            # that does not hold the lock.
            self._drop()
            return False
        return True

    def _drop(self) -> None:
        connection, self.connection = self.connection, None
        try:
            connection.invalidate()
            connection.close()
        except sa.exc.SQLAlchemyError:
            pass

    def release(self) -> None:
        if self.connection is None:
            return
        try:
            self.connection.scalar(sa.select(sa.func.pg_advisory_unlock(LEADER_LOCK_KEY)))
        except sa.exc.SQLAlchemyError:
            self._drop()  # the connection is gone, and the lock with it
            return
        self.connection.close()
        self.connection = None


def watch(leadership: Leadership, on_lost, interval_seconds: float) -> threading.Event:
    """Check every ``interval_seconds`` that the lock is still held; call ``on_lost()`` once
    when it is not. Returns the event that stops the watch."""
    stop = threading.Event()

    def run() -> None:
        while not stop.wait(interval_seconds):
            if not leadership.still_held():
                log.error("the scheduler lost its database connection and with it the lock")
                on_lost()
                return

    threading.Thread(target=run, name="scheduler-leadership", daemon=True).start()
    return stop
