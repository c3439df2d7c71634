"""issuance work table: a monthly run's staged elders per district (set-based issuance)

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03

"""
from alembic import op
import sqlalchemy as sa
import eldercare.db


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('issuance_work',
    sa.Column('run_id', sa.BigInteger(), nullable=False),
    sa.Column('rank', sa.BigInteger(), nullable=False),
    sa.Column('resident_id', sa.Integer(), nullable=False),
    sa.Column('district_id', sa.Integer(), nullable=False),
    sa.Column('level', sa.String(length=16), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('policy_id', sa.Integer(), nullable=True),
    sa.Column('waiting', sa.Boolean(), nullable=False),
    sa.Column('face_value_fen', sa.BigInteger(), nullable=False),
    sa.Column('voucher_id', sa.BigInteger(), nullable=True),
    sa.Column('staged_at', eldercare.db.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('run_id', 'rank', name=op.f('pk_issuance_work'))
    )
    if op.get_bind().dialect.name == 'postgresql':
        # Scratch rows of a run: no WAL for them (a crash empties the table; the rerun
        # stages again).
        op.execute('ALTER TABLE issuance_work SET UNLOGGED')


def downgrade():
    op.drop_table('issuance_work')
