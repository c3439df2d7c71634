"""services.delivery_place: where a service is delivered (the elder's home, the provider's
premises, a care institution), chosen by the provider; only a home visit needs the phone's
location at check-in (issue 14 item 3)

Until now check-in guessed: a home-service company's services and anything sold by the
visit or the hour were home visits. The backfill writes that guess down, in one UPDATE, so
every existing service keeps its behaviour and its provider can now correct it (a station's
bath in its own bathroom is not a home visit). The column is added nullable, filled, then
made NOT NULL with its CHECK (batch mode, so SQLite rebuilds the table).

Revision ID: 0022
Revises: 0021
"""

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

# The rule vouchers.redemption.steps.is_home_service applied before this revision.
BACKFILL = """
UPDATE services SET delivery_place = CASE
    WHEN unit IN ('visit', 'hour')
        OR (SELECT type FROM providers WHERE providers.id = services.provider_id) = 'home_service'
        THEN 'home'
    WHEN (SELECT type FROM providers WHERE providers.id = services.provider_id)
        = 'care_institution'
        THEN 'institution'
    ELSE 'provider'
END
"""


def upgrade():
    with op.batch_alter_table("services") as batch_op:
        batch_op.add_column(sa.Column("delivery_place", sa.String(length=16), nullable=True))
    op.execute(BACKFILL)
    with op.batch_alter_table("services") as batch_op:
        batch_op.alter_column(
            "delivery_place", existing_type=sa.String(length=16), nullable=False
        )
        batch_op.create_check_constraint(
            op.f("ck_services_known_delivery_place"),
            "delivery_place IN ('home', 'provider', 'institution')",
        )


def downgrade():
    with op.batch_alter_table("services") as batch_op:
        batch_op.drop_constraint(op.f("ck_services_known_delivery_place"), type_="check")
        batch_op.drop_column("delivery_place")
