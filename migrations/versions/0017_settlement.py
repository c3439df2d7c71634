"""settlement: months and cut-off, statements and their lines (frozen once approved), payee
changes, bank batches and results, reconciliation runs, the exception queue, redemption flags;
the ledger accounts card co-payments move through; fee refunds' payee accounts

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04 16:32:19.401544

"""
from datetime import date, datetime, timezone

from alembic import op
import sqlalchemy as sa
import eldercare.db


revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('settlement_months',
    sa.Column('month', sa.Date(), nullable=False),
    sa.Column('settles_from', sa.Date(), nullable=False),
    sa.Column('last_run_at', eldercare.db.UTCDateTime(), nullable=True),
    sa.Column('last_run_lines', sa.BigInteger(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('month', name=op.f('pk_settlement_months'))
    )
    op.create_table('bank_batches',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('reference', sa.String(length=32), nullable=False),
    sa.Column('line_count', sa.Integer(), nullable=False),
    sa.Column('total_fen', sa.BigInteger(), nullable=False),
    sa.Column('created_by_user_id', sa.Integer(), nullable=True),
    sa.Column('created_at', eldercare.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['created_by_user_id'], ['users.id'], name=op.f('fk_bank_batches_created_by_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_bank_batches')),
    sa.UniqueConstraint('reference', name=op.f('uq_bank_batches_reference'))
    )
    op.create_table('reconciliation_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('month', sa.Date(), nullable=False),
    sa.Column('started_at', eldercare.db.UTCDateTime(), nullable=False),
    sa.Column('finished_at', eldercare.db.UTCDateTime(), nullable=False),
    sa.Column('ok', sa.Boolean(), nullable=False),
    sa.Column('findings', sa.JSON(), nullable=False),
    sa.Column('requested_by_user_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['requested_by_user_id'], ['users.id'], name=op.f('fk_reconciliation_runs_requested_by_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_reconciliation_runs'))
    )
    with op.batch_alter_table('reconciliation_runs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reconciliation_runs_month'), ['month'], unique=False)

    op.create_table('settlement_exceptions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('source', sa.String(length=20), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('fingerprint', sa.String(length=200), nullable=False),
    sa.Column('month', sa.Date(), nullable=True),
    sa.Column('district_id', sa.Integer(), nullable=True),
    sa.Column('evidence', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('found_at', eldercare.db.UTCDateTime(), nullable=False),
    sa.Column('resolution', sa.Text(), nullable=True),
    sa.Column('resolved_by_user_id', sa.Integer(), nullable=True),
    sa.Column('resolved_at', eldercare.db.UTCDateTime(), nullable=True),
    sa.CheckConstraint("(status = 'resolved') = (resolved_at IS NOT NULL AND resolution IS NOT NULL)", name=op.f('ck_settlement_exceptions_resolved_with_resolution')),
    sa.CheckConstraint("status IN ('open', 'resolved')", name=op.f('ck_settlement_exceptions_known_status')),
    sa.ForeignKeyConstraint(['district_id'], ['districts.id'], name=op.f('fk_settlement_exceptions_district_id_districts')),
    sa.ForeignKeyConstraint(['resolved_by_user_id'], ['users.id'], name=op.f('fk_settlement_exceptions_resolved_by_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_settlement_exceptions'))
    )
    with op.batch_alter_table('settlement_exceptions', schema=None) as batch_op:
        batch_op.create_index('ix_settlement_exceptions_status', ['status', 'found_at'], unique=False)
        batch_op.create_index('uq_settlement_exceptions_open', ['fingerprint'], unique=True, sqlite_where=sa.text("status = 'open'"), postgresql_where=sa.text("status = 'open'"))

    op.create_table('settlement_rules',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('effective_from', sa.Date(), nullable=False),
    sa.Column('second_approval_above_fen', sa.BigInteger(), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('created_by_user_id', sa.Integer(), nullable=True),
    sa.Column('created_at', eldercare.db.UTCDateTime(), nullable=False),
    sa.CheckConstraint('second_approval_above_fen > 0', name=op.f('ck_settlement_rules_threshold')),
    sa.ForeignKeyConstraint(['created_by_user_id'], ['users.id'], name=op.f('fk_settlement_rules_created_by_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_settlement_rules')),
    sa.UniqueConstraint('effective_from', name=op.f('uq_settlement_rules_effective_from'))
    )
    op.create_table('bank_result_imports',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('file_sha256', sa.String(length=64), nullable=False),
    sa.Column('file_name', sa.String(length=200), nullable=False),
    sa.Column('paid_count', sa.Integer(), nullable=False),
    sa.Column('failed_count', sa.Integer(), nullable=False),
    sa.Column('exception_count', sa.Integer(), nullable=False),
    sa.Column('imported_by_user_id', sa.Integer(), nullable=True),
    sa.Column('imported_at', eldercare.db.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['batch_id'], ['bank_batches.id'], name=op.f('fk_bank_result_imports_batch_id_bank_batches')),
    sa.ForeignKeyConstraint(['imported_by_user_id'], ['users.id'], name=op.f('fk_bank_result_imports_imported_by_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_bank_result_imports')),
    sa.UniqueConstraint('file_sha256', name=op.f('uq_bank_result_imports_file_sha256'))
    )
    with op.batch_alter_table('bank_result_imports', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_bank_result_imports_batch_id'), ['batch_id'], unique=False)

    op.create_table('payee_changes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('provider_id', sa.Integer(), nullable=False),
    sa.Column('account_name', sa.String(length=120), nullable=False),
    sa.Column('bank_name', sa.String(length=120), nullable=False),
    sa.Column('account_number', sa.String(length=40), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('requested_by_user_id', sa.Integer(), nullable=False),
    sa.Column('requested_at', eldercare.db.UTCDateTime(), nullable=False),
    sa.Column('decided_by_user_id', sa.Integer(), nullable=True),
    sa.Column('decided_at', eldercare.db.UTCDateTime(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.CheckConstraint("status IN ('pending', 'approved', 'rejected')", name=op.f('ck_payee_changes_known_status')),
    sa.CheckConstraint('decided_by_user_id IS NULL OR decided_by_user_id <> requested_by_user_id', name=op.f('ck_payee_changes_decider_not_requester')),
    sa.ForeignKeyConstraint(['decided_by_user_id'], ['users.id'], name=op.f('fk_payee_changes_decided_by_user_id_users')),
    sa.ForeignKeyConstraint(['provider_id'], ['providers.id'], name=op.f('fk_payee_changes_provider_id_providers')),
    sa.ForeignKeyConstraint(['requested_by_user_id'], ['users.id'], name=op.f('fk_payee_changes_requested_by_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payee_changes'))
    )
    with op.batch_alter_table('payee_changes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_payee_changes_provider_id'), ['provider_id'], unique=False)
        batch_op.create_index('uq_payee_changes_pending', ['provider_id'], unique=True, sqlite_where=sa.text("status = 'pending'"), postgresql_where=sa.text("status = 'pending'"))

    op.create_table('statements',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('provider_id', sa.Integer(), nullable=False),
    sa.Column('month', sa.Date(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('line_count', sa.BigInteger(), nullable=False),
    sa.Column('subsidy_fen', sa.BigInteger(), nullable=False),
    sa.Column('card_copay_fen', sa.BigInteger(), nullable=False),
    sa.Column('clawback_fen', sa.BigInteger(), nullable=False),
    sa.Column('payee_account_name', sa.String(length=120), nullable=False),
    sa.Column('payee_bank_name', sa.String(length=120), nullable=False),
    sa.Column('payee_account_number', sa.String(length=40), nullable=False),
    sa.Column('lines_hash', sa.String(length=64), nullable=True),
    sa.Column('prepared_by_user_id', sa.Integer(), nullable=True),
    sa.Column('prepared_at', eldercare.db.UTCDateTime(), nullable=False),
    sa.Column('approved_by_user_id', sa.Integer(), nullable=True),
    sa.Column('approved_at', eldercare.db.UTCDateTime(), nullable=True),
    sa.Column('second_approved_by_user_id', sa.Integer(), nullable=True),
    sa.Column('second_approved_at', eldercare.db.UTCDateTime(), nullable=True),
    sa.Column('rejected_by_user_id', sa.Integer(), nullable=True),
    sa.Column('rejected_at', eldercare.db.UTCDateTime(), nullable=True),
    sa.Column('rejection_reason', sa.Text(), nullable=True),
    sa.Column('paid_at', eldercare.db.UTCDateTime(), nullable=True),
    sa.CheckConstraint("status IN ('prepared', 'awaiting_second', 'approved', 'paid', 'rejected')", name=op.f('ck_statements_known_status')),
    sa.CheckConstraint('approved_by_user_id IS NULL OR approved_by_user_id <> prepared_by_user_id', name=op.f('ck_statements_checker_not_maker')),
    sa.CheckConstraint('rejected_by_user_id IS NULL OR rejected_by_user_id <> prepared_by_user_id', name=op.f('ck_statements_rejecter_not_maker')),
    sa.CheckConstraint('second_approved_by_user_id IS NULL OR (second_approved_by_user_id <> approved_by_user_id AND second_approved_by_user_id <> prepared_by_user_id)', name=op.f('ck_statements_second_checker_differs')),
    sa.CheckConstraint('subsidy_fen >= 0 AND card_copay_fen >= 0 AND clawback_fen >= 0 AND clawback_fen <= subsidy_fen AND line_count >= 0', name=op.f('ck_statements_amounts')),
    sa.ForeignKeyConstraint(['approved_by_user_id'], ['users.id'], name=op.f('fk_statements_approved_by_user_id_users')),
    sa.ForeignKeyConstraint(['prepared_by_user_id'], ['users.id'], name=op.f('fk_statements_prepared_by_user_id_users')),
    sa.ForeignKeyConstraint(['provider_id'], ['providers.id'], name=op.f('fk_statements_provider_id_providers')),
    sa.ForeignKeyConstraint(['rejected_by_user_id'], ['users.id'], name=op.f('fk_statements_rejected_by_user_id_users')),
    sa.ForeignKeyConstraint(['second_approved_by_user_id'], ['users.id'], name=op.f('fk_statements_second_approved_by_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_statements')),
    sa.UniqueConstraint('provider_id', 'month', 'seq', name=op.f('uq_statements_provider_id_month_seq'))
    )
    with op.batch_alter_table('statements', schema=None) as batch_op:
        batch_op.create_index('ix_statements_month_status', ['month', 'status'], unique=False)
        batch_op.create_index(batch_op.f('ix_statements_provider_id'), ['provider_id'], unique=False)
        batch_op.create_index('uq_statements_open', ['provider_id', 'month'], unique=True, sqlite_where=sa.text("status IN ('prepared', 'awaiting_second')"), postgresql_where=sa.text("status IN ('prepared', 'awaiting_second')"))

    op.create_table('bank_transfers',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('line_no', sa.Integer(), nullable=False),
    sa.Column('reference', sa.String(length=40), nullable=False),
    sa.Column('kind', sa.String(length=12), nullable=False),
    sa.Column('statement_id', sa.Integer(), nullable=True),
    sa.Column('fee_refund_id', sa.Integer(), nullable=True),
    sa.Column('payee_account_name', sa.String(length=120), nullable=False),
    sa.Column('payee_bank_name', sa.String(length=120), nullable=False),
    sa.Column('payee_account_number', sa.String(length=40), nullable=False),
    sa.Column('amount_fen', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=8), nullable=False),
    sa.Column('bank_reason', sa.String(length=200), nullable=True),
    sa.Column('result_import_id', sa.Integer(), nullable=True),
    sa.Column('decided_at', eldercare.db.UTCDateTime(), nullable=True),
    sa.CheckConstraint("(kind = 'statement') = (statement_id IS NOT NULL) AND (kind = 'fee_refund') = (fee_refund_id IS NOT NULL)", name=op.f('ck_bank_transfers_pays_one_thing')),
    sa.CheckConstraint("kind IN ('statement', 'fee_refund')", name=op.f('ck_bank_transfers_known_kind')),
    sa.CheckConstraint("status IN ('sent', 'paid', 'failed')", name=op.f('ck_bank_transfers_known_status')),
    sa.CheckConstraint('amount_fen > 0', name=op.f('ck_bank_transfers_amount')),
    sa.ForeignKeyConstraint(['batch_id'], ['bank_batches.id'], name=op.f('fk_bank_transfers_batch_id_bank_batches')),
    sa.ForeignKeyConstraint(['fee_refund_id'], ['assessment_fee_refunds.id'], name=op.f('fk_bank_transfers_fee_refund_id_assessment_fee_refunds')),
    sa.ForeignKeyConstraint(['result_import_id'], ['bank_result_imports.id'], name=op.f('fk_bank_transfers_result_import_id_bank_result_imports')),
    sa.ForeignKeyConstraint(['statement_id'], ['statements.id'], name=op.f('fk_bank_transfers_statement_id_statements')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_bank_transfers')),
    sa.UniqueConstraint('batch_id', 'line_no', name=op.f('uq_bank_transfers_batch_id_line_no')),
    sa.UniqueConstraint('reference', name=op.f('uq_bank_transfers_reference'))
    )
    with op.batch_alter_table('bank_transfers', schema=None) as batch_op:
        batch_op.create_index('uq_bank_transfers_fee_refund_live', ['fee_refund_id'], unique=True, sqlite_where=sa.text("status <> 'failed'"), postgresql_where=sa.text("status <> 'failed'"))
        batch_op.create_index('uq_bank_transfers_statement_live', ['statement_id'], unique=True, sqlite_where=sa.text("status <> 'failed'"), postgresql_where=sa.text("status <> 'failed'"))

    op.create_table('redemption_flags',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('redemption_id', sa.Integer(), nullable=False),
    sa.Column('rule', sa.String(length=40), nullable=False),
    sa.Column('evidence', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('raised_by_user_id', sa.Integer(), nullable=True),
    sa.Column('raised_at', eldercare.db.UTCDateTime(), nullable=False),
    sa.Column('decided_by_user_id', sa.Integer(), nullable=True),
    sa.Column('decided_at', eldercare.db.UTCDateTime(), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.CheckConstraint("(status = 'open') = (decided_at IS NULL)", name=op.f('ck_redemption_flags_decided_unless_open')),
    sa.CheckConstraint("status IN ('open', 'cleared', 'rejected')", name=op.f('ck_redemption_flags_known_status')),
    sa.ForeignKeyConstraint(['decided_by_user_id'], ['users.id'], name=op.f('fk_redemption_flags_decided_by_user_id_users')),
    sa.ForeignKeyConstraint(['raised_by_user_id'], ['users.id'], name=op.f('fk_redemption_flags_raised_by_user_id_users')),
    sa.ForeignKeyConstraint(['redemption_id'], ['redemptions.id'], name=op.f('fk_redemption_flags_redemption_id_redemptions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_redemption_flags'))
    )
    with op.batch_alter_table('redemption_flags', schema=None) as batch_op:
        batch_op.create_index('ix_redemption_flags_open', ['redemption_id'], unique=False, sqlite_where=sa.text("status = 'open'"), postgresql_where=sa.text("status = 'open'"))
        batch_op.create_index(batch_op.f('ix_redemption_flags_redemption_id'), ['redemption_id'], unique=False)

    op.create_table('statement_lines',
    sa.Column('redemption_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('statement_id', sa.Integer(), nullable=False),
    sa.Column('district_id', sa.Integer(), nullable=False),
    sa.Column('price_fen', sa.BigInteger(), nullable=False),
    sa.Column('insurance_fen', sa.BigInteger(), nullable=False),
    sa.Column('subsidy_fen', sa.BigInteger(), nullable=False),
    sa.Column('copay_fen', sa.BigInteger(), nullable=False),
    sa.Column('payment_method', sa.String(length=8), nullable=False),
    sa.Column('card_copay_fen', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['district_id'], ['districts.id'], name=op.f('fk_statement_lines_district_id_districts')),
    sa.ForeignKeyConstraint(['redemption_id'], ['redemptions.id'], name=op.f('fk_statement_lines_redemption_id_redemptions')),
    sa.ForeignKeyConstraint(['statement_id'], ['statements.id'], name=op.f('fk_statement_lines_statement_id_statements')),
    sa.PrimaryKeyConstraint('redemption_id', name=op.f('pk_statement_lines'))
    )
    with op.batch_alter_table('statement_lines', schema=None) as batch_op:
        batch_op.create_index('ix_statement_lines_statement', ['statement_id', 'redemption_id'], unique=False)

    with op.batch_alter_table('assessment_fee_refunds', schema=None) as batch_op:
        batch_op.add_column(sa.Column('payee_account_name', sa.String(length=120), nullable=True))
        batch_op.add_column(sa.Column('payee_bank_name', sa.String(length=120), nullable=True))
        batch_op.add_column(sa.Column('payee_account_number', sa.String(length=40), nullable=True))
    _seed()
    _backfill_card_copayments()
    if op.get_bind().dialect.name == "postgresql":
        _freeze_postgresql()
    else:
        _freeze_sqlite()


# Kept in step with vouchers.pool.ledger.SHARDED_ACCOUNTS (a migration never imports the app):
# every card redemption moves these two, so they are sharded like the others it moves.
SHARDED = {"gateway:clearing": 32, "copay:card": 32}
ACCOUNTS = [  # code, name, may go negative
    ("gateway:clearing", "Card co-payments held by the gateway, not yet paid out", False),
    ("copay:card", "Card co-payments elders paid (net of refunds)", True),
    ("copay:paid_out", "Card co-payments paid out to providers", False),
    ("fee_refunds:payable", "Assessment fee refunds in a bank batch, awaiting the bank", False),
    ("returns:clawback", "Clawbacks providers still owe (the other side of their receivables)", True),
]
FROZEN = "('approved', 'paid')"


def _seed():
    accounts = sa.table(
        "ledger_accounts", sa.column("code", sa.String), sa.column("name", sa.String),
        sa.column("may_go_negative", sa.Boolean), sa.column("shards", sa.Integer),
    )
    op.bulk_insert(accounts, [
        {"code": code, "name": name, "may_go_negative": negative, "shards": SHARDED.get(code, 1)}
        for code, name, negative in ACCOUNTS
    ])
    for code, _, negative in ACCOUNTS:
        for shard in range(SHARDED.get(code, 1)):
            sharded = code in SHARDED
            op.execute(
                "INSERT INTO ledger_balances (account_id, shard, balance_fen, may_go_negative) "
                f"SELECT id, {shard}, 0, {'true' if negative or sharded else 'false'} "
                f"FROM ledger_accounts WHERE code = '{code}'"
            )
    rules = sa.table(
        "settlement_rules", sa.column("effective_from", sa.Date),
        sa.column("second_approval_above_fen", sa.BigInteger), sa.column("note", sa.Text),
        sa.column("created_at", eldercare.db.UTCDateTime),
    )
    op.bulk_insert(rules, [{
        "effective_from": date(2025, 7, 1),
        "second_approval_above_fen": 100_000_000,  # 1 million yuan
        "note": "settlement.rules.pilot_defaults",
        "created_at": datetime(2025, 7, 1, tzinfo=timezone.utc),
    }])


def _backfill_card_copayments():
    """Card co-payments captured before this revision never entered the books: one entry
    brings their sum in (elders' card payments -> the gateway clearing account), so the
    gateway reconciliation starts from what the gateway really holds."""
    bind = op.get_bind()
    total = bind.scalar(sa.text(
        "SELECT COALESCE(SUM(copay_fen), 0) FROM redemptions "
        "WHERE status = 'redeemed' AND payment_method = 'card'"
    ))
    if not total:
        return
    entries = sa.table(
        "journal_entries", sa.column("id", sa.Integer), sa.column("kind", sa.String),
        sa.column("occurred_at", eldercare.db.UTCDateTime), sa.column("memo", sa.String),
        sa.column("cause_type", sa.String), sa.column("cause_id", sa.String),
    )
    entry_id = bind.execute(entries.insert().values(
        kind="capture", occurred_at=datetime.now(timezone.utc),
        memo="card co-payments captured before settlement (migration 0017)",
        cause_type="migration", cause_id="0017",
    ).returning(entries.c.id)).scalar_one()
    for code, amount in (("copay:card", -total), ("gateway:clearing", total)):
        bind.execute(sa.text(
            "INSERT INTO journal_lines (entry_id, account_id, amount_fen) "
            "SELECT :entry, id, :amount FROM ledger_accounts WHERE code = :code"
        ), {"entry": entry_id, "amount": amount, "code": code})
        bind.execute(sa.text(
            "UPDATE ledger_balances SET balance_fen = balance_fen + :amount WHERE shard = 0 "
            "AND account_id = (SELECT id FROM ledger_accounts WHERE code = :code)"
        ), {"amount": amount, "code": code})


# What may change on an approved statement: only approved -> paid, with paid_at.
STATEMENT_FIXED = (
    "provider_id", "month", "seq", "line_count", "subsidy_fen", "card_copay_fen",
    "clawback_fen", "payee_account_name", "payee_bank_name", "payee_account_number",
    "lines_hash", "prepared_by_user_id", "approved_by_user_id", "approved_at",
    "second_approved_by_user_id", "second_approved_at",
)


def _freeze_postgresql():
    changed = " OR ".join(f"NEW.{c} IS DISTINCT FROM OLD.{c}" for c in STATEMENT_FIXED)
    op.execute(f"""
        CREATE FUNCTION statement_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
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
        CREATE TRIGGER statements_frozen BEFORE UPDATE OR DELETE ON statements
          FOR EACH ROW EXECUTE FUNCTION statement_frozen();
        CREATE FUNCTION statement_line_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          -- Statement-level, over the rows the statement changed (a transition table): a
          -- settlement run inserts a month's lines in one INSERT, and a row-level check cost
          -- more than the insert itself.
          IF TG_OP = 'TRUNCATE' OR EXISTS (SELECT 1 FROM changed_rows c
                JOIN statements s ON s.id = c.statement_id WHERE s.status IN {FROZEN}) THEN
            RAISE EXCEPTION 'the statement is approved: its lines cannot change';
          END IF;
          RETURN NULL;
        END $$;
        CREATE TRIGGER statement_lines_frozen_insert AFTER INSERT ON statement_lines
          REFERENCING NEW TABLE AS changed_rows
          FOR EACH STATEMENT EXECUTE FUNCTION statement_line_frozen();
        CREATE TRIGGER statement_lines_frozen_update_old AFTER UPDATE ON statement_lines
          REFERENCING OLD TABLE AS changed_rows
          FOR EACH STATEMENT EXECUTE FUNCTION statement_line_frozen();
        CREATE TRIGGER statement_lines_frozen_update_new AFTER UPDATE ON statement_lines
          REFERENCING NEW TABLE AS changed_rows
          FOR EACH STATEMENT EXECUTE FUNCTION statement_line_frozen();
        CREATE TRIGGER statement_lines_frozen_delete AFTER DELETE ON statement_lines
          REFERENCING OLD TABLE AS changed_rows
          FOR EACH STATEMENT EXECUTE FUNCTION statement_line_frozen();
        CREATE TRIGGER statement_lines_no_truncate BEFORE TRUNCATE ON statement_lines
          FOR EACH STATEMENT EXECUTE FUNCTION statement_line_frozen();
    """)


def _freeze_sqlite():
    changed = " OR ".join(f"NEW.{c} IS NOT OLD.{c}" for c in STATEMENT_FIXED)
    abort = "BEGIN SELECT RAISE(ABORT, 'the statement is approved: it cannot change'); END"
    op.execute(
        "CREATE TRIGGER statements_frozen_update BEFORE UPDATE ON statements "
        f"WHEN OLD.status IN {FROZEN} AND (NEW.status NOT IN {FROZEN} "
        f"OR (OLD.status = 'paid' AND NEW.status <> 'paid') OR {changed}) {abort}"
    )
    op.execute(
        f"CREATE TRIGGER statements_frozen_delete BEFORE DELETE ON statements "
        f"WHEN OLD.status IN {FROZEN} {abort}"
    )
    frozen = "(SELECT status FROM statements WHERE id = {}.statement_id) IN " + FROZEN
    op.execute(
        "CREATE TRIGGER statement_lines_frozen_insert BEFORE INSERT ON statement_lines "
        f"WHEN {frozen.format('NEW')} {abort}"
    )
    op.execute(
        "CREATE TRIGGER statement_lines_frozen_update BEFORE UPDATE ON statement_lines "
        f"WHEN {frozen.format('OLD')} OR {frozen.format('NEW')} {abort}"
    )
    op.execute(
        "CREATE TRIGGER statement_lines_frozen_delete BEFORE DELETE ON statement_lines "
        f"WHEN {frozen.format('OLD')} {abort}"
    )


def downgrade():
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS statement_lines_no_truncate ON statement_lines")
        for name in ("insert", "update_old", "update_new", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS statement_lines_frozen_{name} ON statement_lines")
        op.execute("DROP TRIGGER IF EXISTS statements_frozen ON statements")
        op.execute("DROP FUNCTION IF EXISTS statement_line_frozen()")
        op.execute("DROP FUNCTION IF EXISTS statement_frozen()")
    else:
        for name in ("statements_frozen_update", "statements_frozen_delete",
                     "statement_lines_frozen_insert", "statement_lines_frozen_update",
                     "statement_lines_frozen_delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    # The seeded accounts stay only if something moved them (the journal is append-only).
    codes = ", ".join(f"'{code}'" for code, _, _ in ACCOUNTS)
    op.execute(
        "DELETE FROM ledger_balances WHERE account_id IN (SELECT id FROM ledger_accounts "
        f"WHERE code IN ({codes}) AND id NOT IN (SELECT account_id FROM journal_lines))"
    )
    op.execute(
        f"DELETE FROM ledger_accounts WHERE code IN ({codes}) "
        "AND id NOT IN (SELECT account_id FROM journal_lines)"
    )
    with op.batch_alter_table('assessment_fee_refunds', schema=None) as batch_op:
        batch_op.drop_column('payee_account_number')
        batch_op.drop_column('payee_bank_name')
        batch_op.drop_column('payee_account_name')

    with op.batch_alter_table('statement_lines', schema=None) as batch_op:
        batch_op.drop_index('ix_statement_lines_statement')

    op.drop_table('statement_lines')
    with op.batch_alter_table('redemption_flags', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_redemption_flags_redemption_id'))
        batch_op.drop_index('ix_redemption_flags_open', sqlite_where=sa.text("status = 'open'"), postgresql_where=sa.text("status = 'open'"))

    op.drop_table('redemption_flags')
    with op.batch_alter_table('bank_transfers', schema=None) as batch_op:
        batch_op.drop_index('uq_bank_transfers_statement_live', sqlite_where=sa.text("status <> 'failed'"), postgresql_where=sa.text("status <> 'failed'"))
        batch_op.drop_index('uq_bank_transfers_fee_refund_live', sqlite_where=sa.text("status <> 'failed'"), postgresql_where=sa.text("status <> 'failed'"))

    op.drop_table('bank_transfers')
    with op.batch_alter_table('statements', schema=None) as batch_op:
        batch_op.drop_index('uq_statements_open', sqlite_where=sa.text("status IN ('prepared', 'awaiting_second')"), postgresql_where=sa.text("status IN ('prepared', 'awaiting_second')"))
        batch_op.drop_index(batch_op.f('ix_statements_provider_id'))
        batch_op.drop_index('ix_statements_month_status')

    op.drop_table('statements')
    with op.batch_alter_table('payee_changes', schema=None) as batch_op:
        batch_op.drop_index('uq_payee_changes_pending', sqlite_where=sa.text("status = 'pending'"), postgresql_where=sa.text("status = 'pending'"))
        batch_op.drop_index(batch_op.f('ix_payee_changes_provider_id'))

    op.drop_table('payee_changes')
    with op.batch_alter_table('bank_result_imports', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_bank_result_imports_batch_id'))

    op.drop_table('bank_result_imports')
    op.drop_table('settlement_rules')
    with op.batch_alter_table('settlement_exceptions', schema=None) as batch_op:
        batch_op.drop_index('uq_settlement_exceptions_open', sqlite_where=sa.text("status = 'open'"), postgresql_where=sa.text("status = 'open'"))
        batch_op.drop_index('ix_settlement_exceptions_status')

    op.drop_table('settlement_exceptions')
    with op.batch_alter_table('reconciliation_runs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reconciliation_runs_month'))

    op.drop_table('reconciliation_runs')
    op.drop_table('bank_batches')
    op.drop_table('settlement_months')
