"""vouchers: payment attempts (every payment intent created for a redemption)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03

Every intent a redemption's card co-payment creates is remembered, with the state of its
attempt, so an intent dropped on purpose is never attached again by a late webhook. The
redemptions that already have an intent get their attempt row here.
"""
from alembic import op
import sqlalchemy as sa
import eldercare.db


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('payment_attempts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('redemption_id', sa.Integer(), nullable=False),
    sa.Column('idempotency_key', sa.String(length=100), nullable=False),
    sa.Column('intent_id', sa.String(length=80), nullable=True),
    sa.Column('amount_fen', sa.BigInteger(), nullable=False),
    sa.Column('state', sa.String(length=12), nullable=False),
    sa.Column('note', sa.String(length=200), nullable=True),
    sa.Column('refund_id', sa.String(length=80), nullable=True),
    sa.Column('created_at', eldercare.db.UTCDateTime(), nullable=False),
    sa.Column('updated_at', eldercare.db.UTCDateTime(), nullable=False),
    sa.CheckConstraint("state IN ('current', 'superseded', 'succeeded', 'refunded')", name=op.f('ck_payment_attempts_known_state')),
    sa.CheckConstraint('amount_fen > 0', name=op.f('ck_payment_attempts_amount')),
    sa.ForeignKeyConstraint(['redemption_id'], ['redemptions.id'], name=op.f('fk_payment_attempts_redemption_id_redemptions')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_payment_attempts')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_payment_attempts_idempotency_key')),
    sa.UniqueConstraint('intent_id', name=op.f('uq_payment_attempts_intent_id'))
    )
    with op.batch_alter_table('payment_attempts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_payment_attempts_redemption_id'), ['redemption_id'], unique=False)
        batch_op.create_index('uq_payment_attempts_current', ['redemption_id'], unique=True, sqlite_where=sa.text("state = 'current'"), postgresql_where=sa.text("state = 'current'"))

    # The intents recorded so far: a card redemption's is what paid it (refunded if it was
    # reversed); any other is still the redemption's live attempt.
    op.execute(
        """
        INSERT INTO payment_attempts
            (redemption_id, idempotency_key, intent_id, amount_fen, state, created_at, updated_at)
        SELECT id, COALESCE(idempotency_key, 'redemption-' || id) || '-create', payment_intent_id,
               copay_fen,
               CASE WHEN payment_method = 'card' AND status = 'redeemed' THEN 'succeeded'
                    WHEN payment_method = 'card' AND status = 'reversed' THEN 'refunded'
                    ELSE 'current' END,
               COALESCE(held_at, checked_in_at), COALESCE(held_at, checked_in_at)
        FROM redemptions
        WHERE payment_intent_id IS NOT NULL AND copay_fen > 0
        """
    )


def downgrade():
    """Drops the attempt history with the table: every intent ever created for a redemption,
    superseded and refunded ones included, is forgotten. A late webhook for an intent that
    was dropped on purpose (after a decline and a new price, or after its charge was
    refunded) could then be attached to its redemption again, as before this revision: the
    next "Charge" might confirm the old intent at the old amount, or a refunded charge be
    recorded as the payment. Downgrade only with no card payment in flight and no intent
    younger than the gateway's webhook retry window (3 days at Stripe), and reconcile the
    gateway's intents against the redemptions afterwards."""
    with op.batch_alter_table('payment_attempts', schema=None) as batch_op:
        batch_op.drop_index('uq_payment_attempts_current', sqlite_where=sa.text("state = 'current'"), postgresql_where=sa.text("state = 'current'"))
        batch_op.drop_index(batch_op.f('ix_payment_attempts_redemption_id'))

    op.drop_table('payment_attempts')
