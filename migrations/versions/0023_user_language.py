"""an account's language: chosen while signed in, spoken by its pages in a new browser and by
the notices mailed to it (before: every mail carried both languages)

Revision ID: 0023
Revises: 0022
"""

import sqlalchemy as sa
from alembic import op

revision = "0023"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade():
    # Nullable, no default: existing accounts keep today's behaviour until the person chooses.
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("language", sa.String(length=16), nullable=True))


def downgrade():
    with op.batch_alter_table("users") as batch:
        batch.drop_column("language")
