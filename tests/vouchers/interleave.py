"""Two PostgreSQL sessions in two threads, interleaved at chosen statements.

Each session may pause once, just before or just after its first statement starting with a
given prefix (e.g. after its first ``UPDATE ledger_balances``, when it holds that row lock).
A paused session goes on as soon as the other one has reached its own pause, has finished,
or is waiting for a lock (``pg_stat_activity``): so the interleaving is decided by locks,
never by sleeping a guessed time. On code with a lock-order bug the two sessions then hold
what the other wants and PostgreSQL reports ``DeadlockDetected``; on code without it one of
them waits for the other and both succeed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa

from eldercare.db import db

# A safety net against a hung test, not a timing the test depends on.
_GIVE_UP_AFTER_S = 120


@dataclass(frozen=True)
class Pause:
    when: str  # "before" or "after" the statement
    prefix: str  # e.g. "UPDATE ledger_balances"
    contains: str = ""  # and, when given, holding this too (e.g. "FOR UPDATE")


class Interleaving:
    def __init__(self, app, pauses: dict[str, Pause]):
        self.app = app
        self.pauses = dict(pauses)
        self.pids: dict[str, int] = {}
        self.arrived: set[str] = set()
        self.done: set[str] = set()
        self.paused: set[str] = set()  # whose pause has been used up
        self.local = threading.local()

    # -- the hook ----------------------------------------------------------------------

    def _hook(self, when):
        def listener(conn, cursor, statement, parameters, context, executemany):
            name = getattr(self.local, "name", None)
            pause = self.pauses.get(name)
            if (
                pause is None
                or name in self.paused
                or pause.when != when
                or not statement.lstrip().upper().startswith(pause.prefix.upper())
                or pause.contains.upper() not in statement.upper()
            ):
                return
            self.paused.add(name)
            self.arrived.add(name)
            self._wait_for_the_other(name)

        return listener

    def _wait_for_the_other(self, name: str) -> None:
        others = [n for n in self.names if n != name]
        give_up = time.monotonic() + _GIVE_UP_AFTER_S
        while time.monotonic() < give_up:
            if all(o in self.arrived or o in self.done or self._waits_for_lock(o) for o in others):
                return
            time.sleep(0.005)
        raise RuntimeError(f"{name}: the other session never paused, finished or waited")

    def _waits_for_lock(self, name: str) -> bool:
        pid = self.pids.get(name)
        if pid is None:
            return False
        with self.engine.connect() as conn:
            kind = conn.execute(
                sa.text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :pid"),
                {"pid": pid},
            ).scalar()
        return kind == "Lock"

    # -- running -------------------------------------------------------------------------

    def _session(self, name: str, work: Callable[[], object]):
        self.local.name = name
        with self.app.app_context():
            try:
                self.pids[name] = db.session.scalar(sa.select(sa.func.pg_backend_pid()))
                result = work()
                db.session.commit()
                return result
            except Exception as error:  # reported to the test, which names what went wrong
                db.session.rollback()
                return error
            finally:
                self.done.add(name)
                db.session.remove()

    def run(self, **work: Callable[[], object]) -> dict[str, object]:
        """Run each callable in its own thread and transaction (committed at the end);
        returns each one's result, or the exception it raised."""
        self.names = list(work)
        with self.app.app_context():
            self.engine = db.engine
        before, after = self._hook("before"), self._hook("after")
        sa.event.listen(self.engine, "before_cursor_execute", before)
        sa.event.listen(self.engine, "after_cursor_execute", after)
        results: dict[str, object] = {}
        try:
            threads = [
                threading.Thread(
                    target=lambda n=n, w=w: results.__setitem__(n, self._session(n, w))
                )
                for n, w in work.items()
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            sa.event.remove(self.engine, "before_cursor_execute", before)
            sa.event.remove(self.engine, "after_cursor_execute", after)
        # A pause never reached means the statement it names changed: the test would pass
        # without interleaving anything.
        unreached = set(self.pauses) - self.paused
        if unreached:
            raise AssertionError(f"never reached their pause: {sorted(unreached)} {self.pauses}")
        return results


def set_deadlock_timeout(app, value: str = "50ms") -> None:
    """A short deadlock_timeout for the private database: a deadlock on buggy code is found
    at once instead of after PostgreSQL's default second."""
    with app.app_context():
        name = db.engine.url.database
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f"ALTER DATABASE \"{name}\" SET deadlock_timeout = '{value}'")
        db.engine.dispose()  # new connections pick the setting up
