"""The append-only audit trail, chained by SHA-256.

Each row's hash covers its own fields and the previous row's hash, so editing or
deleting any row breaks every link after it; ``verify_chain`` finds the first break.
The table also refuses UPDATE and DELETE through database triggers (see the migration).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from flask import has_request_context
from flask_login import current_user
from sqlalchemy.orm import Mapped, mapped_column

from eldercare.db import Base, UTCDateTime, db
from eldercare.timeutil import now_utc

GENESIS_HASH = "0" * 64
# Any constant works; it names the PostgreSQL advisory lock that serialises appends.
_AUDIT_LOCK_KEY = 4_215_042_195


class AuditLog(Base):
    __tablename__ = "audit_logs"

    id: Mapped[int] = mapped_column(primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"), index=True)
    # Who acted, readable even if the account is later renamed: a username, "cli" or "system".
    actor_label: Mapped[str] = mapped_column(sa.String(100))
    action: Mapped[str] = mapped_column(sa.String(64), index=True)  # e.g. "resident.create"
    object_type: Mapped[str] = mapped_column(sa.String(64))
    object_id: Mapped[str] = mapped_column(sa.String(64))
    # The district the object belongs to, so district staff and filters can scope the trail.
    district_id: Mapped[int | None] = mapped_column(sa.ForeignKey("districts.id"))
    # Canonical JSON summaries of the object before and after; never full personal data.
    before_json: Mapped[str | None] = mapped_column(sa.Text)
    after_json: Mapped[str | None] = mapped_column(sa.Text)
    # Unique: two transactions that both read the same tail cannot both append to it.
    prev_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)
    row_hash: Mapped[str] = mapped_column(sa.String(64), unique=True)

    __table_args__ = (sa.Index("ix_audit_logs_object", "object_type", "object_id"),)

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


def compute_row_hash(row: Any) -> str:
    """Hash of an AuditLog or a Core row of its table (both have the same attributes)."""
    payload = json.dumps(
        [
            row.prev_hash,
            row.occurred_at.isoformat(),
            row.actor_user_id,
            row.actor_label,
            row.action,
            row.object_type,
            row.object_id,
            row.district_id,
            row.before_json,
            row.after_json,
        ],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _current_actor() -> tuple[int | None, str]:
    if has_request_context() and getattr(current_user, "is_authenticated", False):
        return current_user.id, current_user.username
    from flask import g  # local: g is only meaningful inside an app context

    token = g.get("api_token") if has_request_context() else None
    if token is not None:
        return token.user_id, f"token:{token.prefix}"
    return None, "cli" if not has_request_context() else "anonymous"


def lock_chain() -> None:
    """Take the audit chain's lock (PostgreSQL; held to the end of the transaction, so
    appends queue up instead of forking the chain). Taking it again in the same transaction
    is harmless.

    Money transactions call this first, before they lock any voucher, redemption or ledger
    row, because every one of them appends to the chain: a transaction that locked rows
    and then waited here could deadlock with one that holds the chain and wants those rows.
    The whole order is written down in ``vouchers.ledger``."""
    session = db.session
    if session.get_bind().dialect.name == "postgresql":
        # No autoflush: pending changes to other rows must be written after the lock.
        with session.no_autoflush:
            session.execute(sa.select(sa.func.pg_advisory_xact_lock(_AUDIT_LOCK_KEY)))


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
    """Append one audit row in the caller's transaction (flush, never commit).

    ``obj`` is a mapped instance; its table name and primary key name the object unless
    ``object_type`` / ``object_id`` are given.
    """
    session = db.session
    # Before the flush below: pending changes to rows (a redemption's fields, say) are
    # written, and so locked, only after the chain's lock, as the lock order wants.
    lock_chain()
    if obj is not None:
        session.flush()  # the object needs its primary key before we can name it
        object_type = object_type or obj.__tablename__
        object_id = object_id if object_id is not None else sa.inspect(obj).identity[0]
    if object_type is None or object_id is None:
        raise ValueError("an audit row needs an object type and id")
    if actor is not None:
        actor_id, actor_label = actor.id, actor.username
    else:
        actor_id, actor_label = _current_actor()

    tail = session.scalar(sa.select(AuditLog.row_hash).order_by(AuditLog.id.desc()).limit(1))
    row = AuditLog(
        occurred_at=now_utc(),
        actor_user_id=actor_id,
        actor_label=actor_label,
        action=action,
        object_type=object_type,
        object_id=str(object_id),
        district_id=district_id,
        before_json=canonical_json(before),
        after_json=canonical_json(after),
        prev_hash=tail or GENESIS_HASH,
    )
    row.row_hash = compute_row_hash(row)
    session.add(row)
    session.flush()
    return row


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    rows_checked: int
    broken_row_id: int | None = None
    problem: str | None = None  # "content" (row edited) or "link" (row removed or reordered)


def verify_chain(batch_size: int = 1000) -> ChainReport:
    """Walk the whole trail in order and report the first row whose hash does not hold."""
    expected_prev = GENESIS_HASH
    checked = 0
    last_id = 0
    while True:
        # Core rows, not ORM objects: nothing piles up in the session's identity map.
        table = AuditLog.__table__
        rows = db.session.execute(
            sa.select(table).where(table.c.id > last_id).order_by(table.c.id).limit(batch_size)
        ).all()
        if not rows:
            return ChainReport(ok=True, rows_checked=checked)
        for row in rows:
            if row.prev_hash != expected_prev:
                return ChainReport(False, checked, row.id, "link")
            if compute_row_hash(row) != row.row_hash:
                return ChainReport(False, checked, row.id, "content")
            expected_prev = row.row_hash
            checked += 1
            last_id = row.id


AUDIT_COLUMNS = (
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


def insert_from_select(select_stmt: sa.Select, *, batch_size: int = 5000) -> int:
    """Append one audit row per row of ``select_stmt`` (its columns named as in
    ``AUDIT_COLUMNS``; ``occurred_at`` timezone-aware UTC, the JSON columns canonical as
    ``canonical_json`` writes them) in the caller's transaction, and return how many.

    For bulk work (a month's issuance or expiry): the select is streamed in batches, each
    batch chained in Python from the tail and written in one statement (COPY on
    PostgreSQL), so memory stays bounded whatever the number of rows."""
    session = db.session
    lock_chain()
    session.flush()
    tail = session.scalar(sa.select(AuditLog.row_hash).order_by(AuditLog.id.desc()).limit(1))
    prev = tail or GENESIS_HASH
    table = AuditLog.__table__
    columns = (*AUDIT_COLUMNS, "prev_hash", "row_hash")
    postgres = session.get_bind().dialect.name == "postgresql"
    result = session.execute(select_stmt.execution_options(yield_per=batch_size))
    written = 0
    for chunk in result.partitions(batch_size):
        rows = []
        for source in chunk:
            values = {c: source._mapping[c] for c in AUDIT_COLUMNS}
            values["object_id"] = str(values["object_id"])
            values["occurred_at"] = values["occurred_at"].astimezone(UTC)
            values["prev_hash"] = prev
            values["row_hash"] = compute_row_hash(SimpleNamespace(**values))
            prev = values["row_hash"]
            rows.append(values)
        if postgres:
            raw = session.connection().connection.driver_connection
            with (
                raw.cursor() as cursor,
                cursor.copy(
                    f"COPY audit_logs ({', '.join(columns)}) FROM STDIN"  # noqa: S608 - constants
                ) as copy,
            ):
                for values in rows:
                    copy.write_row(
                        [
                            values["occurred_at"].replace(tzinfo=None)
                            if c == "occurred_at"
                            else values[c]
                            for c in columns
                        ]
                    )
        else:
            session.execute(sa.insert(table), rows)
        written += len(rows)
    return written
