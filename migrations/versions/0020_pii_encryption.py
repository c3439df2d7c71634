"""resident ID numbers and phones encrypted at rest; keyed hashes for look-up

residents.id_number, residents.phone and account_link_requests.id_number hold
``<key id>:<base64>`` (AES-256-GCM, eldercare/pii.py) instead of clear text. The ID numbers
get an HMAC-SHA256 column (the residents' is unique, replacing uq_residents_id_number; the
pending-request index moves to it) and residents get one of the last four characters (the
register's search). Keys come from PII_KEYS / PII_HMAC_KEY exactly as the app reads them
(the app's config inside ``flask db``; the environment, or the demo keys outside
production, otherwise). Downgrade decrypts back to clear text.

Revision ID: 0020
Revises: 0019
"""

import sqlalchemy as sa
from alembic import op

# The app's own crypto, so that the migration and the app read the same key settings and
# write the same format.
from eldercare.pii import keyring

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

BATCH = 2000
PENDING = sa.text("status = 'pending'")
# (table, column, associated data, lookup hashes: column -> kind)
COLUMNS = (
    ("residents", "id_number", "residents.id_number",
     {"id_number_hash": "id_number", "id_number_tail_hash": "id_number_tail"}),
    ("residents", "phone", "residents.phone", {}),
    ("account_link_requests", "id_number", "account_link_requests.id_number",
     {"id_number_hash": "id_number"}),
)  # fmt: skip


def _rewrite(table: str, column: str, change, hashes: dict) -> None:
    """Apply ``change`` (str -> str) to every non-null value, in id batches."""
    t = sa.table(table, sa.column("id"), sa.column(column), *map(sa.column, hashes))
    bind = op.get_bind()
    update = (
        t.update()
        .where(t.c.id == sa.bindparam("b_id"))
        .values({column: sa.bindparam("b_value")} | {h: sa.bindparam(f"b_{h}") for h in hashes})
    )
    keys = keyring()
    last = 0
    while True:
        rows = bind.execute(
            sa.select(t.c.id, t.c[column])
            .where(t.c.id > last, t.c[column].is_not(None))
            .order_by(t.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        params = []
        for row_id, value in rows:
            item = {"b_id": row_id, "b_value": change(value)}
            for h, kind in hashes.items():
                item[f"b_{h}"] = keys.lookup_hash(kind, value)
            params.append(item)
        bind.execute(update, params)
        last = rows[-1][0]


def upgrade():
    with op.batch_alter_table("residents") as batch_op:
        batch_op.drop_constraint("uq_residents_id_number", type_="unique")
        batch_op.alter_column("id_number", type_=sa.String(255), existing_nullable=False)
        batch_op.alter_column("phone", type_=sa.String(255), existing_nullable=True)
        batch_op.add_column(sa.Column("id_number_hash", sa.String(64), nullable=True))
        batch_op.add_column(sa.Column("id_number_tail_hash", sa.String(64), nullable=True))
    with op.batch_alter_table("account_link_requests") as batch_op:
        batch_op.drop_index(
            "uq_account_link_requests_pending", sqlite_where=PENDING, postgresql_where=PENDING
        )
        batch_op.alter_column("id_number", type_=sa.String(255), existing_nullable=False)
        batch_op.add_column(sa.Column("id_number_hash", sa.String(64), nullable=True))

    keys = keyring()
    for table, column, context, hashes in COLUMNS:
        _rewrite(table, column, lambda v, c=context: keys.encrypt(v, c), hashes)

    with op.batch_alter_table("residents") as batch_op:
        batch_op.alter_column("id_number_hash", existing_type=sa.String(64), nullable=False)
        batch_op.alter_column("id_number_tail_hash", existing_type=sa.String(64), nullable=False)
        batch_op.create_unique_constraint("uq_residents_id_number_hash", ["id_number_hash"])
        batch_op.create_index("ix_residents_id_number_tail_hash", ["id_number_tail_hash"])
    with op.batch_alter_table("account_link_requests") as batch_op:
        batch_op.alter_column("id_number_hash", existing_type=sa.String(64), nullable=False)
        batch_op.create_index(
            "uq_account_link_requests_pending",
            ["user_id", "id_number_hash"],
            unique=True,
            sqlite_where=PENDING,
            postgresql_where=PENDING,
        )


def downgrade():
    keys = keyring()
    for table, column, context, _hashes in COLUMNS:
        _rewrite(table, column, lambda v, c=context: keys.decrypt(v, c), {})

    with op.batch_alter_table("account_link_requests") as batch_op:
        batch_op.drop_index(
            "uq_account_link_requests_pending", sqlite_where=PENDING, postgresql_where=PENDING
        )
        batch_op.drop_column("id_number_hash")
        batch_op.alter_column("id_number", type_=sa.String(18), existing_nullable=False)
        batch_op.create_index(
            "uq_account_link_requests_pending",
            ["user_id", "id_number"],
            unique=True,
            sqlite_where=PENDING,
            postgresql_where=PENDING,
        )
    with op.batch_alter_table("residents") as batch_op:
        batch_op.drop_index("ix_residents_id_number_tail_hash")
        batch_op.drop_constraint("uq_residents_id_number_hash", type_="unique")
        batch_op.drop_column("id_number_tail_hash")
        batch_op.drop_column("id_number_hash")
        batch_op.alter_column("phone", type_=sa.String(20), existing_nullable=True)
        batch_op.alter_column("id_number", type_=sa.String(18), existing_nullable=False)
        batch_op.create_unique_constraint("uq_residents_id_number", ["id_number"])
