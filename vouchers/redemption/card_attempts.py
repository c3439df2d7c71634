"""A printed card's PIN attempts, counted on a connection of their own (PostgreSQL; the
connection comes from ``eldercare.own_connection``).

A guess takes one of the day's attempts BEFORE its PIN is compared: a conditional UPDATE
(``… WHERE the day's count is under the limit RETURNING the new count``) committed at once
on its own connection. The row lock of the UPDATE orders guesses sent at the same moment,
the commit makes each count visible to the next, and the request's rollback (every wrong
PIN fails its request) cannot take it back. So however many guesses arrive at once, at most
``limit`` are ever compared in a day; the rest are refused as locked without being judged.
A right PIN then resets the count, also committed on its own.

Only where the card's row is committed and visible to another connection, which it always
is in production (a card is issued in an earlier request). Elsewhere (SQLite, whose writers
would wait for the request's own transaction; a card not committed yet, as in the test
suite's rolled-back transactions) ``reserve`` answers None and ``cards`` counts in the
request's transaction instead.
"""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa

from eldercare import own_connection
from eldercare.audit import AuditLog, canonical_json
from eldercare.timeutil import now_utc
from vouchers.models import VoucherCard

LOCKED = -1  # ``reserve``'s answer when the day's attempts are used up
STALE = -2  # the card's PIN was set again since the request read it: read it again


def reserve(card_id: int, pin_hash: str, today: date, limit: int) -> int | None:
    """Take one of today's attempts: its number (1…limit), LOCKED, or None where this
    cannot be counted on a connection of its own (see the module's docstring)."""
    if not own_connection.available():
        return None
    for _ in range(3):
        try:
            number, row = _try_reserve(card_id, pin_hash, today, limit)
        except sa.exc.OperationalError:
            return None
        if number is not None:
            return number
        if row is None:
            return None  # not visible to another connection: count in-session
        if row.pin_hash != pin_hash:
            return STALE
        if row.failed_pin_day == today and row.failed_pin_count >= limit:
            return LOCKED
        # A right PIN reset the count between the UPDATE and the look: try again.
    return LOCKED  # reset again and again meanwhile: refuse this one rather than judge it


def _try_reserve(card_id: int, pin_hash: str, today: date, limit: int):
    table = VoucherCard.__table__
    c = table.c
    # A lock held too long (maybe by the request itself) raises: ``reserve`` counts in-session.
    with own_connection.transaction() as conn:
        number = conn.execute(
            sa.update(table)
            .where(
                c.id == card_id,
                c.pin_hash == pin_hash,  # a PIN set since the card was read: not this one
                sa.or_(
                    c.failed_pin_day.is_(None),
                    c.failed_pin_day < today,
                    sa.and_(c.failed_pin_day == today, c.failed_pin_count < limit),
                ),
            )
            .values(
                failed_pin_count=sa.case(
                    (c.failed_pin_day == today, c.failed_pin_count + 1), else_=1
                ),
                failed_pin_day=today,
            )
            .returning(c.failed_pin_count)
        ).scalar()
        if number is not None:
            return number, None
        row = conn.execute(
            sa.select(c.failed_pin_count, c.failed_pin_day, c.pin_hash).where(c.id == card_id)
        ).first()
        return None, row


def reset(card_id: int, pin_hash: str, today: date) -> None:
    """The right PIN: today's count starts again (the rule), committed on its own."""
    c = VoucherCard.__table__.c
    with own_connection.transaction() as conn:
        conn.execute(
            sa.update(VoucherCard.__table__)
            .where(c.id == card_id, c.pin_hash == pin_hash, c.failed_pin_day == today)
            .values(failed_pin_count=0, failed_pin_day=None)
        )


def record_lock(card_id: int, count: int, today: date, actor_id: int, actor_label: str) -> None:
    """The audit row for the wrong PIN that locked the card, committed with nothing else
    (the request that typed it rolls back). Appended unsealed, as ``audit.record`` does."""
    with own_connection.transaction() as conn:
        conn.execute(
            AuditLog.__table__.insert().values(
                occurred_at=now_utc(),
                actor_user_id=actor_id,
                actor_label=actor_label,
                action="voucher_card.locked",
                object_type=VoucherCard.__tablename__,
                object_id=str(card_id),
                district_id=None,
                before_json=None,
                after_json=canonical_json({"failed_pin_count": count, "day": today.isoformat()}),
            )
        )
