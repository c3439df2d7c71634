"""ledger balances in shard rows (the accounts every redemption moves get 32), stored ledger
checks, and the indexes reconciliation and the lists use

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03

Upgrade moves each account's balance into its shard 0 and gives ``vouchers:outstanding``,
``vouchers:held`` and ``redeemed:unsettled`` 31 more, empty shards. Downgrade puts the sum
of each account's shards back into ``ledger_accounts.balance_fen``: no money is lost either
way, and ``flask vouchers verify-ledger`` proves it afterwards.
"""
from alembic import op
import sqlalchemy as sa
import eldercare.db


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None

# Kept in step with vouchers.pool.ledger.SHARDED_ACCOUNTS (a migration never imports the app).
SHARDED = {"vouchers:outstanding": 32, "vouchers:held": 32, "redeemed:unsettled": 32}


def upgrade():
    op.create_table('ledger_balances',
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('shard', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('balance_fen', sa.BigInteger(), nullable=False),
    sa.Column('may_go_negative', sa.Boolean(), nullable=False),
    sa.CheckConstraint('may_go_negative OR balance_fen >= 0', name=op.f('ck_ledger_balances_not_negative')),
    sa.CheckConstraint('shard >= 0', name=op.f('ck_ledger_balances_shard')),
    sa.ForeignKeyConstraint(['account_id'], ['ledger_accounts.id'], name=op.f('fk_ledger_balances_account_id_ledger_accounts')),
    sa.PrimaryKeyConstraint('account_id', 'shard', name=op.f('pk_ledger_balances'))
    )
    with op.batch_alter_table('ledger_accounts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('shards', sa.Integer(), server_default='1', nullable=False))
    codes = ", ".join(f"'{code}'" for code in SHARDED)
    op.execute(
        "INSERT INTO ledger_balances (account_id, shard, balance_fen, may_go_negative) "
        f"SELECT id, 0, balance_fen, may_go_negative OR code IN ({codes}) FROM ledger_accounts"
    )
    for code, shards in SHARDED.items():
        op.execute(f"UPDATE ledger_accounts SET shards = {shards} WHERE code = '{code}'")
        for shard in range(1, shards):
            op.execute(
                "INSERT INTO ledger_balances (account_id, shard, balance_fen, may_go_negative) "
                f"SELECT id, {shard}, 0, true FROM ledger_accounts WHERE code = '{code}'"
            )
    with op.batch_alter_table('ledger_accounts', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_ledger_accounts_not_negative'), type_='check')
        batch_op.drop_column('balance_fen')
        batch_op.create_check_constraint(
            batch_op.f('ck_ledger_accounts_shards'), 'shards >= 1 AND shards <= 256'
        )

    op.create_table('ledger_checks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('started_at', eldercare.db.UTCDateTime(), nullable=False),
    sa.Column('finished_at', eldercare.db.UTCDateTime(), nullable=False),
    sa.Column('ok', sa.Boolean(), nullable=False),
    sa.Column('findings', sa.JSON(), nullable=False),
    sa.Column('journal_lines', sa.BigInteger(), nullable=False),
    sa.Column('requested_by_user_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['requested_by_user_id'], ['users.id'], name=op.f('fk_ledger_checks_requested_by_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ledger_checks'))
    )
    with op.batch_alter_table('ledger_checks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ledger_checks_started_at'), ['started_at'], unique=False)

    with op.batch_alter_table('journal_entries', schema=None) as batch_op:
        batch_op.create_index('ix_journal_entries_cause', ['cause_type', 'cause_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_journal_entries_occurred_at'), ['occurred_at'], unique=False)
    with op.batch_alter_table('redemptions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_redemptions_checked_in_at'), ['checked_in_at'], unique=False)


def downgrade():
    with op.batch_alter_table('redemptions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_redemptions_checked_in_at'))
    with op.batch_alter_table('journal_entries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_journal_entries_occurred_at'))
        batch_op.drop_index('ix_journal_entries_cause')
    with op.batch_alter_table('ledger_checks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ledger_checks_started_at'))
    op.drop_table('ledger_checks')

    with op.batch_alter_table('ledger_accounts', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_ledger_accounts_shards'), type_='check')
        batch_op.add_column(
            sa.Column('balance_fen', sa.BigInteger(), server_default='0', nullable=False)
        )
    op.execute(
        "UPDATE ledger_accounts SET balance_fen = (SELECT COALESCE(SUM(b.balance_fen), 0) "
        "FROM ledger_balances b WHERE b.account_id = ledger_accounts.id)"
    )
    with op.batch_alter_table('ledger_accounts', schema=None) as batch_op:
        batch_op.alter_column('balance_fen', server_default=None)
        batch_op.drop_column('shards')
        batch_op.create_check_constraint(
            batch_op.f('ck_ledger_accounts_not_negative'), 'may_go_negative OR balance_fen >= 0'
        )
    op.drop_table('ledger_balances')
