"""ledger guards: journal rows append-only; on PostgreSQL every entry balanced at commit

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03

"""
from alembic import op


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

JOURNAL_TABLES = ("journal_entries", "journal_lines")


# Like the audit trail (0001): the books refuse UPDATE and DELETE in the database itself.
# A correction is a new entry, never an edited one. Alembic does not see triggers, so they
# live here and in no model.
def _append_only_postgresql():
    op.execute(
        """
        CREATE FUNCTION journal_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '% is append-only', TG_TABLE_NAME;
        END $$;
        """
    )
    for table in JOURNAL_TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION journal_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION journal_append_only()"
        )


# Checked at commit (DEFERRABLE INITIALLY DEFERRED), once per line written: the lines of an
# entry are inserted one by one, so the sum is only meaningful when the transaction ends.
# A transaction that leaves any entry it wrote to not summing to zero is refused whole.
def _balanced_at_commit_postgresql():
    op.execute(
        """
        CREATE FUNCTION journal_entry_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
        DECLARE
            total bigint;
        BEGIN
            SELECT COALESCE(SUM(amount_fen), 0) INTO total
              FROM journal_lines WHERE entry_id = NEW.entry_id;
            IF total <> 0 THEN
                RAISE EXCEPTION 'journal entry % does not balance: its lines sum to % fen',
                    NEW.entry_id, total
                    USING ERRCODE = 'check_violation';
            END IF;
            RETURN NULL;
        END $$;
        """
    )
    op.execute(
        "CREATE CONSTRAINT TRIGGER journal_lines_balanced AFTER INSERT ON journal_lines "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION journal_entry_balanced()"
    )


def upgrade():
    if op.get_bind().dialect.name == "postgresql":
        _append_only_postgresql()
        _balanced_at_commit_postgresql()
    else:
        for table in JOURNAL_TABLES:
            for event in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER {table}_no_{event.lower()} BEFORE {event} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
                )


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS journal_lines_balanced ON journal_lines")
        op.execute("DROP FUNCTION IF EXISTS journal_entry_balanced()")
        for table in JOURNAL_TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_change ON {table}")
        op.execute("DROP FUNCTION IF EXISTS journal_append_only()")
    else:
        for table in JOURNAL_TABLES:
            for event in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{event}")
