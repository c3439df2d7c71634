"""bank transfers frozen once made; the statements' freeze extended to every column that
records who did what when (prepared_at, rejected_*, paid_at once paid)

A transfer is what the bank file is built from: its payee, amount and what it pays never
change after the batch is made (an edit would divert a payment the bureau approved). Only
the bank's answer may be written, once, from 'sent' (status, bank_reason,
result_import_id, decided_at); a transfer is never deleted.

Revision ID: 0019
Revises: 0018
"""

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

FROZEN = "('approved', 'paid')"
# Kept in step with 0017's STATEMENT_FIXED (a migration never imports another).
STATEMENT_FIXED_0017 = (
    "provider_id", "month", "seq", "line_count", "subsidy_fen", "card_copay_fen",
    "clawback_fen", "payee_account_name", "payee_bank_name", "payee_account_number",
    "lines_hash", "prepared_by_user_id", "approved_by_user_id", "approved_at",
    "second_approved_by_user_id", "second_approved_at",
)  # fmt: skip
STATEMENT_FIXED = STATEMENT_FIXED_0017 + (
    "prepared_at", "rejected_by_user_id", "rejected_at", "rejection_reason",
)  # fmt: skip
TRANSFER_FIXED = (
    "id", "batch_id", "line_no", "reference", "kind", "statement_id", "fee_refund_id",
    "payee_account_name", "payee_bank_name", "payee_account_number", "amount_fen",
)  # fmt: skip
TRANSFER_ANSWER = ("status", "bank_reason", "result_import_id", "decided_at")


def _statement_pg(fixed, paid_at: bool) -> str:
    changed = " OR ".join(f"NEW.{c} IS DISTINCT FROM OLD.{c}" for c in fixed)
    if paid_at:
        changed += " OR (OLD.status = 'paid' AND NEW.paid_at IS DISTINCT FROM OLD.paid_at)"
    return f"""
        CREATE OR REPLACE FUNCTION statement_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF TG_OP = 'DELETE' THEN
            IF OLD.status IN {FROZEN} THEN
              RAISE EXCEPTION 'statement % is approved: it cannot be deleted', OLD.id;
            END IF;
            RETURN OLD;
          END IF;
          IF OLD.status IN {FROZEN} AND (NEW.status NOT IN {FROZEN}
              OR (OLD.status = 'paid' AND NEW.status <> 'paid') OR {changed}) THEN
            RAISE EXCEPTION 'statement % is approved: its totals cannot change', OLD.id;
          END IF;
          RETURN NEW;
        END $$;
    """


def _statement_sqlite(fixed, paid_at: bool) -> str:
    changed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in fixed)
    if paid_at:
        changed += " OR (OLD.status = 'paid' AND NEW.paid_at IS NOT OLD.paid_at)"
    abort = "BEGIN SELECT RAISE(ABORT, 'the statement is approved: it cannot change'); END"
    return (
        "CREATE TRIGGER statements_frozen_update BEFORE UPDATE ON statements "
        f"WHEN OLD.status IN {FROZEN} AND (NEW.status NOT IN {FROZEN} "
        f"OR (OLD.status = 'paid' AND NEW.status <> 'paid') OR {changed}) {abort}"
    )


def upgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_statement_pg(STATEMENT_FIXED, paid_at=True))
        fixed = " OR ".join(f"NEW.{c} IS DISTINCT FROM OLD.{c}" for c in TRANSFER_FIXED)
        answer = " OR ".join(f"NEW.{c} IS DISTINCT FROM OLD.{c}" for c in TRANSFER_ANSWER)
        op.execute(f"""
            CREATE FUNCTION bank_transfer_fixed() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              IF TG_OP IN ('DELETE', 'TRUNCATE') THEN
                RAISE EXCEPTION 'bank transfers were sent: they cannot be deleted';
              END IF;
              IF {fixed} THEN
                RAISE EXCEPTION 'bank transfer % was sent: its payee and amount cannot change',
                  OLD.id;
              END IF;
              IF OLD.status <> 'sent' AND ({answer}) THEN
                RAISE EXCEPTION 'bank transfer % was decided by the bank: it cannot change',
                  OLD.id;
              END IF;
              RETURN NEW;
            END $$;
            CREATE TRIGGER bank_transfers_fixed BEFORE UPDATE OR DELETE ON bank_transfers
              FOR EACH ROW EXECUTE FUNCTION bank_transfer_fixed();
            CREATE TRIGGER bank_transfers_no_truncate BEFORE TRUNCATE ON bank_transfers
              FOR EACH STATEMENT EXECUTE FUNCTION bank_transfer_fixed();
        """)
    else:
        op.execute("DROP TRIGGER IF EXISTS statements_frozen_update")
        op.execute(_statement_sqlite(STATEMENT_FIXED, paid_at=True))
        fixed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in TRANSFER_FIXED)
        answer = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in TRANSFER_ANSWER)
        abort = "BEGIN SELECT RAISE(ABORT, 'the bank transfer was sent: it cannot change'); END"
        op.execute(
            "CREATE TRIGGER bank_transfers_fixed_update BEFORE UPDATE ON bank_transfers "
            f"WHEN {fixed} OR (OLD.status <> 'sent' AND ({answer})) {abort}"
        )
        op.execute(
            f"CREATE TRIGGER bank_transfers_fixed_delete BEFORE DELETE ON bank_transfers {abort}"
        )


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS bank_transfers_no_truncate ON bank_transfers")
        op.execute("DROP TRIGGER IF EXISTS bank_transfers_fixed ON bank_transfers")
        op.execute("DROP FUNCTION IF EXISTS bank_transfer_fixed()")
        op.execute(_statement_pg(STATEMENT_FIXED_0017, paid_at=False))
    else:
        op.execute("DROP TRIGGER IF EXISTS bank_transfers_fixed_update")
        op.execute("DROP TRIGGER IF EXISTS bank_transfers_fixed_delete")
        op.execute("DROP TRIGGER IF EXISTS statements_frozen_update")
        op.execute(_statement_sqlite(STATEMENT_FIXED_0017, paid_at=False))
