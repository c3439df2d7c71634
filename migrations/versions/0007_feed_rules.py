"""vouchers: parked eligibility events, known eligibility starts, re-issue after a revocation
for a loss of eligibility, no overlapping policy versions (PostgreSQL)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

"""
from alembic import op
import sqlalchemy as sa
import eldercare.db


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

LIVE = sa.text("status <> 'revoked'")


def upgrade():
    op.create_table('voucher_eligibility_starts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('resident_id', sa.Integer(), nullable=False),
    sa.Column('due_on', sa.Date(), nullable=False),
    sa.Column('event_id', sa.BigInteger(), nullable=True),
    sa.Column('recorded_at', eldercare.db.UTCDateTime(), nullable=False),
    sa.Column('handled_at', eldercare.db.UTCDateTime(), nullable=True),
    sa.Column('outcome', sa.String(length=20), nullable=True),
    sa.ForeignKeyConstraint(['resident_id'], ['residents.id'], name=op.f('fk_voucher_eligibility_starts_resident_id_residents')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_voucher_eligibility_starts')),
    sa.UniqueConstraint('resident_id', 'due_on', name=op.f('uq_voucher_eligibility_starts_resident_id_due_on'))
    )
    with op.batch_alter_table('voucher_eligibility_starts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_voucher_eligibility_starts_due_on'), ['due_on'], unique=False)

    op.create_table('voucher_parked_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('event_id', sa.BigInteger(), nullable=False),
    sa.Column('resident_id', sa.Integer(), nullable=False),
    sa.Column('event_kind', sa.String(length=32), nullable=False),
    sa.Column('effective_on', sa.Date(), nullable=False),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('parked_at', eldercare.db.UTCDateTime(), nullable=False),
    sa.Column('resolved_at', eldercare.db.UTCDateTime(), nullable=True),
    sa.Column('resolved_by_user_id', sa.Integer(), nullable=True),
    sa.Column('resolution', sa.String(length=12), nullable=True),
    sa.Column('resolution_note', sa.Text(), nullable=True),
    sa.CheckConstraint("resolution IS NULL OR resolution IN ('handled', 'dismissed')", name=op.f('ck_voucher_parked_events_known_resolution')),
    sa.ForeignKeyConstraint(['resident_id'], ['residents.id'], name=op.f('fk_voucher_parked_events_resident_id_residents')),
    sa.ForeignKeyConstraint(['resolved_by_user_id'], ['users.id'], name=op.f('fk_voucher_parked_events_resolved_by_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_voucher_parked_events')),
    sa.UniqueConstraint('event_id', name=op.f('uq_voucher_parked_events_event_id'))
    )
    with op.batch_alter_table('voucher_parked_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_voucher_parked_events_resident_id'), ['resident_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_voucher_parked_events_resolved_at'), ['resolved_at'], unique=False)

    # One live voucher per elder and month; revoked ones no longer block a re-issue.
    with op.batch_alter_table('vouchers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('revoked_reason', sa.String(length=40), nullable=True))
        batch_op.drop_constraint('uq_vouchers_resident_id_month', type_='unique')
        batch_op.create_index('uq_vouchers_live_resident_month', ['resident_id', 'month'], unique=True, sqlite_where=LIVE, postgresql_where=LIVE)

    if op.get_bind().dialect.name == 'postgresql':
        # Two versions of one kind may not be in force on the same day. SQLite has no such
        # constraint; vouchers.pool.policy refuses the overlap before the flush on both.
        op.execute('CREATE EXTENSION IF NOT EXISTS btree_gist')
        op.execute(
            "ALTER TABLE voucher_policies ADD CONSTRAINT ex_voucher_policies_no_overlap "
            "EXCLUDE USING gist (kind WITH =, daterange(effective_from, effective_to, '[)') WITH &&)"
        )


def downgrade():
    if op.get_bind().dialect.name == 'postgresql':
        op.execute('ALTER TABLE voucher_policies DROP CONSTRAINT ex_voucher_policies_no_overlap')
        # btree_gist stays: other objects may use it, and it changes nothing by itself.

    # A month holding a revoked and a re-issued voucher cannot go back under the old
    # constraint; the downgrade then stops here rather than delete vouchers.
    with op.batch_alter_table('vouchers', schema=None) as batch_op:
        batch_op.drop_index('uq_vouchers_live_resident_month', sqlite_where=LIVE, postgresql_where=LIVE)
        batch_op.create_unique_constraint('uq_vouchers_resident_id_month', ['resident_id', 'month'])
        batch_op.drop_column('revoked_reason')

    with op.batch_alter_table('voucher_parked_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_voucher_parked_events_resolved_at'))
        batch_op.drop_index(batch_op.f('ix_voucher_parked_events_resident_id'))

    op.drop_table('voucher_parked_events')
    with op.batch_alter_table('voucher_eligibility_starts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_voucher_eligibility_starts_due_on'))

    op.drop_table('voucher_eligibility_starts')
