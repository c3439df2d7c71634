"""vouchers: a refund decided before it is asked for; the 3-D Secure return's marker

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-10

A charge that cannot pay its redemption is refunded in two steps, so that the audit chain's
lock is never held across a call to the gateway: the decision is recorded under the lock
(attempt state ``refunding`` with ``refund_fen``), the refund asked for after the commit.
``authenticating_method`` is the payment method of the confirm that sent the payer to
3-D Secure; the payer's return consumes it, so it gives a hold back once per confirm.
"""
from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

WITH_REFUNDING = "state IN ('current', 'superseded', 'succeeded', 'refunding', 'refunded')"
WITHOUT_REFUNDING = "state IN ('current', 'superseded', 'succeeded', 'refunded')"


def upgrade():
    with op.batch_alter_table('payment_attempts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('refund_fen', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('authenticating_method', sa.String(length=80), nullable=True))
        batch_op.drop_constraint(batch_op.f('ck_payment_attempts_known_state'), type_='check')
        batch_op.create_check_constraint(batch_op.f('ck_payment_attempts_known_state'), WITH_REFUNDING)


def downgrade():
    """Refused while a refund is decided but not yet made (an attempt in ``refunding``): the
    older code would not know to ask the gateway for it. Let the every-minute job finish
    those first (``flask scheduler list`` shows it running), then downgrade."""
    waiting = op.get_bind().execute(
        sa.text("SELECT count(*) FROM payment_attempts WHERE state = 'refunding'")
    ).scalar()
    if waiting:
        raise RuntimeError(
            f"{waiting} payment attempt(s) are still 'refunding': let the stale-holds job "
            "make those refunds before downgrading"
        )
    with op.batch_alter_table('payment_attempts', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('ck_payment_attempts_known_state'), type_='check')
        batch_op.create_check_constraint(batch_op.f('ck_payment_attempts_known_state'), WITHOUT_REFUNDING)
        batch_op.drop_column('authenticating_method')
        batch_op.drop_column('refund_fen')
