"""anomaly rules as policy data (each rule a versioned row: threshold, on/off, effective
dates), one flag per rule per redemption, and what the rules read from a check-in: the
client's address and device, and the redemption's review draw

Revision ID: 0024
Revises: 0023
"""

from datetime import date, datetime, timezone

import sqlalchemy as sa
from alembic import op

revision = "0024"
down_revision = "0023"
branch_labels = None
depends_on = None

PILOT_START = date(2025, 7, 1)

# The defaults of vouchers/integrity/rules (DEFAULTS there is the same table: a test keeps
# them equal). Where a published programme rule exists the threshold is taken from it.
DEFAULTS = {
    "after_death": {},
    "during_stay": {},
    "staff_overlap": {"min_overlap_minutes": 1},
    "impossible_travel": {"max_speed_kmh": 60},
    "far_check_in": {"distance_m": 1600},
    "visit_length": {"min_minutes": 5, "max_minutes": 720},
    "daily_frequency": {"max_per_day": 3},
    "category_frequency": {
        "limits": {
            "meal_help": {"per": "day", "max": 3},
            "bathing": {"per": "month", "max": 8},
            "cleaning": {"per": "month", "max": 12},
            "rehab_nursing": {"per": "day", "max": 1},
            "hairdressing": {"per": "month", "max": 2},
        }
    },
    "at_cap": {"min_redemptions": 20, "times_peers": 2.0, "min_share_pct": 50},
    "shared_device": {"max_elders_per_day": 8},
    "outside_hours": {"grace_minutes": 30},
    "review_sample": {"share_bp": 500},
    "high_value": {"subsidy_fen": 30000},
}


def upgrade():
    rules = op.create_table(
        "anomaly_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(length=40), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("effective_from", sa.Date(), nullable=False),
        sa.Column("effective_to", sa.Date(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_by_user_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "effective_to IS NULL OR effective_to > effective_from",
            name=op.f("ck_anomaly_rules_dates_in_order"),
        ),
        sa.ForeignKeyConstraint(
            ["created_by_user_id"],
            ["users.id"],
            name=op.f("fk_anomaly_rules_created_by_user_id_users"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_anomaly_rules")),
        sa.UniqueConstraint(
            "code", "effective_from", name=op.f("uq_anomaly_rules_code_effective_from")
        ),
    )
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    op.bulk_insert(
        rules,
        [
            {
                "code": code,
                "params": params,
                "enabled": True,
                "effective_from": PILOT_START,
                "effective_to": None,
                "note": None,
                "created_by_user_id": None,
                "created_at": now,
            }
            for code, params in DEFAULTS.items()
        ],
    )
    with op.batch_alter_table("redemptions") as batch:
        batch.add_column(sa.Column("check_in_ip", sa.String(length=45), nullable=True))
        batch.add_column(sa.Column("check_in_device", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("review_draw", sa.Integer(), nullable=True))
    # What the rules look up around a redemption: the same staff member's visits, the same
    # elder's, the same device's, in a time range.
    op.create_index(
        "ix_redemptions_staff_checked_in", "redemptions", ["staff_user_id", "checked_in_at"]
    )
    op.create_index(
        "ix_redemptions_resident_checked_in", "redemptions", ["resident_id", "checked_in_at"]
    )
    op.create_index(
        "ix_redemptions_device_checked_in",
        "redemptions",
        ["check_in_device", "checked_in_at"],
        sqlite_where=sa.text("check_in_device IS NOT NULL"),
        postgresql_where=sa.text("check_in_device IS NOT NULL"),
    )
    op.create_index(
        "ix_redemptions_ip_checked_in",
        "redemptions",
        ["check_in_ip", "checked_in_at"],
        sqlite_where=sa.text("check_in_ip IS NOT NULL"),
        postgresql_where=sa.text("check_in_ip IS NOT NULL"),
    )
    # A rule flags a redemption once, whatever its decision: a cleared finding is not raised
    # again by the next run. (An officer's own hold, rule 'bureau', may be raised again.)
    op.create_index(
        "uq_redemption_flags_rule",
        "redemption_flags",
        ["redemption_id", "rule"],
        unique=True,
        sqlite_where=sa.text("rule <> 'bureau'"),
        postgresql_where=sa.text("rule <> 'bureau'"),
    )
    op.create_index("ix_redemption_flags_rule_status", "redemption_flags", ["rule", "status"])


def downgrade():
    op.drop_index("ix_redemption_flags_rule_status", table_name="redemption_flags")
    op.drop_index("uq_redemption_flags_rule", table_name="redemption_flags")
    op.drop_index("ix_redemptions_ip_checked_in", table_name="redemptions")
    op.drop_index("ix_redemptions_device_checked_in", table_name="redemptions")
    op.drop_index("ix_redemptions_resident_checked_in", table_name="redemptions")
    op.drop_index("ix_redemptions_staff_checked_in", table_name="redemptions")
    with op.batch_alter_table("redemptions") as batch:
        batch.drop_column("review_draw")
        batch.drop_column("check_in_device")
        batch.drop_column("check_in_ip")
    op.drop_table("anomaly_rules")
