"""Declarative base, column types and the unit-of-work helper shared by every package.

Service functions only ``flush()``; the request wrapper, a CLI command or a job decides
whether the unit of work commits (see ``unit_of_work`` and ``eldercare.errors``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase

# Constraint names must be deterministic so that Alembic revisions can drop and
# alter them on both SQLite (batch mode) and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


# The largest row id an INTEGER primary key holds; a larger number in a URL or a request
# names no row (and would overflow the database driver).
ROW_ID_MAX = 2**31 - 1


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


db = SQLAlchemy(model_class=Base)


class UTCDateTime(sa.types.TypeDecorator):
    """A timestamp stored as naive UTC and always returned timezone-aware.

    SQLite has no time zones and PostgreSQL's ``timestamptz`` would convert on the
    way out according to the session zone; storing naive UTC behaves the same on both.
    """

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(
                "naive datetime given to a UTC column; use eldercare.timeutil.now_utc()"
            )
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


@contextmanager
def unit_of_work() -> Iterator[None]:
    """Commit what the block did, or roll all of it back if the block raised.

    For CLI commands and scheduled jobs; web requests get the same rule from
    ``eldercare.errors.register``.
    """
    try:
        yield
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise


def is_transient(error: BaseException) -> bool:
    """A failure of the moment rather than of the work: a deadlock, a serialization failure
    or a lock timeout (all OperationalError on PostgreSQL), a dropped connection. Worth
    retrying; never worth hiding."""
    if isinstance(error, sa.exc.OperationalError):
        return True
    return isinstance(error, sa.exc.DBAPIError) and error.connection_invalidated
