"""audit sealing: rows are appended unsealed and chained afterwards by the sealer
(``eldercare.audit.seal``), so that no request waits for another to append

- ``seal_seq`` (unique, NULL until sealed) gives each row its place in the chain;
  ``prev_hash`` and ``row_hash`` become NULL until sealed; a partial index holds just the
  unsealed rows.
- The rows already in the trail are sealed here: ``seal_seq`` is their order by id (the
  order they were chained in), and their hashes are kept as they are, still valid (the old
  form, without id and seal_seq; ``verify_chain`` accepts it in the chain's prefix).
- The triggers still refuse DELETE, TRUNCATE and any UPDATE, except the seal: setting the
  three seal columns once, from NULL, and nothing else. On PostgreSQL the UPDATE trigger
  says so in its WHEN clause (no function call for a seal), and DELETE has its own trigger
  (``audit_logs_no_delete``); the function that refuses is 0001's, unchanged.

Downgrade re-chains every row appended since this revision (sealed or not) after the old
rows, in id order, in the old form (the old code chains by id, at insert): a tail hash
written down after the upgrade no longer matches. The old rows keep their hashes.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03

"""
import hashlib
import json

import sqlalchemy as sa
from alembic import op

import eldercare.db

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None

GENESIS_HASH = "0" * 64
CONTENT = (
    "id", "occurred_at", "actor_user_id", "actor_label", "action", "object_type", "object_id",
    "district_id", "before_json", "after_json",
)
SEAL = ("seal_seq", "prev_hash", "row_hash")

# The seal: the three seal columns set once, from NULL, and every other column as it was.
# A column added to audit_logs later must be added to CONTENT (tests/test_audit.py checks).
_PG_SEAL = (
    "OLD.seal_seq IS NULL AND OLD.prev_hash IS NULL AND OLD.row_hash IS NULL"
    " AND NEW.seal_seq IS NOT NULL AND NEW.prev_hash IS NOT NULL AND NEW.row_hash IS NOT NULL"
    f" AND ({', '.join('NEW.' + c for c in CONTENT)})"
    f" IS NOT DISTINCT FROM ({', '.join('OLD.' + c for c in CONTENT)})"
)
# PostgreSQL: the WHEN clause is evaluated without calling the function, so a seal costs
# the comparison only; anything else calls the function, which refuses (migration 0001).
PG_UPDATE_GUARD = (
    "CREATE TRIGGER audit_logs_no_change BEFORE UPDATE ON audit_logs FOR EACH ROW "
    f"WHEN (NOT ({_PG_SEAL})) EXECUTE FUNCTION audit_logs_append_only()"
)
PG_DELETE_GUARD = (
    "CREATE TRIGGER audit_logs_no_delete BEFORE DELETE ON audit_logs "
    "FOR EACH ROW EXECUTE FUNCTION audit_logs_append_only()"
)
PG_OLD_GUARD = (
    "CREATE TRIGGER audit_logs_no_change BEFORE UPDATE OR DELETE ON audit_logs "
    "FOR EACH ROW EXECUTE FUNCTION audit_logs_append_only()"
)
_SAME = " AND ".join(f"NEW.{c} IS OLD.{c}" for c in CONTENT)
SQLITE_UPDATE_GUARD = f"""
CREATE TRIGGER audit_logs_no_update BEFORE UPDATE ON audit_logs
WHEN NOT (
    OLD.seal_seq IS NULL AND OLD.prev_hash IS NULL AND OLD.row_hash IS NULL
    AND NEW.seal_seq IS NOT NULL AND NEW.prev_hash IS NOT NULL AND NEW.row_hash IS NOT NULL
    AND {_SAME}
)
BEGIN SELECT RAISE(ABORT, 'audit_logs is append-only'); END
"""


def _sqlite_triggers(update_guard: str) -> None:
    op.execute(update_guard)
    op.execute(
        "CREATE TRIGGER audit_logs_no_delete BEFORE DELETE ON audit_logs "
        "BEGIN SELECT RAISE(ABORT, 'audit_logs is append-only'); END"
    )


def _drop_sqlite_triggers() -> None:
    op.execute("DROP TRIGGER IF EXISTS audit_logs_no_update")
    op.execute("DROP TRIGGER IF EXISTS audit_logs_no_delete")


def upgrade():
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute("DROP TRIGGER audit_logs_no_change ON audit_logs")
    else:
        _drop_sqlite_triggers()  # the batch below rebuilds the table, without them
    with op.batch_alter_table('audit_logs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('seal_seq', sa.BigInteger(), nullable=True))
        batch_op.alter_column('prev_hash', existing_type=sa.String(length=64), nullable=True)
        batch_op.alter_column('row_hash', existing_type=sa.String(length=64), nullable=True)
        batch_op.create_unique_constraint(batch_op.f('uq_audit_logs_seal_seq'), ['seal_seq'])
    # The rows chained so far, sealed in the order they were chained (by id).
    if postgres:
        op.execute(
            "UPDATE audit_logs SET seal_seq = n.seq FROM "
            "(SELECT id, row_number() OVER (ORDER BY id) AS seq FROM audit_logs) AS n "
            "WHERE audit_logs.id = n.id"
        )
    else:
        op.execute(
            "UPDATE audit_logs SET seal_seq = "
            "(SELECT count(*) FROM audit_logs AS b WHERE b.id <= audit_logs.id)"
        )
    op.create_index(
        'ix_audit_logs_unsealed', 'audit_logs', ['id'], unique=False,
        postgresql_where=sa.text('seal_seq IS NULL'), sqlite_where=sa.text('seal_seq IS NULL'),
    )
    if postgres:
        op.execute(PG_UPDATE_GUARD)
        op.execute(PG_DELETE_GUARD)
    else:
        _sqlite_triggers(SQLITE_UPDATE_GUARD)


def _legacy_hash(row, prev_hash: str) -> str:
    """The old form (eldercare.audit.compute_legacy_hash), copied: a migration must not
    change when the application does."""
    payload = json.dumps(
        [
            prev_hash, row.occurred_at.isoformat(), row.actor_user_id, row.actor_label,
            row.action, row.object_type, row.object_id, row.district_id, row.before_json,
            row.after_json,
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _rechain_in_old_form() -> None:
    """Every row not in the old prefix, re-chained after it in id order, old form."""
    bind = op.get_bind()
    table = sa.Table(
        "audit_logs", sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("occurred_at", eldercare.db.UTCDateTime()),  # aware, as the app hashed it
        *(sa.Column(c) for c in CONTENT if c not in ("id", "occurred_at")),
        sa.Column("seal_seq", sa.BigInteger), sa.Column("prev_hash", sa.String),
        sa.Column("row_hash", sa.String),
    )
    prev, last_old_id = GENESIS_HASH, 0
    # The old prefix: sealed rows, in chain order, while each holds in the old form.
    for row in bind.execute(
        sa.select(table).where(table.c.seal_seq.is_not(None)).order_by(table.c.seal_seq)
    ):
        if row.prev_hash != prev or row.row_hash != _legacy_hash(row, prev):
            break
        prev, last_old_id = row.row_hash, row.id
    rest = bind.execute(
        sa.select(table).where(table.c.id > last_old_id).order_by(table.c.id)
    ).all()
    for row in rest:
        row_hash = _legacy_hash(row, prev)
        bind.execute(
            sa.update(table).where(table.c.id == row.id).values(prev_hash=prev, row_hash=row_hash)
        )
        prev = row_hash


def downgrade():
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        op.execute("DROP TRIGGER audit_logs_no_change ON audit_logs")
        op.execute("DROP TRIGGER audit_logs_no_delete ON audit_logs")
    else:
        _drop_sqlite_triggers()
    _rechain_in_old_form()
    op.drop_index('ix_audit_logs_unsealed', table_name='audit_logs')
    with op.batch_alter_table('audit_logs', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_audit_logs_seal_seq'), type_='unique')
        batch_op.drop_column('seal_seq')
        batch_op.alter_column('row_hash', existing_type=sa.String(length=64), nullable=False)
        batch_op.alter_column('prev_hash', existing_type=sa.String(length=64), nullable=False)
    if postgres:
        op.execute(PG_OLD_GUARD)
    else:
        _sqlite_triggers(
            "CREATE TRIGGER audit_logs_no_update BEFORE UPDATE ON audit_logs "
            "BEGIN SELECT RAISE(ABORT, 'audit_logs is append-only'); END"
        )
