"""assessment interfaces: who added each eligibility policy version, no two versions
overlapping (PostgreSQL), and the assessment-fee refunds owed (backfilled from the
approved results that already carry a refundable fee)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03

"""
from alembic import op
import sqlalchemy as sa
import eldercare.db


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

_NO_OVERLAP = 'ex_eligibility_policies_no_overlap'


def upgrade():
    with op.batch_alter_table('eligibility_policies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('created_by_user_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f('fk_eligibility_policies_created_by_user_id_users'),
            'users', ['created_by_user_id'], ['id'])
    if op.get_bind().dialect.name == 'postgresql':
        # Two versions in force on the same day would make policy_on() ambiguous; the
        # service refuses it, and the database too (a range type needs no extension).
        op.execute(
            f"ALTER TABLE eligibility_policies ADD CONSTRAINT {_NO_OVERLAP} "
            "EXCLUDE USING gist (daterange(effective_from, effective_to, '[)') WITH &&)"
        )

    op.create_table('assessment_fee_refunds',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('assessment_id', sa.Integer(), nullable=False),
    sa.Column('resident_id', sa.Integer(), nullable=False),
    sa.Column('district_id', sa.Integer(), nullable=False),
    sa.Column('amount_fen', sa.BigInteger(), nullable=False),
    sa.Column('owed_on', sa.Date(), nullable=False),
    sa.Column('status', sa.String(length=8), nullable=False),
    sa.Column('paid_at', eldercare.db.UTCDateTime(), nullable=True),
    sa.Column('created_at', eldercare.db.UTCDateTime(), nullable=False),
    sa.CheckConstraint("status IN ('owed', 'paid')", name=op.f('ck_assessment_fee_refunds_known_status')),
    sa.CheckConstraint('amount_fen > 0', name=op.f('ck_assessment_fee_refunds_positive_amount')),
    sa.CheckConstraint("(status = 'paid') = (paid_at IS NOT NULL)", name=op.f('ck_assessment_fee_refunds_paid_when_paid')),
    sa.ForeignKeyConstraint(['assessment_id'], ['assessments.id'], name=op.f('fk_assessment_fee_refunds_assessment_id_assessments')),
    sa.ForeignKeyConstraint(['district_id'], ['districts.id'], name=op.f('fk_assessment_fee_refunds_district_id_districts')),
    sa.ForeignKeyConstraint(['resident_id'], ['residents.id'], name=op.f('fk_assessment_fee_refunds_resident_id_residents')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_assessment_fee_refunds')),
    sa.UniqueConstraint('assessment_id', name=op.f('uq_assessment_fee_refunds_assessment_id'))
    )
    with op.batch_alter_table('assessment_fee_refunds', schema=None) as batch_op:
        batch_op.create_index('ix_assessment_fee_refunds_district_owed', ['district_id', 'owed_on'], unique=False)
        batch_op.create_index(batch_op.f('ix_assessment_fee_refunds_resident_id'), ['resident_id'], unique=False)
    # Results approved before this revision are owed their refund as well (the approval
    # time stands for the day it became owed; effective_from is that day).
    op.execute(
        "INSERT INTO assessment_fee_refunds "
        "(assessment_id, resident_id, district_id, amount_fen, owed_on, status, created_at) "
        "SELECT a.id, a.resident_id, r.district_id, a.refundable_fee_fen, a.effective_from, "
        "'owed', CURRENT_TIMESTAMP FROM assessments a JOIN residents r ON r.id = a.resident_id "
        "WHERE a.status = 'approved' AND a.refundable_fee_fen > 0"
    )


def downgrade():
    with op.batch_alter_table('assessment_fee_refunds', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_assessment_fee_refunds_resident_id'))
        batch_op.drop_index('ix_assessment_fee_refunds_district_owed')
    op.drop_table('assessment_fee_refunds')
    if op.get_bind().dialect.name == 'postgresql':
        op.execute(f"ALTER TABLE eligibility_policies DROP CONSTRAINT {_NO_OVERLAP}")
    with op.batch_alter_table('eligibility_policies', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_eligibility_policies_created_by_user_id_users'), type_='foreignkey')
        batch_op.drop_column('created_by_user_id')
