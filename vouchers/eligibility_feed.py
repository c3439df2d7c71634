"""The voucher side of assessment's eligibility outbox.

Assessment writes an ``eligibility_events`` row in the same transaction as each approval,
death, move or exclusion; this consumer reads them in id order after its own cursor and
advances the cursor in the same transaction as what it did about them, so a crash makes the
next run redo exactly the unfinished events, and two schedulers never both handle one (the
cursor row is locked for the run).

What each event means for vouchers:
- assessment_approved, exclusion_ended: an elder eligible today without this month's voucher
  gets it at once (POLICY allows 5 working days; a minute is within that). An approved result
  below the programme's levels stops vouchers from the next month.
- death: the vouchers from the month of death on are revoked at once.
- moved_out, exclusion_started: vouchers stop from the month after the one it takes effect in
  (the current voucher stays; one already issued for a later month is revoked).
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from assessment.eligibility import eligibility_on
from assessment.events import events_after
from eldercare.db import db
from eldercare.errors import DomainError
from eldercare.residents import Resident
from eldercare.timeutil import local_today
from vouchers.issuance import (
    month_of,
    next_month,
    revoke_for,
    serialize_issuance,
    try_issue,
)
from vouchers.models import EventCursor, Shortfall

log = logging.getLogger(__name__)
CURSOR = "eligibility"
LOSS_REASONS = {"moved_out": "moved_out", "exclusion_started": "exclusion"}


def _locked_cursor() -> EventCursor:
    statement = sa.select(EventCursor).where(EventCursor.name == CURSOR)
    if db.session.scalar(statement) is None:
        try:
            with db.session.begin_nested():
                db.session.add(EventCursor(name=CURSOR, last_event_id=0))
        except sa.exc.IntegrityError:
            pass  # another consumer created it at the same moment
    return db.session.scalar(statement.with_for_update().execution_options(populate_existing=True))


def _others_waiting(resident_id: int, month) -> bool:
    district_id = db.session.get(Resident, resident_id).district_id
    return (
        db.session.scalar(
            sa.select(Shortfall.id)
            .where(
                Shortfall.month == month,
                Shortfall.district_id == district_id,
                Shortfall.resolved_at.is_(None),
                Shortfall.resident_id != resident_id,
            )
            .limit(1)
        )
        is not None
    )


def _handle(event, result: dict) -> None:
    today = local_today()
    current = month_of(today)
    if event.kind in ("assessment_approved", "exclusion_ended"):
        eligibility = eligibility_on(event.resident_id, today)
        if eligibility.eligible:
            outcome = try_issue(
                event.resident_id,
                current,
                actor_id=None,
                reason="eligibility",
                eligibility=eligibility,
                # Elders already waiting in this district go first (the documented priority):
                # a newcomer joins the queue instead of taking money that came back meanwhile.
                district_exhausted=_others_waiting(event.resident_id, current),
            )
            if outcome.status == "issued":
                result["issued"].append(outcome.voucher.id)
            elif outcome.status == "left_out":
                result["left_out"].append(event.resident_id)
        elif (
            event.kind == "assessment_approved"
            and "level_below_threshold" in eligibility.reason_codes
        ):
            done = revoke_for(
                event.resident_id,
                from_month=next_month(current),
                reason="assessment_below_threshold",
            )
            result["revoked"].extend(done["revoked"])
    elif event.kind == "death":
        done = revoke_for(
            event.resident_id, from_month=month_of(event.effective_on), reason="death"
        )
        result["revoked"].extend(done["revoked"])
    elif event.kind in LOSS_REASONS:
        done = revoke_for(
            event.resident_id,
            from_month=next_month(month_of(event.effective_on)),
            reason=LOSS_REASONS[event.kind],
        )
        result["revoked"].extend(done["revoked"])


def process_eligibility_events(limit: int = 500) -> dict:
    """Handle up to ``limit`` new events; returns what was done, for the job's log and the
    CLI's ``--json``. An event whose handling fails (e.g. no voucher policy in force) stops
    the run before it, so it is retried on the next run rather than skipped."""
    serialize_issuance()  # before the cursor row: the same lock order as the monthly run
    cursor = _locked_cursor()
    result = {
        "processed": 0,
        "issued": [],
        "revoked": [],
        "left_out": [],
        "last_event_id": cursor.last_event_id,
        "error": None,
    }
    for event in events_after(cursor.last_event_id, limit):
        try:
            with db.session.begin_nested():
                _handle(event, result)
        except DomainError as error:
            log.warning("eligibility event %s not handled: %s", event.id, error)
            result["error"] = {"event_id": event.id, "message": str(error.message)}
            break
        cursor.last_event_id = event.id
        result["processed"] += 1
    result["last_event_id"] = cursor.last_event_id
    db.session.flush()
    return result
