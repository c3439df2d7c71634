"""/api/v1 for the city's mini-program, acting for an elder.

A token of the elder's own account or of a family agent's ("read"; the account's role,
elder or family_agent, is what allows writing). It books, lists, cancels and rates the
bookings of the elders the account acts for, and files complaints. Someone else's booking
answers 404; booking for an elder the account does not act for is refused by
``bookings.book`` itself (403).
"""

from __future__ import annotations

import functools

import sqlalchemy as sa
from flask import g
from flask_babel import lazy_gettext as _l

from eldercare.accounts import ELDER_ROLES, FamilyLink, User
from eldercare.api import BEARER, error_responses, local_time, page_of
from eldercare.db import db
from eldercare.errors import NotFound, PermissionDenied
from eldercare.residents import Resident
from eldercare.timeutil import now_utc
from eldercare.tokens import ELDERS_WRITE, token_required
from marketplace import bookings, complaints, reviews
from marketplace.api import blp, shape_booking, shape_review
from marketplace.models import Booking, Complaint, Provider, Review, Service
from marketplace.schemas import (
    MarketplaceBookingListQuerySchema,
    MarketplaceBookingPageSchema,
    MarketplaceBookingRequestSchema,
    MarketplaceBookingSchema,
    MarketplaceComplaintRequestSchema,
    MarketplaceComplaintSchema,
    MarketplaceReasonSchema,
    MarketplaceReviewCreatedSchema,
    MarketplaceReviewRequestSchema,
)

# --- who is asking ----------------------------------------------------------------------


def _for_elders(view):
    """Only the accounts of elders and of their family agents (checked before the body)."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        if not g.api_user.has_role(*ELDER_ROLES):
            raise PermissionDenied(_l("This is for the accounts of elders and their families."))
        return view(*args, **kwargs)

    return wrapper


def _elder_ids(user: User) -> list[int]:
    """The elders the account acts for, as ``bookings.acts_for`` counts them: its own
    resident record, and every elder linked to it as a family agent."""
    linked = db.session.scalars(
        sa.select(FamilyLink.resident_id)
        .where(FamilyLink.agent_user_id == user.id)
        .order_by(FamilyLink.id)
    ).all()
    own = [user.resident_id] if user.resident_id is not None else []
    return list(dict.fromkeys([*own, *linked]))


def _my_booking(booking_id: int) -> Booking:
    """A booking of an elder the caller acts for; anyone else's looks missing."""
    booking = db.session.get(Booking, booking_id)
    if booking is None or booking.resident_id not in _elder_ids(g.api_user):
        raise NotFound()
    return booking


def _elder_bookings(rows: list[Booking]) -> list[dict]:
    """Bookings as the elder's side sees them, with their reviews, in one query more."""
    now = now_utc()
    reviewed = {
        r.booking_id: r
        for r in db.session.scalars(
            sa.select(Review).where(Review.booking_id.in_([b.id for b in rows]))
        )
    }
    names = dict(
        db.session.execute(
            sa.select(Provider.id, Provider.name).where(
                Provider.id.in_({b.provider_id for b in rows})
            )
        ).all()
    )
    return [
        shape_booking(b)
        | {
            "provider": {"id": b.provider_id, "name": names[b.provider_id]},
            "resident": {"id": b.resident_id, "name": b.resident.name},
            "can_cancel": bookings.can_cancel_as_elder(b, now),
            "review": shape_review(reviewed.get(b.id)),
        }
        for b in rows
    ]


def _complaint(complaint: Complaint) -> dict:
    return {
        "id": complaint.id,
        "provider": {"id": complaint.provider.id, "name": complaint.provider.name},
        "booking_id": complaint.booking_id,
        "text": complaint.text,
        "status": complaint.status,
        "resolution": complaint.resolution,
        "created_at": local_time(complaint.created_at),
        "closed_at": local_time(complaint.closed_at),
    }


# --- endpoints --------------------------------------------------------------------------


@blp.get("/bookings")
@token_required("read")
@_for_elders
@blp.doc(security=BEARER)
@blp.arguments(MarketplaceBookingListQuerySchema, location="query")
@blp.response(200, MarketplaceBookingPageSchema)
@error_responses(blp, 401, 403, 422)
def list_bookings(query):
    """The bookings of the elders the account acts for, latest slot first."""
    statement = sa.select(Booking).where(Booking.resident_id.in_(_elder_ids(g.api_user)))
    if "status" in query:
        statement = statement.where(Booking.status == query["status"])
    if "resident_id" in query:
        statement = statement.where(Booking.resident_id == query["resident_id"])
    page = page_of(statement, (Booking.slot_start.desc(), Booking.id.desc()), query)
    return page | {"items": _elder_bookings(page["items"])}


@blp.post("/bookings")
@token_required(ELDERS_WRITE)
@_for_elders
@blp.doc(security=BEARER)
@blp.arguments(MarketplaceBookingRequestSchema)
@blp.response(201, MarketplaceBookingSchema)
@error_responses(blp, 401, 403, 404, 409, 422)
def create_booking(body):
    """Ask a provider for a service at a time, for the caller or an elder they act for.

    The provider then accepts or declines. Refusals name their field: ``slot`` for the
    time (past, too far ahead, outside opening hours), ``note``; a full slot is a 409
    ``capacity_full``.
    """
    service = db.session.get(Service, body["service_id"])
    resident = db.session.get(Resident, body["resident_id"])
    if service is None or resident is None:
        raise NotFound()
    booking = bookings.book(
        service,
        resident=resident,
        booked_by=g.api_user,
        slot_start=body["slot_start"],
        slot_end=body["slot_end"],
        note=body["note"],
    )
    return _elder_bookings([booking])[0]


@blp.get("/bookings/<int:booking_id>")
@token_required("read")
@_for_elders
@blp.doc(security=BEARER)
@blp.response(200, MarketplaceBookingSchema)
@error_responses(blp, 401, 403, 404)
def get_booking(booking_id):
    """One booking of an elder the account acts for."""
    return _elder_bookings([_my_booking(booking_id)])[0]


@blp.post("/bookings/<int:booking_id>/cancel")
@token_required(ELDERS_WRITE)
@_for_elders
@blp.doc(security=BEARER)
@blp.arguments(MarketplaceReasonSchema)
@blp.response(200, MarketplaceBookingSchema)
@error_responses(blp, 401, 403, 404, 409, 422)
def cancel_booking(body, booking_id):
    """Cancel, until 2 hours before the start (later, only the provider can)."""
    booking = _my_booking(booking_id)
    bookings.cancel(booking, g.api_user, body["reason"])
    return _elder_bookings([booking])[0]


@blp.post("/bookings/<int:booking_id>/review")
@token_required(ELDERS_WRITE)
@_for_elders
@blp.doc(security=BEARER)
@blp.arguments(MarketplaceReviewRequestSchema)
@blp.response(201, MarketplaceReviewCreatedSchema)
@error_responses(blp, 401, 403, 404, 409, 422)
def review_booking(body, booking_id):
    """Rate a service the provider has marked done: 1 to 5 whole stars, once per booking."""
    booking = _my_booking(booking_id)
    row = reviews.review(booking, by=g.api_user, rating=body["rating"], text=body["text"])
    return shape_review(row) | {"id": row.id, "booking_id": booking.id}


@blp.get("/complaints")
@token_required("read")
@_for_elders
@blp.doc(security=BEARER)
@blp.response(200, MarketplaceComplaintSchema(many=True))
@error_responses(blp, 401, 403)
def list_complaints():
    """The complaints the account filed, newest first, with the bureau's resolution."""
    rows = db.session.scalars(
        sa.select(Complaint)
        .where(Complaint.filed_by_user_id == g.api_user.id)
        .order_by(Complaint.created_at.desc(), Complaint.id.desc())
    ).all()
    return [_complaint(c) for c in rows]


@blp.post("/complaints")
@token_required(ELDERS_WRITE)
@_for_elders
@blp.doc(security=BEARER)
@blp.arguments(MarketplaceComplaintRequestSchema)
@blp.response(201, MarketplaceComplaintSchema)
@error_responses(blp, 401, 403, 404, 422)
def file_complaint(body):
    """Complain to the bureau about a provider, optionally naming one of the elder's
    bookings with it."""
    provider = db.session.get(Provider, body["provider_id"])
    booking = None
    if body["booking_id"] is not None:
        booking = db.session.get(Booking, body["booking_id"])
    if provider is None or (body["booking_id"] is not None and booking is None):
        raise NotFound()
    complaint = complaints.file_complaint(
        provider, by=g.api_user, text=body["text"], booking=booking
    )
    return _complaint(complaint)
