"""settlement runs: an index for the catch-up's "does this month have anything to settle?"

Revision ID: 0018
Revises: 0017
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade():
    # Only redeemed redemptions are settled: the catch-up's EXISTS per month and the run's
    # INSERT … SELECT read them by voucher without touching the failed, cancelled or reversed.
    op.create_index(
        "ix_redemptions_redeemed_voucher",
        "redemptions",
        ["voucher_id", "id"],
        postgresql_where=sa.text("status = 'redeemed'"),
        sqlite_where=sa.text("status = 'redeemed'"),
    )


def downgrade():
    op.drop_index("ix_redemptions_redeemed_voucher", table_name="redemptions")
