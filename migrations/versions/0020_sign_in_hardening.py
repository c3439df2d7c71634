"""sign-in hardening: the sign-in throttle counts per name and client, per client and per name

The throttle rows are counts in a short window, not records: they are dropped, not converted
(at worst someone mid-lock-out gets a fresh allowance once, when this is deployed).

Revision ID: 0020
Revises: 0019
"""

import sqlalchemy as sa
from alembic import op

import eldercare.db

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade():
    op.drop_table("login_throttles")
    op.create_table(
        "login_throttles",
        sa.Column("username_key", sa.String(length=80), nullable=False),
        sa.Column("client_key", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_started_at", eldercare.db.UTCDateTime(), nullable=True),
        sa.Column("locked_until", eldercare.db.UTCDateTime(), nullable=True),
        sa.CheckConstraint(
            "username_key <> '' OR client_key <> ''",
            name=op.f("ck_login_throttles_names_something"),
        ),
        sa.PrimaryKeyConstraint("username_key", "client_key", name=op.f("pk_login_throttles")),
    )


def downgrade():
    op.drop_table("login_throttles")
    op.create_table(
        "login_throttles",
        sa.Column("username_key", sa.String(length=80), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("locked_until", eldercare.db.UTCDateTime(), nullable=True),
        sa.Column("last_failure_at", eldercare.db.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("username_key", name=op.f("pk_login_throttles")),
    )
