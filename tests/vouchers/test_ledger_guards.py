"""The database itself guards the books: journal rows cannot be edited or deleted, and on
PostgreSQL a transaction that leaves an entry unbalanced is refused at commit."""

import pytest
import sqlalchemy as sa

from eldercare.db import db
from tests.conftest import ON_POSTGRES
from vouchers.models import JournalEntry, JournalLine, LedgerAccount
from vouchers.pool import ledger


@pytest.fixture
def entry(app_ctx, db_session):
    return ledger.post("topup", "funds", [("funding:central", -1000), ("pool:available", 1000)])


@pytest.mark.parametrize(
    "statement",
    [
        sa.update(JournalLine).values(amount_fen=JournalLine.amount_fen * 2),
        sa.delete(JournalLine),
        sa.update(JournalEntry).values(memo="edited"),
        sa.delete(JournalEntry),
    ],
    ids=["update line", "delete line", "update entry", "delete entry"],
)
def test_journal_rows_cannot_be_edited_or_deleted(entry, db_session, statement):
    table = statement.table.name
    with pytest.raises(sa.exc.DBAPIError, match=f"{table} is append-only"):
        with db_session.begin_nested():
            db_session.execute(statement.where(statement.table.c.id > 0))
    assert db_session.scalar(sa.select(sa.func.count()).select_from(JournalLine)) >= 2
    assert db_session.get(JournalEntry, entry.id).memo == "funds"


def _raw_entry(connection, lines: list[tuple[str, int]]) -> int:
    """An entry written by raw SQL, past ``ledger.post`` and its checks."""
    entries, table = JournalEntry.__table__, JournalLine.__table__
    entry_id = connection.execute(
        entries.insert().values(kind="topup", memo="raw").returning(entries.c.id)
    ).scalar_one()
    for code, amount in lines:
        account_id = connection.scalar(
            sa.select(LedgerAccount.id).where(LedgerAccount.code == code)
        )
        connection.execute(
            table.insert().values(entry_id=entry_id, account_id=account_id, amount_fen=amount)
        )
    return entry_id


@pytest.mark.postgres
def test_an_unbalanced_entry_is_refused_at_commit(private_app):
    with private_app.app_context():
        engine = db.engine
    with engine.connect() as connection:
        # Lines written one by one may not balance until the last: no refusal before commit.
        balanced = _raw_entry(connection, [("funding:central", -500), ("pool:available", 500)])
        connection.commit()
        unbalanced = _raw_entry(connection, [("funding:central", -500), ("pool:available", 499)])
        with pytest.raises(sa.exc.IntegrityError, match=f"journal entry {unbalanced} does not"):
            connection.commit()
        connection.rollback()
        kept = connection.scalars(sa.select(JournalEntry.id).order_by(JournalEntry.id)).all()
    assert kept == [balanced]


@pytest.mark.skipif(ON_POSTGRES, reason="SQLite has no deferred triggers; verify_ledger finds it")
def test_on_sqlite_an_unbalanced_entry_is_found_by_the_reconciliation(entry, db_session):
    unbalanced = _raw_entry(
        db_session.connection(), [("funding:central", -500), ("pool:available", 499)]
    )
    check = ledger.verify_ledger()
    assert not check.ok and check.unbalanced_entries == [unbalanced]
