"""sign-in hardening: the sign-in throttle counts per name and client, per client and per name;
server-side sign-in sessions (user_sessions), ended on sign-out and on a password change

The throttle rows are counts in a short window, not records: they are dropped, not converted
(at worst someone mid-lock-out gets a fresh allowance once, when this is deployed).
Session cookies from before carry an account id, which names no session: everyone signs in
once more after the upgrade.

Revision ID: 0021
Revises: 0020
"""

import sqlalchemy as sa
from alembic import op

import eldercare.db

revision = "0021"
down_revision = "0020"
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
    op.create_table(
        "user_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_sha256", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created_at", eldercare.db.UTCDateTime(), nullable=False),
        sa.Column("last_seen_at", eldercare.db.UTCDateTime(), nullable=False),
        sa.Column("revoked_at", eldercare.db.UTCDateTime(), nullable=True),
        sa.Column("user_agent", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_user_sessions_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_sessions")),
        sa.UniqueConstraint("token_sha256", name=op.f("uq_user_sessions_token_sha256")),
    )
    op.create_index(op.f("ix_user_sessions_user_id"), "user_sessions", ["user_id"], unique=False)


def downgrade():
    op.drop_index(op.f("ix_user_sessions_user_id"), table_name="user_sessions")
    op.drop_table("user_sessions")
    op.drop_table("login_throttles")
    op.create_table(
        "login_throttles",
        sa.Column("username_key", sa.String(length=80), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("locked_until", eldercare.db.UTCDateTime(), nullable=True),
        sa.Column("last_failure_at", eldercare.db.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("username_key", name=op.f("pk_login_throttles")),
    )
