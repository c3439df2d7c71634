"""Work committed on a connection of its own, apart from the request's transaction.

Attempt counters (a printed card's PIN, sign-ins) must count a guess BEFORE judging it, and
the count must survive the request: a wrong guess fails its request, which rolls back. So
the counting statement runs in a short transaction on another connection, committed at once;
its row locks order guesses sent at the same moment and the commit makes each count visible
to the next.

PostgreSQL only. On SQLite (one writer at a time, development) a second connection would wait
for the request's own write lock, so callers count in the request's transaction instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from eldercare.db import db


def available() -> bool:
    return db.session.get_bind().dialect.name == "postgresql"


@contextmanager
def transaction() -> Iterator[sa.Connection]:
    """A transaction on a connection of its own: committed when the block ends normally,
    rolled back if it raises. A lock held elsewhere for more than 5 s raises
    ``sqlalchemy.exc.OperationalError`` rather than keep the request waiting."""
    with db.engine.connect() as conn, conn.begin():
        conn.execute(sa.text("SET LOCAL lock_timeout = '5s'"))
        yield conn
