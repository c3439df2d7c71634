"""account links: an account holder's request to be linked to a registered resident (as the
resident's own account or a family agent), and the bureau's decision

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03

"""
from alembic import op
import sqlalchemy as sa
import eldercare.db


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('account_link_requests',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('id_number', sa.String(length=18), nullable=False),
    sa.Column('name', sa.String(length=50), nullable=False),
    sa.Column('relationship', sa.String(length=32), nullable=False),
    sa.Column('resident_id', sa.Integer(), nullable=True),
    sa.Column('name_matches', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('decided_by_user_id', sa.Integer(), nullable=True),
    sa.Column('decided_at', eldercare.db.UTCDateTime(), nullable=True),
    sa.Column('refusal_reason', sa.String(length=500), nullable=True),
    sa.Column('created_at', eldercare.db.UTCDateTime(), nullable=False),
    sa.CheckConstraint("relationship IN ('self', 'spouse', 'child', 'other_relative', 'community_worker', 'institution_staff')", name=op.f('ck_account_link_requests_known_relationship')),
    sa.CheckConstraint("status IN ('pending', 'confirmed', 'refused')", name=op.f('ck_account_link_requests_known_status')),
    sa.CheckConstraint("status = 'pending' OR (decided_by_user_id IS NOT NULL AND decided_at IS NOT NULL)", name=op.f('ck_account_link_requests_decision_recorded')),
    sa.CheckConstraint("status <> 'refused' OR refusal_reason IS NOT NULL", name=op.f('ck_account_link_requests_reason')),
    sa.ForeignKeyConstraint(['decided_by_user_id'], ['users.id'], name=op.f('fk_account_link_requests_decided_by_user_id_users')),
    sa.ForeignKeyConstraint(['resident_id'], ['residents.id'], name=op.f('fk_account_link_requests_resident_id_residents')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_account_link_requests_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_account_link_requests'))
    )
    with op.batch_alter_table('account_link_requests', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_account_link_requests_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_account_link_requests_resident_id'), ['resident_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_account_link_requests_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_account_link_requests_user_id'), ['user_id'], unique=False)
        # One open request per account and ID number.
        batch_op.create_index('uq_account_link_requests_pending', ['user_id', 'id_number'], unique=True, sqlite_where=sa.text("status = 'pending'"), postgresql_where=sa.text("status = 'pending'"))


def downgrade():
    with op.batch_alter_table('account_link_requests', schema=None) as batch_op:
        batch_op.drop_index('uq_account_link_requests_pending', sqlite_where=sa.text("status = 'pending'"), postgresql_where=sa.text("status = 'pending'"))
        batch_op.drop_index(batch_op.f('ix_account_link_requests_user_id'))
        batch_op.drop_index(batch_op.f('ix_account_link_requests_status'))
        batch_op.drop_index(batch_op.f('ix_account_link_requests_resident_id'))
        batch_op.drop_index(batch_op.f('ix_account_link_requests_created_at'))

    op.drop_table('account_link_requests')
