"""Complaints about providers: filed by elders and families, handled by the bureau.

    received --investigate--> investigating --uphold--> upheld
                                    \\
                                     +-----dismiss--> dismissed

An elder, or a family agent for them, complains about a provider, optionally naming one of
the elder's bookings with it. A bureau officer (of the provider's district, or city-wide)
opens an investigation and closes it as upheld or dismissed, always with a written
resolution. Upheld complaints count against the provider's credit score (``credit``), and the
provider's administrators are told through the notification outbox. Every step is audited;
a refused step changes nothing.
"""

from __future__ import annotations

from datetime import datetime

from flask_babel import lazy_gettext as _l

from eldercare import audit
from eldercare.accounts import User
from eldercare.db import db
from eldercare.errors import InvalidInput, PermissionDenied
from eldercare.notifications import enqueue, notice, notice_messages
from eldercare.timeutil import format_local, now_utc
from marketplace.bookings import acts_for, provider_admins
from marketplace.errors import InvalidTransition
from marketplace.models import Booking, Complaint, Provider

MAX_TEXT_LENGTH = 2000
notice_messages(
    "complaint.upheld",
    _l("Complaint upheld (No. %(complaint)s)"),
    _l(
        "The civil affairs bureau upheld complaint No. %(complaint)s of %(filed)s. "
        "Resolution: %(resolution)s"
    ),
)
FILER_ROLES = ("elder", "family_agent")
HANDLER_ROLES = ("bureau_officer",)
OPEN_STATUSES = ("received", "investigating")
DECISIONS = ("upheld", "dismissed")


def _audit(action: str, complaint: Complaint, before: str | None, **after) -> None:
    audit.record(
        action,
        complaint,
        district_id=complaint.provider.district_id,
        before={"status": before} if before else None,
        after={"status": complaint.status, "provider_id": complaint.provider_id, **after},
    )


def _text(value: str | None, field: str, missing) -> str:
    text = (value or "").strip()
    if not text:
        raise InvalidInput(details={field: missing})
    if len(text) > MAX_TEXT_LENGTH:
        raise InvalidInput(
            details={field: _l("At most %(count)s characters, please.", count=MAX_TEXT_LENGTH)}
        )
    return text


def file_complaint(
    provider: Provider,
    *,
    by: User,
    text: str,
    booking: Booking | None = None,
    now: datetime | None = None,
) -> Complaint:
    if not by.has_role(*FILER_ROLES):
        raise PermissionDenied(_l("Complaints here are filed by elders and their families."))
    if booking is not None:
        if booking.provider_id != provider.id:
            raise InvalidInput(details={"booking_id": _l("This booking is with another provider.")})
        if not acts_for(by, booking.resident_id):
            raise PermissionDenied(
                _l("You can name only bookings of yourself or an elder you act for.")
            )
    text = _text(text, "text", _l("Say what happened, so the bureau can look into it."))
    complaint = Complaint(
        provider_id=provider.id,
        provider=provider,
        booking_id=booking.id if booking is not None else None,
        filed_by_user_id=by.id,
        text=text,
        status="received",
        created_at=now or now_utc(),
    )
    db.session.add(complaint)
    _audit("complaint.file", complaint, None, booking_id=complaint.booking_id)
    return complaint


def _check_handler(complaint: Complaint, by: User) -> None:
    if not by.has_role(*HANDLER_ROLES):
        raise PermissionDenied(_l("Complaints are handled by bureau officers."))
    if by.district_id is not None and by.district_id != complaint.provider.district_id:
        raise PermissionDenied(_l("This provider belongs to another district."))


def _require(complaint: Complaint, *statuses: str) -> None:
    if complaint.status not in statuses:
        raise InvalidTransition(details={"status": complaint.status, "allowed": list(statuses)})


def investigate(complaint: Complaint, *, by: User) -> None:
    _require(complaint, "received")
    _check_handler(complaint, by)
    before = complaint.status
    complaint.status, complaint.handled_by_user_id = "investigating", by.id
    _audit("complaint.investigate", complaint, before)


def close(
    complaint: Complaint,
    *,
    by: User,
    decision: str,
    resolution: str,
    now: datetime | None = None,
) -> None:
    """Uphold or dismiss, with the resolution the elder and the provider will read."""
    _require(complaint, "investigating")
    _check_handler(complaint, by)
    if decision not in DECISIONS:
        raise InvalidInput(details={"decision": _l("Choose upheld or dismissed.")})
    resolution = _text(
        resolution, "resolution", _l("Write the resolution: what was found and what follows.")
    )
    before = complaint.status
    complaint.status, complaint.resolution = decision, resolution
    complaint.handled_by_user_id, complaint.closed_at = by.id, now or now_utc()
    _audit(f"complaint.{'uphold' if decision == 'upheld' else 'dismiss'}", complaint, before)
    if decision == "upheld":
        filed = format_local(complaint.created_at, "%Y-%m-%d")
        subject, body = notice(
            "complaint.upheld", complaint=complaint.id, filed=filed, resolution=resolution
        )
        for user in provider_admins(complaint.provider_id):
            enqueue(user.id, subject, body, f"complaint-upheld:{complaint.id}:{user.id}")


def uphold(complaint: Complaint, *, by: User, resolution: str, now=None) -> None:
    close(complaint, by=by, decision="upheld", resolution=resolution, now=now)


def dismiss(complaint: Complaint, *, by: User, resolution: str, now=None) -> None:
    close(complaint, by=by, decision="dismissed", resolution=resolution, now=now)
