"""Ratings of delivered services: one per booking, by the elder or a family agent for them.

A review needs a completed booking (when the vouchers domain lands: a redeemed one), so every
rating comes from someone who was served. The rating is a whole number of stars, 1 to 5, with
an optional text of at most ``MAX_TEXT_LENGTH`` characters. The table's unique constraint on
the booking is the last word; the check before it gives the clear message.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l
from sqlalchemy.exc import IntegrityError

from eldercare import audit
from eldercare.accounts import User
from eldercare.db import db
from eldercare.errors import Conflict, InvalidInput, PermissionDenied
from eldercare.timeutil import now_utc
from marketplace.bookings import acts_for
from marketplace.errors import InvalidTransition
from marketplace.models import Booking, Review

MAX_TEXT_LENGTH = 1000
ALREADY_REVIEWED = _l("This booking has already been rated; each service is rated once.")


@dataclass(frozen=True)
class RatingSummary:
    count: int
    average: float | None  # None without reviews


def review_of(booking_id: int) -> Review | None:
    return db.session.scalar(sa.select(Review).where(Review.booking_id == booking_id))


def review(
    booking: Booking,
    *,
    by: User,
    rating,
    text: str | None = None,
    now: datetime | None = None,
) -> Review:
    if not acts_for(by, booking.resident_id):
        raise PermissionDenied(
            _l("You can rate only services booked for yourself or an elder you act for.")
        )
    if booking.status != "completed":
        raise InvalidTransition(
            _l("You can rate a service once the provider has marked it done."),
            details={"status": booking.status},
        )
    if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 5:
        raise InvalidInput(details={"rating": _l("Choose 1 to 5 stars.")})
    text = (text or "").strip()
    if len(text) > MAX_TEXT_LENGTH:
        raise InvalidInput(
            details={"text": _l("At most %(count)s characters, please.", count=MAX_TEXT_LENGTH)}
        )
    if review_of(booking.id) is not None:
        raise Conflict(ALREADY_REVIEWED)
    row = Review(
        booking_id=booking.id,
        provider_id=booking.provider_id,
        rating=rating,
        text=text,
        created_by_user_id=by.id,
        created_at=now or now_utc(),
    )
    try:
        with db.session.begin_nested():  # a simultaneous second rating loses here
            db.session.add(row)
    except IntegrityError:
        raise Conflict(ALREADY_REVIEWED) from None
    audit.record(
        "review.create",
        row,
        district_id=booking.resident.district_id,
        after={"booking_id": booking.id, "provider_id": booking.provider_id, "rating": rating},
    )
    return row


def rating_summary(
    provider_id: int, since: datetime | None = None, until: datetime | None = None
) -> RatingSummary:
    """How many reviews a provider had (created in [since, until)) and their average."""
    statement = sa.select(sa.func.count(Review.id), sa.func.avg(Review.rating)).where(
        Review.provider_id == provider_id
    )
    if since is not None:
        statement = statement.where(Review.created_at >= since)
    if until is not None:
        statement = statement.where(Review.created_at < until)
    count, average = db.session.execute(statement).one()
    return RatingSummary(count, float(average) if count else None)
