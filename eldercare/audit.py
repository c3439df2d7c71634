"""The append-only audit trail, chained by SHA-256 and sealed in order by a job.

Appending and chaining are two steps, so that no request waits for another to append:

- ``record`` (and the bulk ``record_many`` / ``insert_from_select``) INSERTs a row in the
  caller's transaction with no hash: ``seal_seq``, ``prev_hash`` and ``row_hash`` are NULL.
  Nothing is read or locked; the row's ``id`` comes from the table's sequence. Rows are
  appended by every request in parallel, and commit or roll back with the change they record.
- ``seal`` links the committed unsealed rows into the chain: under its own advisory lock
  (only sealers wait for it; on SQLite writers queue anyway) it reads the tail (the highest
  ``seal_seq``) and the unsealed rows in id order, a batch at a time (a partial index holds
  just the unsealed rows), gives each the next ``seal_seq``, the tail's hash as ``prev_hash``
  and its own ``row_hash``, writes the batch in one UPDATE and commits. The ``audit-seal`` job
  does it every minute; ``flask audit seal`` and ``flask audit verify`` do it on demand.

The chain's order is the seal order, not the id order: a row committed late (its transaction
was open while rows with higher ids were sealed) is sealed by the next run, at the end of the
chain; it is never skipped, because a run takes every unsealed row it can see. A row's hash
covers its ``id`` and ``seal_seq`` as well as what it records and the previous row's hash, so
editing, removing, reordering or renumbering any sealed row breaks the chain at that row (or
the one after it); ``verify_chain`` walks the chain by ``seal_seq`` and names the first break.
Rows that were in the trail before the sealer (migration 0014) keep their hashes, in the old
form that did not cover ``id`` and ``seal_seq``: the chain is a prefix of such rows followed
by rows sealed in the new form, and ``verify_chain`` accepts the old form only in that prefix.

The database guards the rest (triggers, migrations 0001 and 0014): no DELETE, no TRUNCATE,
and no UPDATE except the seal itself, which sets the three seal columns once, from NULL, and
changes nothing else. What is not proved until it is sealed: an unsealed row deleted by
someone who has switched the triggers off leaves no trace in the chain. The job keeps that
window to about a minute; ``verify_chain`` reports how many rows are unsealed and how old
the oldest is, so a sealer that falls behind shows.

Why a job and not a chain built at insert: building the chain at insert needs the tail, and
reading the tail and appending to it must be atomic, which is one global lock held to the
end of every transaction that writes an audit row (before 0014: every money transaction of
the city queued on it). Sealing afterwards moves the only serial step out of the requests,
into one process that seals thousands of rows per statement.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from flask import has_request_context
from flask_login import current_user
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Mapped, mapped_column

from eldercare.db import Base, UTCDateTime, db
from eldercare.timeutil import now_utc

GENESIS_HASH = "0" * 64
# Any constant works; it names the PostgreSQL advisory lock that only sealers take.
_SEAL_LOCK_KEY = 4_215_042_196
SEAL_BATCH = 1000  # rows per UPDATE and commit of the sealer
# The columns a bulk append gives, in this order (``insert_from_select``).
APPEND_COLUMNS = (
    "occurred_at",
    "actor_user_id",
    "actor_label",
    "action",
    "object_type",
    "object_id",
    "district_id",
    "before_json",
    "after_json",
)


OBJECT_ID_LENGTH = 64  # audit_logs.object_id


class AuditLog(Base):
    __tablename__ = "audit_logs"

    id: Mapped[int] = mapped_column(primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"), index=True)
    # Who acted, readable even if the account is later renamed: a username, "cli" or "system".
    actor_label: Mapped[str] = mapped_column(sa.String(100))
    action: Mapped[str] = mapped_column(sa.String(64), index=True)  # e.g. "resident.create"
    object_type: Mapped[str] = mapped_column(sa.String(64))
    object_id: Mapped[str] = mapped_column(sa.String(OBJECT_ID_LENGTH))
    # The district the object belongs to, so district staff and filters can scope the trail.
    district_id: Mapped[int | None] = mapped_column(sa.ForeignKey("districts.id"))
    # Canonical JSON summaries of the object before and after; never full personal data.
    before_json: Mapped[str | None] = mapped_column(sa.Text)
    after_json: Mapped[str | None] = mapped_column(sa.Text)
    # The row's place in the chain, given by the sealer (NULL until sealed): 1, 2, 3...
    seal_seq: Mapped[int | None] = mapped_column(sa.BigInteger, unique=True)
    # The previous sealed row's hash and this row's (NULL until sealed). Unique: two sealers
    # that read the same tail cannot both link to it.
    prev_hash: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    row_hash: Mapped[str | None] = mapped_column(sa.String(64), unique=True)

    __table_args__ = (
        sa.Index("ix_audit_logs_object", "object_type", "object_id"),
        # Just the unsealed rows: the sealer finds them without reading the sealed millions.
        sa.Index(
            "ix_audit_logs_unsealed",
            "id",
            postgresql_where=sa.text("seal_seq IS NULL"),
            sqlite_where=sa.text("seal_seq IS NULL"),
        ),
    )

    @property
    def before(self) -> Any:
        return json.loads(self.before_json) if self.before_json else None

    @property
    def after(self) -> Any:
        return json.loads(self.after_json) if self.after_json else None


def canonical_json(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)


def _content(row: Any) -> list:
    return [
        row.occurred_at.isoformat(),
        row.actor_user_id,
        row.actor_label,
        row.action,
        row.object_type,
        row.object_id,
        row.district_id,
        row.before_json,
        row.after_json,
    ]


def _sha256(payload: list) -> str:
    text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def compute_row_hash(row: Any, *, prev_hash: str | None = None, seal_seq: int | None = None) -> str:
    """The hash of a sealed row (an AuditLog or a Core row of its table): the form tag, the
    previous row's hash, the row's id and place in the chain, and what it records.
    ``prev_hash`` and ``seal_seq`` default to the row's own (the sealer passes the new ones)."""
    prev_hash = row.prev_hash if prev_hash is None else prev_hash
    seal_seq = row.seal_seq if seal_seq is None else seal_seq
    return _sha256([2, prev_hash, row.id, seal_seq, *_content(row)])


def compute_legacy_hash(row: Any) -> str:
    """The form of the rows chained at insert before migration 0014 (no id, no seal_seq)."""
    return _sha256([row.prev_hash, *_content(row)])


def _current_actor() -> tuple[int | None, str]:
    if has_request_context() and getattr(current_user, "is_authenticated", False):
        return current_user.id, current_user.username
    from flask import g  # local: g is only meaningful inside an app context

    token = g.get("api_token") if has_request_context() else None
    if token is not None:
        return token.user_id, f"token:{token.prefix}"
    return None, "cli" if not has_request_context() else "anonymous"


def _actor_of(actor: Any | None) -> tuple[int | None, str]:
    if actor is not None:
        return actor.id, actor.username
    return _current_actor()


# --------------------------------------------------------------------------- appending


def record(
    action: str,
    obj: Any | None = None,
    *,
    object_type: str | None = None,
    object_id: Any = None,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    district_id: int | None = None,
    actor: Any | None = None,
) -> AuditLog:
    """Append one audit row in the caller's transaction (flush, never commit). It is
    unsealed: ``seal`` chains it once it has committed. Takes no lock and reads nothing.

    ``obj`` is a mapped instance; its table name and primary key name the object unless
    ``object_type`` / ``object_id`` are given.
    """
    session = db.session
    if obj is not None:
        session.flush()  # the object needs its primary key before we can name it
        object_type = object_type or obj.__tablename__
        object_id = object_id if object_id is not None else sa.inspect(obj).identity[0]
    if object_type is None or object_id is None:
        raise ValueError("an audit row needs an object type and id")
    actor_id, actor_label = _actor_of(actor)
    row = AuditLog(
        occurred_at=now_utc(),
        actor_user_id=actor_id,
        actor_label=actor_label,
        action=action,
        object_type=object_type,
        object_id=_object_id(object_id),
        district_id=district_id,
        before_json=canonical_json(before),
        after_json=canonical_json(after),
    )
    session.add(row)
    session.flush()
    return row


def _object_id(value: Any) -> str:
    """The object's id as the column holds it (64 characters). A longer one (a typed sign-in
    name, a gateway's event id) keeps its start and a digest of the whole, so the row is
    written, still names its object and is found again by the same value."""
    text = str(value)
    if len(text) <= OBJECT_ID_LENGTH:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"{text[: OBJECT_ID_LENGTH - 17]}~{digest}"


def record_many(rows: Iterable[Mapping[str, Any]]) -> int:
    """Append many audit rows in one executemany (the caller's transaction, unsealed).
    Each row is a mapping with ``action``, ``object_type``, ``object_id`` and optionally
    ``before``, ``after`` (mappings, stored as canonical JSON), ``district_id``, ``actor``
    (a user; the current one by default) and ``occurred_at`` (now by default). Returns how
    many rows were appended."""
    now = now_utc()
    default_actor = _current_actor()
    values = []
    for row in rows:
        if row.get("object_type") is None or row.get("object_id") is None:
            raise ValueError("an audit row needs an object type and id")
        actor_id, actor_label = (
            _actor_of(row["actor"]) if row.get("actor") is not None else default_actor
        )
        values.append(
            {
                "occurred_at": row.get("occurred_at") or now,
                "actor_user_id": actor_id,
                "actor_label": actor_label,
                "action": row["action"],
                "object_type": row["object_type"],
                "object_id": _object_id(row["object_id"]),
                "district_id": row.get("district_id"),
                "before_json": canonical_json(row.get("before")),
                "after_json": canonical_json(row.get("after")),
            }
        )
    if not values:
        return 0
    db.session.flush()  # rows the audit rows name are written first, as ``record`` does
    db.session.execute(AuditLog.__table__.insert(), values)
    return len(values)


def shared_columns(action: str, object_type: str, *, occurred_at: datetime, actor=None) -> list:
    """The first five columns of ``insert_from_select``'s SELECT, which every row of one bulk
    append shares: when, who (``actor``, or whoever is acting now, as ``record`` names
    them) and what was done to which kind of object."""
    actor_id, actor_label = (actor.id, actor.username) if actor is not None else _current_actor()
    text = sa.String()
    return [
        sa.literal(occurred_at, UTCDateTime()).label("occurred_at"),
        sa.literal(actor_id, sa.Integer).label("actor_user_id"),
        sa.literal(actor_label, text).label("actor_label"),
        sa.literal(action, text).label("action"),
        sa.literal(object_type, text).label("object_type"),
    ]


def insert_from_select(select_stmt: sa.Select) -> int:
    """Append one audit row per row of ``select_stmt`` in one INSERT … SELECT (the caller's
    transaction, unsealed). The SELECT's columns are, in this order: occurred_at,
    actor_user_id, actor_label, action, object_type, object_id, district_id, before_json,
    after_json (JSON as text; ``canonical_json``'s form keeps them readable alike).
    Returns how many rows were appended."""
    table = AuditLog.__table__
    db.session.flush()  # the SELECT may read rows still pending in the session
    result = db.session.execute(
        table.insert()
        .from_select([table.c[name] for name in APPEND_COLUMNS], select_stmt)
        .execution_options(preserve_rowcount=True)  # SQLAlchemy keeps it for UPDATE only
    )
    return result.rowcount


# --------------------------------------------------------------------------- sealing


@dataclass(frozen=True)
class SealReport:
    sealed: int  # rows sealed by this run
    batches: int
    last_seq: int  # the chain's length after the run (0: empty)

    def to_dict(self) -> dict:
        return {"sealed": self.sealed, "batches": self.batches, "last_seq": self.last_seq}


def _lock_sealer() -> None:
    """Sealers take turns (PostgreSQL: an advisory lock held to the end of the batch's
    transaction; only sealers take it, appends never wait for it)."""
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(sa.select(sa.func.pg_advisory_xact_lock(_SEAL_LOCK_KEY)))
    else:
        # SQLite: become the writer before reading (a write that changes nothing), so that
        # the batch's UPDATE never finds another writer in the way of a read transaction
        # ("database is locked"); other writers wait for the batch (busy_timeout).
        db.session.execute(sa.text("UPDATE audit_logs SET seal_seq = seal_seq WHERE 0 = 1"))


def _tail() -> tuple[int, str]:
    table = AuditLog.__table__
    tail = db.session.execute(
        sa.select(table.c.seal_seq, table.c.row_hash)
        .where(table.c.seal_seq.is_not(None))
        .order_by(table.c.seal_seq.desc())
        .limit(1)
    ).first()
    return (tail.seal_seq, tail.row_hash) if tail is not None else (0, GENESIS_HASH)


_SEAL_UPDATE = sa.text(
    "UPDATE audit_logs SET seal_seq = v.seal_seq, prev_hash = v.prev_hash, row_hash = v.row_hash"
    " FROM unnest(:ids, :seqs, :prevs, :hashes) AS v(id, seal_seq, prev_hash, row_hash)"
    " WHERE audit_logs.id = v.id AND audit_logs.seal_seq IS NULL"
).bindparams(
    sa.bindparam("ids", type_=postgresql.ARRAY(sa.Integer)),
    sa.bindparam("seqs", type_=postgresql.ARRAY(sa.BigInteger)),
    sa.bindparam("prevs", type_=postgresql.ARRAY(sa.String)),
    sa.bindparam("hashes", type_=postgresql.ARRAY(sa.String)),
)


def _write_seals(seals: list[dict]) -> int:
    """One UPDATE for the batch; each row only from unsealed (a second sealer, or a row
    sealed meanwhile, makes the count come short). Returns the rows written."""
    table = AuditLog.__table__
    if db.session.get_bind().dialect.name == "postgresql":
        # Four arrays, not a VALUES list of 4 x batch parameters: the statement is compiled
        # once and cached (a VALUES construct is compiled again for every batch, which cost
        # more than the UPDATE itself).
        return db.session.execute(
            _SEAL_UPDATE,
            {
                "ids": [s["id"] for s in seals],
                "seqs": [s["seal_seq"] for s in seals],
                "prevs": [s["prev_hash"] for s in seals],
                "hashes": [s["row_hash"] for s in seals],
            },
        ).rowcount
    # SQLite has no VALUES list with named columns to join: an executemany, in-process.
    statement = (
        sa.update(table)
        .where(table.c.id == sa.bindparam("seal_id"), table.c.seal_seq.is_(None))
        .values(
            seal_seq=sa.bindparam("seal_seq_"),
            prev_hash=sa.bindparam("prev_hash_"),
            row_hash=sa.bindparam("row_hash_"),
        )
    )
    params = [
        {
            "seal_id": s["id"],
            "seal_seq_": s["seal_seq"],
            "prev_hash_": s["prev_hash"],
            "row_hash_": s["row_hash"],
        }
        for s in seals
    ]
    return db.session.connection().execute(statement, params).rowcount


def seal(batch_size: int = SEAL_BATCH) -> SealReport:
    """Chain every committed unsealed row that existed when the run began, in id order, a
    batch per transaction: COMMITS (run it in a session of its own: a job, a command).

    Rows appended after the run began, or still uncommitted, are left to the next run, so a
    run always ends even while requests keep appending."""
    session = db.session
    table = AuditLog.__table__
    session.commit()  # the run's own transactions from here
    up_to = session.scalar(sa.select(sa.func.max(table.c.id))) or 0
    sealed = batches = conflicts = 0
    last_seq = 0
    while True:
        _lock_sealer()
        last_seq, prev = _tail()
        rows = session.execute(
            sa.select(table)
            .where(table.c.seal_seq.is_(None), table.c.id <= up_to)
            .order_by(table.c.id)
            .limit(batch_size)
        ).all()
        if not rows:
            session.commit()
            return SealReport(sealed, batches, last_seq)
        seals = []
        for row in rows:
            last_seq += 1
            row_hash = compute_row_hash(row, prev_hash=prev, seal_seq=last_seq)
            seals.append(
                {"id": row.id, "seal_seq": last_seq, "prev_hash": prev, "row_hash": row_hash}
            )
            prev = row_hash
        if _write_seals(seals) != len(seals):
            # Another sealer got there first (SQLite has no sealer lock): start the batch
            # again from the new tail. Never more than a few times in a row.
            session.rollback()
            conflicts += 1
            if conflicts > 5:
                raise RuntimeError("audit sealing keeps conflicting with another sealer")
            continue
        session.commit()
        conflicts = 0
        sealed += len(seals)
        batches += 1


def seal_job() -> dict:
    """The ``audit-seal`` job: seal what has committed, report what is left."""
    report = seal()
    backlog = unsealed_backlog()
    return report.to_dict() | backlog.to_dict()


# --------------------------------------------------------------------------- verifying


@dataclass(frozen=True)
class Backlog:
    unsealed: int
    oldest_unsealed_at: datetime | None

    @property
    def oldest_age_s(self) -> float | None:
        if self.oldest_unsealed_at is None:
            return None
        return round((now_utc() - self.oldest_unsealed_at).total_seconds(), 1)

    def to_dict(self) -> dict:
        return {"unsealed": self.unsealed, "oldest_unsealed_age_s": self.oldest_age_s}


def unsealed_backlog() -> Backlog:
    """How many committed rows wait for the sealer, and when the oldest was appended."""
    table = AuditLog.__table__
    count, oldest = db.session.execute(
        sa.select(sa.func.count(), sa.func.min(table.c.occurred_at)).where(
            table.c.seal_seq.is_(None)
        )
    ).one()
    if oldest is not None and oldest.tzinfo is None:  # an aggregate skips the column type
        oldest = UTCDateTime().process_result_value(oldest, None)
    return Backlog(count, oldest)


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    rows_checked: int
    broken_row_id: int | None = None
    problem: str | None = None  # "content" (row edited) or "link" (row removed or reordered)
    unsealed: int = 0  # rows appended and not yet sealed (not part of the proof yet)
    oldest_unsealed_age_s: float | None = None


def verify_chain(batch_size: int = 1000) -> ChainReport:
    """Walk the sealed rows in chain order and report the first whose hash does not hold,
    with how many rows still wait to be sealed."""
    backlog = unsealed_backlog()
    extra = {"unsealed": backlog.unsealed, "oldest_unsealed_age_s": backlog.oldest_age_s}
    expected_prev = GENESIS_HASH
    checked = 0
    legacy = True  # still in the prefix of rows chained before migration 0014
    table = AuditLog.__table__
    while True:
        # Core rows, not ORM objects: nothing piles up in the session's identity map.
        rows = db.session.execute(
            sa.select(table)
            .where(table.c.seal_seq > checked)
            .order_by(table.c.seal_seq)
            .limit(batch_size)
        ).all()
        if not rows:
            return ChainReport(ok=True, rows_checked=checked, **extra)
        for row in rows:
            if row.seal_seq != checked + 1 or row.prev_hash != expected_prev:
                return ChainReport(False, checked, row.id, "link", **extra)
            if row.row_hash == compute_row_hash(row):
                legacy = False
            elif not (legacy and row.row_hash == compute_legacy_hash(row)):
                return ChainReport(False, checked, row.id, "content", **extra)
            expected_prev = row.row_hash
            checked += 1
