"""Bookings: an elder, or a family agent for them, asks a provider for a service at a time.

    requested --accept--> accepted --complete--> completed
        |     \\               |
     decline   cancel        cancel
        v        \\            v
    declined      +------> cancelled

Each step checks who may take it and when, changes nothing if a check fails (raising
``InvalidTransition`` for a step the booking's state or the clock does not allow), and
writes an audit row. The vouchers domain later redeems against accepted and completed
bookings, through these functions and the ``Booking`` rows' values, never its own rules.

The platform's rules for a booking:

- Who: the elder themself (their account's ``resident_id``) or a family agent linked to the
  elder (``FamilyLink``). Not for a deceased elder.
- What: an active service of a provider that is certified and active today. Unless the
  provider is a care institution (the elder goes to live there), the service must go to the
  elder's district (``Service.districts``).
- When: in the future and at most ``MAX_DAYS_AHEAD`` days ahead (Shanghai dates), within the
  provider's opening hours in Shanghai time (no hours set = any time). The slot's length
  follows the price's unit (``SLOT_LENGTHS``): a visit, an hour and a meal last one hour; a
  day lasts until midnight; a month lasts ``MONTH_DAYS`` days. Only an hourly service may be
  booked for longer, in whole hours up to ``MAX_HOURS``. A visit, hour or meal must lie
  within one opening interval; a day or month stay must begin within one.
- How many: the bookings still holding a place (requested or accepted) that overlap the
  slot stay below ``Service.capacity_per_slot``. The service row is locked while counting
  (``SELECT ... FOR UPDATE`` on PostgreSQL), so simultaneous requests cannot overbook.
- Price: the service's price when booked, kept on the booking.
- Cancelling: the elder or their agent until ``ELDER_CANCEL_NOTICE`` (2 hours) before the
  start, so the provider does not send a caregiver for nothing; after that, only the
  provider, with a reason, until the start. Nobody cancels a service that has started.
- Accepting and declining: the provider's administrators or staff; accepting needs the
  provider certified today and a slot not yet started; declining needs a reason.
- Completing: the provider's staff, once the slot has started, an accepted booking only.
- Messages (the notification outbox, masked names only): the provider's administrators hear
  of a request and of an elder's cancellation; the elder's accounts and family agents hear of
  an acceptance, a decline, a provider's cancellation, and the day before (``jobs``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from eldercare import audit
from eldercare.accounts import FamilyLink, User, accounts_acting_for
from eldercare.db import db
from eldercare.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from eldercare.notifications import enqueue, notice, notice_messages
from eldercare.residents import Resident
from eldercare.timeutil import SHANGHAI, format_local, local_today, now_utc, to_local
from marketplace.errors import CapacityFull, InvalidTransition
from marketplace.models import Booking, Provider, ProviderStaff, Service
from marketplace.providers import WEEKDAYS, require_certified, staff_record

MAX_DAYS_AHEAD = 60
# The platform's rule: elders and families cancel themselves until 2 hours before the start.
ELDER_CANCEL_NOTICE = timedelta(hours=2)
MONTH_DAYS = 30
MAX_HOURS = 8  # the longest booking of an hourly service, in whole hours
MAX_NOTE_LENGTH = 1000
MAX_REASON_LENGTH = 500
SLOT_LENGTHS = {  # None: until the next midnight in Shanghai
    "visit": timedelta(hours=1),
    "hour": timedelta(hours=1),
    "meal": timedelta(hours=1),
    "day": None,
    "month": timedelta(days=MONTH_DAYS),
}
HOURLY_UNITS = ("visit", "hour", "meal")  # the slot must fit within one opening interval
HOLDING_STATUSES = ("requested", "accepted")  # these take a place in the slot
CLOSED_STATUSES = ("declined", "cancelled", "completed")


# --------------------------------------------------------------------------- who


def acts_for(user: User, resident_id: int) -> bool:
    """The elder themself, or a family agent linked to the elder."""
    if user.resident_id is not None and user.resident_id == resident_id:
        return True
    link = db.session.scalar(
        sa.select(FamilyLink.id).where(
            FamilyLink.agent_user_id == user.id, FamilyLink.resident_id == resident_id
        )
    )
    return link is not None


def works_for(user: User, provider_id: int) -> bool:
    """An active administrator or staff member of the provider."""
    staff = staff_record(user)
    return staff is not None and staff.provider_id == provider_id


def provider_admins(provider_id: int) -> list[User]:
    return list(
        db.session.scalars(
            sa.select(User)
            .join(ProviderStaff, ProviderStaff.user_id == User.id)
            .where(
                ProviderStaff.provider_id == provider_id,
                ProviderStaff.is_admin.is_(True),
                ProviderStaff.active.is_(True),
                User.active.is_(True),
            )
            .order_by(User.id)
        )
    )


# --------------------------------------------------------------------------- when


@dataclass(frozen=True)
class Slot:
    start: datetime
    end: datetime


def _hhmm(value: str) -> time:
    return time.fromisoformat(value)


def _hours_text(intervals: list[list[str]]) -> str:
    return ", ".join(f"{opens}–{closes}" for opens, closes in intervals)


def slot_for(service: Service, start: datetime, end: datetime | None = None) -> Slot:
    """The slot a booking of ``service`` starting at ``start`` covers (see the module rules)."""
    if start.tzinfo is None or (end is not None and end.tzinfo is None):
        raise InvalidInput(details={"slot": _l("A time zone is required.")})
    length = SLOT_LENGTHS[service.unit]
    if length is None:
        local = to_local(start)
        midnight = datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=SHANGHAI)
        default_end = midnight
    else:
        default_end = start + length
    if end is None or end == default_end:
        return Slot(start, default_end)
    if service.unit == "hour":
        hours = (end - start) / timedelta(hours=1)
        if hours == int(hours) and 1 <= hours <= MAX_HOURS:
            return Slot(start, end)
        raise InvalidInput(
            details={"slot": _l("Book whole hours, from 1 to %(max)s.", max=MAX_HOURS)}
        )
    raise InvalidInput(
        details={"slot": _l("The length of a booking is set by the service's unit.")}
    )


def check_opening_hours(provider: Provider, slot: Slot, unit: str) -> None:
    """InvalidInput unless the slot suits the provider's opening hours (Shanghai time)."""
    hours = provider.opening_hours
    if not hours:
        return  # no hours set: any time
    start, end = to_local(slot.start), to_local(slot.end)
    intervals = hours.get(WEEKDAYS[start.weekday()], [])
    begins, ends = start.time().replace(tzinfo=None), end.time().replace(tzinfo=None)
    for opens, closes in intervals:
        if unit in HOURLY_UNITS:
            fits = end.date() == start.date() and _hhmm(opens) <= begins and ends <= _hhmm(closes)
        else:
            fits = _hhmm(opens) <= begins < _hhmm(closes)
        if fits:
            return
    if not intervals:
        message = _l("The provider is closed on that day; please choose another day.")
    else:
        message = _l(
            "The provider is open %(hours)s on that day; please choose a time within it.",
            hours=_hours_text(intervals),
        )
    raise InvalidInput(message, details={"slot": message})


def _check_when(slot: Slot, now: datetime) -> None:
    if slot.start <= now:
        raise InvalidInput(details={"slot": _l("Choose a time in the future.")})
    if to_local(slot.start).date() > local_today(now) + timedelta(days=MAX_DAYS_AHEAD):
        raise InvalidInput(
            details={"slot": _l("You can book at most %(days)s days ahead.", days=MAX_DAYS_AHEAD)}
        )


def _lock_service(service: Service) -> Service:
    """Lock the service row until the transaction ends and read it afresh.

    Every booking of the service takes this lock before counting, so two requests for the
    last place queue up: the second counts the first's booking. (SQLite ignores FOR UPDATE,
    but lets only one transaction write at a time.)
    """
    return db.session.scalars(
        sa.select(Service)
        .where(Service.id == service.id)
        .with_for_update(of=Service)  # not the eagerly joined category
        .execution_options(populate_existing=True)
    ).one()


def overlapping(service_id: int, slot: Slot, *, resident_id: int | None = None):
    """A query of the bookings holding a place in the service that overlap the slot."""
    statement = sa.select(Booking).where(
        Booking.service_id == service_id,
        Booking.status.in_(HOLDING_STATUSES),
        Booking.slot_start < slot.end,
        Booking.slot_end > slot.start,
    )
    if resident_id is not None:
        statement = statement.where(Booking.resident_id == resident_id)
    return statement


def places_taken(service_id: int, slot: Slot) -> int:
    inner = overlapping(service_id, slot).with_only_columns(Booking.id).subquery()
    return db.session.scalar(sa.select(sa.func.count()).select_from(inner))


# --------------------------------------------------------------------------- messages


def _when_text(booking: Booking) -> str:
    return format_local(booking.slot_start)


# The notices of bookings (stored as codes, said in the reader's language: eldercare.notifications).
notice_messages(
    "booking.requested",
    _l("New booking request: %(title)s"),
    _l(
        '%(name)s asked to book "%(title)s" at %(when)s. Please accept or decline it on the '
        "Bookings page."
    ),
)
notice_messages(
    "booking.accepted",
    _l("Booking accepted: %(title)s"),
    _l('"%(title)s" is confirmed for %(when)s (%(name)s).'),
)
notice_messages(
    "booking.declined",
    _l("Booking declined: %(title)s"),
    _l('"%(title)s" at %(when)s (%(name)s) was declined: %(reason)s'),
)
notice_messages(
    "booking.cancelled_by_provider",
    _l("Booking cancelled by the provider: %(title)s"),
    _l('The provider cancelled "%(title)s" at %(when)s (%(name)s): %(reason)s'),
)
notice_messages(
    "booking.cancelled_by_elder",
    _l("Booking cancelled: %(title)s"),
    _l('%(name)s cancelled "%(title)s" at %(when)s.'),
)
notice_messages(
    "booking.reminder",
    _l("Tomorrow: %(title)s %(when)s"),
    _l(
        'Reminder: %(name)s has "%(title)s" from %(provider)s tomorrow at %(when)s. '
        "If the time no longer suits, please tell the provider in good time."
    ),
)


def _tell_elder(booking: Booking, event: str, kind: str, **params) -> int:
    subject, body = notice(kind, **params)
    return sum(
        enqueue(user.id, subject, body, f"booking-{event}:{booking.id}:{user.id}")
        for user in accounts_acting_for(booking.resident_id)
    )


def _tell_provider(booking: Booking, event: str, kind: str, **params) -> int:
    subject, body = notice(kind, **params)
    return sum(
        enqueue(user.id, subject, body, f"booking-{event}:{booking.id}:{user.id}")
        for user in provider_admins(booking.provider_id)
    )


# --------------------------------------------------------------------------- steps


def _audit(action: str, booking: Booking, before: str | None, **after) -> None:
    audit.record(
        action,
        booking,
        district_id=booking.resident.district_id,
        before={"status": before} if before else None,
        after={"status": booking.status, **after},
    )


def _require(booking: Booking, *statuses: str, message=None) -> None:
    if booking.status not in statuses:
        raise InvalidTransition(
            message, details={"status": booking.status, "allowed": list(statuses)}
        )


def _clean_text(value: str | None, field: str, limit: int, *, required: bool, missing):
    text = (value or "").strip()
    if required and not text:
        raise InvalidInput(details={field: missing})
    if len(text) > limit:
        raise InvalidInput(
            details={field: _l("At most %(count)s characters, please.", count=limit)}
        )
    return text or None


def book(
    service: Service,
    *,
    resident: Resident,
    booked_by: User,
    slot_start: datetime,
    slot_end: datetime | None = None,
    note: str | None = None,
    now: datetime | None = None,
) -> Booking:
    """Request a booking; the provider then accepts or declines it."""
    now = now or now_utc()
    today = local_today(now)
    if not acts_for(booked_by, resident.id):
        raise PermissionDenied(_l("You can book only for yourself or an elder you act for."))
    if resident.date_of_death is not None:
        raise InvalidInput(_l("The register records this person as deceased."))
    provider = db.session.get(Provider, service.provider_id)
    require_certified(provider, today=today)
    if not service.active:
        raise InvalidInput(_l("This service is not offered at the moment."))
    if provider.type != "care_institution" and resident.district_id not in {
        d.id for d in service.districts
    }:
        raise InvalidInput(_l("This service does not come to the elder's district."))
    note = _clean_text(note, "note", MAX_NOTE_LENGTH, required=False, missing=None)
    slot = slot_for(service, slot_start, slot_end)
    _check_when(slot, now)
    check_opening_hours(provider, slot, service.unit)

    service = _lock_service(service)
    if not service.active:  # switched off while we waited for the lock
        raise InvalidInput(_l("This service is not offered at the moment."))
    if db.session.scalar(overlapping(service.id, slot, resident_id=resident.id).limit(1)):
        raise Conflict(_l("This elder already has a booking of this service at that time."))
    if places_taken(service.id, slot) >= service.capacity_per_slot:
        raise CapacityFull(details={"capacity_per_slot": service.capacity_per_slot})

    booking = Booking(
        service_id=service.id,
        service=service,
        provider_id=provider.id,
        resident_id=resident.id,
        resident=resident,
        booked_by_user_id=booked_by.id,
        slot_start=slot.start,
        slot_end=slot.end,
        status="requested",
        price_fen=service.price_fen,
        note=note,
        created_at=now,
    )
    db.session.add(booking)
    _audit(
        "booking.request",
        booking,
        None,
        service_id=service.id,
        slot_start=slot.start.isoformat(),
        slot_end=slot.end.isoformat(),
        price_fen=booking.price_fen,
        via="self" if booked_by.resident_id == resident.id else "family_agent",
    )
    name, when, title = resident.masked_name, _when_text(booking), service.title
    _tell_provider(booking, "requested", "booking.requested", name=name, when=when, title=title)
    return booking


def accept(booking: Booking, by: User, *, now: datetime | None = None) -> None:
    now = now or now_utc()
    _require(booking, "requested")
    if not works_for(by, booking.provider_id):
        raise PermissionDenied(_l("Only the provider's staff can accept this booking."))
    require_certified(db.session.get(Provider, booking.provider_id), today=local_today(now))
    if booking.slot_start <= now:
        raise InvalidTransition(_l("The time of this booking has passed; decline it instead."))
    before = booking.status
    booking.status, booking.decided_at = "accepted", now
    _audit("booking.accept", booking, before)
    title, when = booking.service.title, _when_text(booking)
    name = booking.resident.masked_name
    _tell_elder(booking, "accepted", "booking.accepted", title=title, when=when, name=name)


def decline(booking: Booking, by: User, reason: str, *, now: datetime | None = None) -> None:
    now = now or now_utc()
    _require(booking, "requested")
    if not works_for(by, booking.provider_id):
        raise PermissionDenied(_l("Only the provider's staff can decline this booking."))
    reason = _clean_text(
        reason,
        "reason",
        MAX_REASON_LENGTH,
        required=True,
        missing=_l("Tell the elder why you decline, so they can book elsewhere."),
    )
    before = booking.status
    booking.status, booking.decided_at, booking.cancel_reason = "declined", now, reason
    _audit("booking.decline", booking, before, reason=reason)
    title, when = booking.service.title, _when_text(booking)
    _tell_elder(
        booking,
        "declined",
        "booking.declined",
        title=title,
        when=when,
        name=booking.resident.masked_name,
        reason=reason,
    )


def bookings_to_serve(provider_id: int, resident_id: int, day: date) -> list[Booking]:
    """The elder's accepted bookings with this provider that start on ``day`` (Asia/Shanghai),
    which staff serve and redeem against."""
    start = datetime.combine(day, time(0), tzinfo=SHANGHAI)
    return list(
        db.session.scalars(
            sa.select(Booking)
            .where(
                Booking.provider_id == provider_id,
                Booking.resident_id == resident_id,
                Booking.status == "accepted",
                Booking.slot_start >= start,
                Booking.slot_start < start + timedelta(days=1),
            )
            .order_by(Booking.slot_start)
        )
    )


def last_completed(provider_id: int, resident_id: int, since: date) -> date | None:
    """The day of the provider's last delivered booking for the elder on or after ``since``."""
    start = datetime.combine(since, time(0), tzinfo=SHANGHAI)
    last = db.session.scalar(
        sa.select(sa.func.max(Booking.slot_start)).where(
            Booking.provider_id == provider_id,
            Booking.resident_id == resident_id,
            Booking.status == "completed",
            Booking.slot_start >= start,
        )
    )
    return local_today(last) if last is not None else None


def booking_of(provider_id: int, booking_id) -> Booking:
    """One of the provider's bookings; another provider's (or no one's) is NotFound."""
    booking = db.session.get(Booking, booking_id) if isinstance(booking_id, int) else None
    if booking is None or booking.provider_id != provider_id:
        raise NotFound(_l("That booking is not one of yours."))
    return booking


def can_cancel_as_elder(booking: Booking, now: datetime | None = None) -> bool:
    """Whether the elder or their agent may still cancel (for pages; ``cancel`` decides)."""
    now = now or now_utc()
    return booking.status in HOLDING_STATUSES and now < booking.slot_start - ELDER_CANCEL_NOTICE


def cancel(
    booking: Booking, by: User, reason: str | None = None, *, now: datetime | None = None
) -> None:
    """The elder's side until 2 hours before the start; the provider until the start."""
    now = now or now_utc()
    _require(booking, *HOLDING_STATUSES)
    provider_side = works_for(by, booking.provider_id)
    if not provider_side and not acts_for(by, booking.resident_id):
        raise PermissionDenied(_l("You cannot cancel this booking."))
    if now >= booking.slot_start:
        raise InvalidTransition(_l("The service has started; it can no longer be cancelled."))
    if provider_side:
        reason = _clean_text(
            reason,
            "reason",
            MAX_REASON_LENGTH,
            required=True,
            missing=_l("Tell the elder why you cancel."),
        )
    else:
        if now >= booking.slot_start - ELDER_CANCEL_NOTICE:
            raise InvalidTransition(
                _l(
                    "Bookings can be cancelled here until 2 hours before the start; "
                    "please telephone the provider."
                )
            )
        reason = _clean_text(reason, "reason", MAX_REASON_LENGTH, required=False, missing=None)
    before = booking.status
    booking.status = "cancelled"
    booking.cancelled_by_user_id, booking.cancel_reason = by.id, reason
    _audit(
        "booking.cancel",
        booking,
        before,
        by="provider" if provider_side else "elder",
        reason=reason,
    )
    title, when, name = booking.service.title, _when_text(booking), booking.resident.masked_name
    if provider_side:
        _tell_elder(
            booking,
            "cancelled",
            "booking.cancelled_by_provider",
            title=title,
            when=when,
            name=name,
            reason=reason,
        )
    else:
        _tell_provider(
            booking, "cancelled", "booking.cancelled_by_elder", title=title, when=when, name=name
        )


def complete(booking: Booking, by: User, *, now: datetime | None = None) -> None:
    now = now or now_utc()
    _require(booking, "accepted")
    if not works_for(by, booking.provider_id):
        raise PermissionDenied(_l("Only the provider's staff can mark this booking done."))
    if now < booking.slot_start:
        raise InvalidTransition(_l("The service has not started yet, so it cannot be done."))
    before = booking.status
    booking.status, booking.completed_at = "completed", now
    _audit("booking.complete", booking, before)


# --------------------------------------------------------------------------- reminders


def remind_upcoming_bookings(now: datetime | None = None) -> dict:
    """The day before: one message per accepted booking starting tomorrow (Shanghai) to the
    elder's accounts and family agents. Rerunning queues nothing new (dedupe key)."""
    now = now or now_utc()
    tomorrow = local_today(now) + timedelta(days=1)
    begins = datetime.combine(tomorrow, time(0), tzinfo=SHANGHAI)
    ends = begins + timedelta(days=1)
    bookings = db.session.scalars(
        sa.select(Booking)
        .where(
            Booking.status == "accepted",
            Booking.slot_start >= begins,
            Booking.slot_start < ends,
        )
        .order_by(Booking.slot_start, Booking.id)
    ).all()
    queued = 0
    for booking in bookings:
        title, name = booking.service.title, booking.resident.masked_name
        when = format_local(booking.slot_start, "%H:%M")
        provider = db.session.get(Provider, booking.provider_id)
        queued += _tell_elder(
            booking,
            "reminder",
            "booking.reminder",
            title=title,
            when=when,
            name=name,
            provider=provider.name,
        )
    return {"bookings": len(bookings), "queued": queued}
