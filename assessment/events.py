"""Eligibility events: written in the same transaction as their cause, announced in-process.

The voucher side reads ``eligibility_events`` in id order with its own cursor (durable), and
may also subscribe to ``eligibility_changed`` to act at once in the same transaction.
"""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from blinker import Namespace

from assessment.models import EligibilityEvent
from eldercare.db import db

_signals = Namespace()
eligibility_changed = _signals.signal("eligibility-changed")


def emit(resident_id: int, kind: str, effective_on: date, *, assessment_id: int | None = None):
    event = EligibilityEvent(
        resident_id=resident_id, kind=kind, effective_on=effective_on, assessment_id=assessment_id
    )
    db.session.add(event)
    db.session.flush()
    eligibility_changed.send(event, resident_id=resident_id, kind=kind)
    return event


def events_after(event_id: int, limit: int = 500) -> list[EligibilityEvent]:
    """The outbox for a consumer: events after the last one it handled, oldest first."""
    return list(
        db.session.scalars(
            sa.select(EligibilityEvent)
            .where(EligibilityEvent.id > event_id)
            .order_by(EligibilityEvent.id)
            .limit(limit)
        )
    )


def event_by_id(event_id: int) -> EligibilityEvent | None:
    """One event of the outbox, for a consumer that set it aside and handles it again."""
    return db.session.get(EligibilityEvent, event_id)
