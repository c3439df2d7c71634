"""vouchers: a redemption's quantity of units; the institution an elder lives in

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-10

A redemption may cover several units of a service (ten meals, three hours of care): its
``quantity``, set with the price (1..100). Redemptions priced before this revision were one
unit each, and get 1. The kind choice records which care institution (a provider) said the
elder lives there, so that institution, and only it, can change it later.
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('redemptions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('quantity', sa.Integer(), nullable=True))
        batch_op.create_check_constraint(
            op.f('ck_redemptions_quantity'),
            'quantity IS NULL OR (quantity >= 1 AND quantity <= 100)')
    op.execute("UPDATE redemptions SET quantity = 1 WHERE price_fen IS NOT NULL")

    with op.batch_alter_table('voucher_kind_choices', schema=None) as batch_op:
        batch_op.add_column(sa.Column('institution_provider_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f('fk_voucher_kind_choices_institution_provider_id_providers'),
            'providers', ['institution_provider_id'], ['id'])


def downgrade():
    with op.batch_alter_table('voucher_kind_choices', schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f('fk_voucher_kind_choices_institution_provider_id_providers'),
            type_='foreignkey')
        batch_op.drop_column('institution_provider_id')

    with op.batch_alter_table('redemptions', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_redemptions_quantity'), type_='check')
        batch_op.drop_column('quantity')
