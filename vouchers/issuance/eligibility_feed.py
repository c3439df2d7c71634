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

Eligibility that begins on a later day: after any event but a death, when assessment can
tell the day the elder becomes eligible (a fixed-term exclusion ends, the elder reaches the
minimum age), that day is kept as an ``EligibilityStart``; every run issues the vouchers of
the starts that are due, judging eligibility again on the day. The job runs every minute, so
the first voucher comes on the day eligibility begins (POLICY: within 5 working days).

One event that fails for good (a refusal, a bug) is parked (``ParkedEvent``, with its error)
and the run goes on with the next; the bureau retries or dismisses it on its page. A
transient failure (a deadlock, a lock timeout, a dropped connection) stops the run instead,
so the same events are tried again by the next run.
"""

from __future__ import annotations

import logging
from datetime import date, datetime

import sqlalchemy as sa
from flask_babel import force_locale
from flask_babel import lazy_gettext as _l

from assessment.eligibility import eligibility_on, eligible_from
from assessment.events import event_by_id, events_after
from eldercare import audit
from eldercare.accounts import User
from eldercare.db import db, is_transient
from eldercare.errors import Conflict, DomainError, InvalidInput, NotFound
from eldercare.residents import Resident
from eldercare.timeutil import local_today, now_utc
from vouchers.issuance.monthly import (
    lock_vouchers,
    month_of,
    next_month,
    revoke_for,
    serialize_issuance,
    try_issue,
)
from vouchers.issuance.notices import tell_voucher_issued
from vouchers.models import EligibilityStart, EventCursor, ParkedEvent, Shortfall, Voucher

log = logging.getLogger(__name__)
CURSOR = "eligibility"
LOSS_REASONS = {"moved_out": "moved_out", "exclusion_started": "exclusion"}
STARTS = ("assessment_approved", "exclusion_ended")
DUE_BATCH = 500  # starts issued per run; the rest wait a minute


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


def _new_result() -> dict:
    # "died": the residents whose death this run handled (the job has the anomaly rules
    # re-check their redemptions once this run has committed).
    return {"issued": [], "revoked": [], "left_out": [], "died": []}


def _merge(into: dict, part: dict) -> None:
    for key in ("issued", "revoked", "left_out", "died"):
        into[key].extend(part[key])


def _issue_today(
    resident_id: int, today: date, result: dict, eligibility=None, *, since: datetime
) -> str:
    """This month's voucher for an elder eligible today, behind the elders already waiting
    in the district (the documented priority): a newcomer joins the queue instead of taking
    money that came back meanwhile. The outcome's status.

    The family is told of a voucher issued ``since`` the event (or start) that made the
    elder eligible: by this run, or by the monthly catch-up when it came first. A voucher
    held before (a routine re-assessment mid-month) is old news and told nothing."""
    current = month_of(today)
    outcome = try_issue(
        resident_id,
        current,
        actor_id=None,
        reason="eligibility",
        eligibility=eligibility,
        district_exhausted=_others_waiting(resident_id, current),
    )
    if outcome.status == "issued":
        result["issued"].append(outcome.voucher.id)
    elif outcome.status == "left_out":
        result["left_out"].append(resident_id)
    voucher = outcome.voucher
    if voucher is not None and voucher.status == "active" and voucher.issued_at >= since:
        tell_voucher_issued(voucher)
    return outcome.status


def _remember_start(event, today: date) -> None:
    """Keep the day on which the elder becomes eligible, when it is later than today and
    known now (a fixed-term exclusion's end, the minimum age)."""
    start = eligible_from(event.resident_id, max(today, event.effective_on))
    if start is None or start <= today:
        return
    known = db.session.scalar(
        sa.select(EligibilityStart.id).where(
            EligibilityStart.resident_id == event.resident_id, EligibilityStart.due_on == start
        )
    )
    if known is None:
        db.session.add(
            EligibilityStart(resident_id=event.resident_id, due_on=start, event_id=event.id)
        )
        db.session.flush()


def _handle(event, result: dict) -> None:
    today = local_today()
    current = month_of(today)
    if event.kind == "death":
        done = revoke_for(
            event.resident_id, from_month=month_of(event.effective_on), reason="death"
        )
        result["revoked"].extend(done["revoked"])
        result["died"].append(event.resident_id)
        return
    if event.kind in STARTS:
        eligibility = eligibility_on(event.resident_id, today)
        if eligibility.eligible:
            _issue_today(event.resident_id, today, result, eligibility, since=event.created_at)
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
    elif event.kind in LOSS_REASONS:
        done = revoke_for(
            event.resident_id,
            from_month=next_month(month_of(event.effective_on)),
            reason=LOSS_REASONS[event.kind],
        )
        result["revoked"].extend(done["revoked"])
    _remember_start(event, today)


def _try(work) -> tuple[dict, Exception | None]:
    """Run ``work(part)`` in a savepoint; a permanent failure rolls back only that savepoint
    and is returned, a transient one is raised (the run stops and is retried)."""
    part = _new_result()
    try:
        with db.session.begin_nested():
            work(part)
    except Exception as error:
        if is_transient(error):
            raise
        return part, error
    return part, None


def _describe(error: Exception) -> str:
    """The error for the bureau's page and the developers: a refusal in both languages (the
    job has no reader's language), anything else as Python said it."""
    if isinstance(error, DomainError):
        texts = []
        for locale in ("zh_Hans_CN", "en"):
            with force_locale(locale):
                texts.append(str(error.message))
        message = " / ".join(dict.fromkeys(texts))
    else:
        message = str(error)
    return f"{type(error).__name__}: {message}"[:2000]


def _park(event, error: Exception) -> dict:
    log.warning("eligibility event %s parked: %s", event.id, error, exc_info=error)
    parked = db.session.scalar(sa.select(ParkedEvent).where(ParkedEvent.event_id == event.id))
    if parked is None:
        parked = ParkedEvent(
            event_id=event.id,
            resident_id=event.resident_id,
            event_kind=event.kind,
            effective_on=event.effective_on,
            error=_describe(error),
            attempts=1,
        )
        db.session.add(parked)
    else:  # a start of an event parked before, or a retried one failing again
        parked.error, parked.attempts = _describe(error), parked.attempts + 1
        parked.resolved_at = parked.resolution = parked.resolved_by_user_id = None
    db.session.flush()
    return {"event_id": event.id, "resident_id": event.resident_id, "error": parked.error}


def _issue_due_starts(today: date, result: dict) -> None:
    """Issue the vouchers of the elders whose eligibility begins today (or began on a day
    no run saw), judged again today. One indexed query; each elder in a savepoint."""
    due = list(
        db.session.scalars(
            sa.select(EligibilityStart)
            .where(EligibilityStart.handled_at.is_(None), EligibilityStart.due_on <= today)
            .order_by(EligibilityStart.due_on, EligibilityStart.id)
            .limit(DUE_BATCH)
        )
    )
    for start in due:
        outcome = {}

        def work(part, start=start, outcome=outcome):
            eligibility = eligibility_on(start.resident_id, today)
            if not eligibility.eligible:
                outcome["status"] = "not_eligible"
                return
            outcome["status"] = _issue_today(
                start.resident_id, today, part, eligibility, since=start.recorded_at
            )

        part, error = _try(work)
        start.handled_at = now_utc()
        if error is None:
            _merge(result, part)
            start.outcome = outcome["status"]
            continue
        # Parked under the event that made the start known: retrying that event judges
        # eligibility today and issues the voucher.
        start.outcome = "parked"
        event = event_by_id(start.event_id) if start.event_id is not None else None
        if event is None:
            log.error("start %s for resident %s failed: %s", start.id, start.resident_id, error)
            continue
        result["parked"].append(_park(event, error))
    db.session.flush()


def _lock_vouchers_of(resident_ids: set[int]) -> None:
    """The live vouchers of every elder the run's events are about, locked in id order
    before any event moves money: one run may revoke several elders' vouchers, and the lock
    order (vouchers.pool.ledger) wants all of them before the first account. New vouchers the run
    issues are its own rows, which nobody else can wait on."""
    if not resident_ids:
        return
    lock_vouchers(
        db.session.scalars(
            sa.select(Voucher.id).where(
                Voucher.resident_id.in_(sorted(resident_ids)), Voucher.status == "active"
            )
        ).all()
    )


def process_eligibility_events(limit: int = 500) -> dict:
    """Handle up to ``limit`` new events, then the eligibility starts that are due; returns
    what was done, for the job's log and the CLI's ``--json``. An event that fails for good
    is parked (listed under "parked") and the run goes on; a transient error stops the run
    (raised), so the unfinished events are retried by the next one."""
    serialize_issuance()  # before the cursor row: the same lock order as the monthly run
    cursor = _locked_cursor()
    result = _new_result() | {
        "processed": 0,
        "parked": [],
        "last_event_id": cursor.last_event_id,
    }
    events = events_after(cursor.last_event_id, limit)
    _lock_vouchers_of({event.resident_id for event in events})
    for event in events:
        part, error = _try(lambda part, event=event: _handle(event, part))
        if error is None:
            _merge(result, part)
        else:
            result["parked"].append(_park(event, error))
        cursor.last_event_id = event.id
        result["processed"] += 1
    result["last_event_id"] = cursor.last_event_id
    db.session.flush()
    _issue_due_starts(local_today(), result)
    return result


# --------------------------------------------------------------------------- the bureau


def parked_in_scope(parked_id: int, district_id: int | None) -> ParkedEvent:
    """A parked event the officer may see (their district's elders, or any city-wide)."""
    parked = db.session.get(ParkedEvent, parked_id)
    if parked is None:
        raise NotFound()
    if district_id is not None:
        if db.session.get(Resident, parked.resident_id).district_id != district_id:
            raise NotFound()
    return parked


def _open(parked_id: int) -> ParkedEvent:
    # The feed's lock order: the issuance lock before the parked row (a feed run parking the
    # same event holds it, and then wants the row).
    serialize_issuance()
    parked = db.session.scalar(
        sa.select(ParkedEvent)
        .where(ParkedEvent.id == parked_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if parked is None:
        raise NotFound()
    if parked.resolved_at is not None:
        raise Conflict(_l("This event has been dealt with already."))
    return parked


def _audit(parked: ParkedEvent, action: str, actor: User, **after) -> None:
    audit.record(
        f"parked_event.{action}",
        parked,
        district_id=db.session.get(Resident, parked.resident_id).district_id,
        after={"event_id": parked.event_id, "kind": parked.event_kind, **after},
        actor=actor,
    )


def retry_parked(parked_id: int, *, actor: User) -> str | None:
    """Handle a parked event again, as of today. On success it is resolved and None is
    returned; on a permanent failure it stays parked with the new error, which is returned
    (the event's own work was rolled back to its savepoint; the attempt is kept). Audited
    either way."""
    parked = _open(parked_id)
    event = event_by_id(parked.event_id)
    if event is None:
        raise NotFound()
    part, error = _try(lambda part: _handle(event, part))
    if error is not None:
        parked.error, parked.attempts = _describe(error), parked.attempts + 1
        _audit(parked, "retry_failed", actor, error=parked.error)
        db.session.flush()
        return parked.error
    parked.resolved_at, parked.resolved_by_user_id = now_utc(), actor.id
    parked.resolution = "handled"
    _audit(parked, "handled", actor, **part)
    db.session.flush()
    return None


def dismiss_parked(parked_id: int, *, actor: User, note: str) -> None:
    """Set a parked event aside for good, with the officer's reason (audited)."""
    note = note.strip() if isinstance(note, str) else ""
    if not note:
        raise InvalidInput(details={"note": _l("Say why the event is dismissed.")})
    parked = _open(parked_id)
    parked.resolved_at, parked.resolved_by_user_id = now_utc(), actor.id
    parked.resolution, parked.resolution_note = "dismissed", note[:2000]
    _audit(parked, "dismissed", actor, note=parked.resolution_note)
    db.session.flush()
