"""/api/v1 endpoints of the marketplace, for three kinds of client.

- **Anyone with a token holding "read"**: the service categories, the search (the
  15-minute circle, ``marketplace.search``), and the pages of certified providers and their
  services. A provider that is not certified today answers 404, as a missing one does; the
  public never sees a provider's bank account, credit code or telephone.
- **The city's mini-program, acting for an elder**: a token of the elder's own account or
  of a family agent's ("read"; the account's role, elder or family_agent, is what allows
  writing). It books, lists, cancels and rates the bookings of the elders the account acts
  for, and files complaints. Someone else's booking answers 404; booking for an elder the
  account does not act for is refused by ``bookings.book`` itself (403).
- **A provider's own software**: a token of one of its staff ("providers:write"; reading
  also with "read"). Staff answer booking requests and mark them done; the catalogue
  (services, prices, beds) is its administrators'. Another provider's booking or service
  answers 404.

Every rule lives in the service modules (``bookings``, ``reviews``, ``complaints``,
``catalogue``, ``search``); the views here find the caller's records, call them, and
shape the answer. Money is integer fen; times are ISO 8601 in Asia/Shanghai.

Authentication (and the caller's role) is checked before the body is parsed, so a caller
without a valid token learns nothing about the request format from a 422.
"""

from __future__ import annotations

import functools
from datetime import datetime

import sqlalchemy as sa
from flask import g
from flask_babel import lazy_gettext as _l
from flask_smorest import Blueprint

from eldercare.accounts import FamilyLink, User
from eldercare.api import BEARER, error_responses
from eldercare.db import db
from eldercare.errors import DomainError, InvalidInput, NotFound, PermissionDenied
from eldercare.residents import District, Resident
from eldercare.timeutil import local_today, now_utc, to_local
from eldercare.tokens import token_required
from marketplace import bookings, catalogue, complaints, reviews
from marketplace.models import (
    Booking,
    Complaint,
    Provider,
    Review,
    Service,
    ServiceCategory,
    ServicePrice,
)
from marketplace.providers import provider_of
from marketplace.schemas import (
    MarketplaceBedsSchema,
    MarketplaceBookingListQuerySchema,
    MarketplaceBookingPageSchema,
    MarketplaceBookingRequestSchema,
    MarketplaceBookingSchema,
    MarketplaceCategorySchema,
    MarketplaceComplaintRequestSchema,
    MarketplaceComplaintSchema,
    MarketplaceNewServiceSchema,
    MarketplaceOwnServiceSchema,
    MarketplacePriceChangeSchema,
    MarketplaceProviderBookingPageSchema,
    MarketplaceProviderBookingQuerySchema,
    MarketplaceProviderBookingSchema,
    MarketplaceProviderSchema,
    MarketplacePublicServiceSchema,
    MarketplaceReasonSchema,
    MarketplaceReviewCreatedSchema,
    MarketplaceReviewRequestSchema,
    MarketplaceSearchPageSchema,
    MarketplaceSearchQuerySchema,
    MarketplaceServiceActiveSchema,
)
from marketplace.search import is_open, ratings_of, search_services
from marketplace.voucher_scope import accepts_vouchers

blp = Blueprint(
    "marketplace_api", __name__, url_prefix="/api/v1", description="Providers, services, bookings"
)

ELDER_ROLES = ("elder", "family_agent")
REVIEWS_SHOWN = 20  # on a provider's page, newest first
# search_services names the problems after its own parameters; the API's are these.
_SEARCH_FIELDS = {
    "location": ("lat", "lng"),
    "radius": ("radius_m",),
    "max_price": ("max_price_fen",),
    "open_at": ("open_now",),
    "page": ("limit", "offset"),
}
# catalogue.add_service says "category_code" where the API says "category".
_SERVICE_FIELDS = {"category_code": "category"}


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


def _providers_booking(booking_id: int) -> Booking:
    provider = provider_of(g.api_user)
    booking = db.session.get(Booking, booking_id)
    if booking is None or booking.provider_id != provider.id:
        raise NotFound()  # another provider's booking looks exactly like a missing one
    return booking


def _own_service(service_id: int) -> Service:
    provider = provider_of(g.api_user, admin=True)
    service = db.session.get(Service, service_id)
    if service is None or service.provider_id != provider.id:
        raise NotFound()
    return service


def _listed_provider(provider_id: int) -> Provider:
    """A provider the public may see: certified today; anything else is 404."""
    provider = db.session.get(Provider, provider_id)
    if provider is None or not provider.is_certified_on(local_today()):
        raise NotFound()
    return provider


def _renamed(error: DomainError, names: dict) -> DomainError:
    details = {}
    for key, value in error.details.items():
        new = names.get(key, key)
        for name in (new,) if isinstance(new, str) else new:
            details[name] = value
    error.details = details
    return error


# --- shaping answers --------------------------------------------------------------------


def _local(value: datetime | None) -> datetime | None:
    return to_local(value) if value is not None else None


def _rating(average: float | None, count: int) -> dict:
    return {"average": round(average, 2) if average is not None else None, "count": count}


def _provider_summary(provider: Provider) -> dict:
    return {
        "id": provider.id,
        "name": provider.name,
        "type": provider.type,
        "district": provider.district.code,
        "address": provider.address,
        "latitude": provider.latitude,
        "longitude": provider.longitude,
        "star_level": provider.star_level,
    }


def _service_summary(service: Service, covered: bool) -> dict:
    return {
        "id": service.id,
        "title": service.title,
        "category": service.category_code,
        "unit": service.unit,
        "price_fen": service.price_fen,
        "accepts_vouchers": covered,
    }


def _service(service: Service, covered: bool) -> dict:
    return _service_summary(service, covered) | {
        "description": service.description,
        "capacity_per_slot": service.capacity_per_slot,
        "districts": sorted(d.code for d in service.districts),
    }


def _review(row: Review | None) -> dict | None:
    if row is None:
        return None
    return {"rating": row.rating, "text": row.text, "created_at": _local(row.created_at)}


def _booking_base(booking: Booking) -> dict:
    service = booking.service
    return {
        "id": booking.id,
        "status": booking.status,
        "slot_start": _local(booking.slot_start),
        "slot_end": _local(booking.slot_end),
        "price_fen": booking.price_fen,
        "note": booking.note,
        "reason": booking.cancel_reason,
        "created_at": _local(booking.created_at),
        "decided_at": _local(booking.decided_at),
        "completed_at": _local(booking.completed_at),
        "service": {
            "id": service.id,
            "title": service.title,
            "category": service.category_code,
            "unit": service.unit,
        },
    }


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
        _booking_base(b)
        | {
            "provider": {"id": b.provider_id, "name": names[b.provider_id]},
            "resident": {"id": b.resident_id, "name": b.resident.name},
            "can_cancel": bookings.can_cancel_as_elder(b, now),
            "review": _review(reviewed.get(b.id)),
        }
        for b in rows
    ]


def _provider_booking(booking: Booking) -> dict:
    resident = booking.resident
    return _booking_base(booking) | {
        "resident": {"masked_name": resident.masked_name, "district": resident.district.code}
    }


def _own_services(rows: list[Service]) -> list[dict]:
    today = local_today()
    history: dict[int, list[dict]] = {s.id: [] for s in rows}
    if rows:
        for price in db.session.scalars(
            sa.select(ServicePrice)
            .where(ServicePrice.service_id.in_(list(history)))
            .order_by(ServicePrice.effective_from.desc(), ServicePrice.id.desc())
        ):
            history[price.service_id].append(
                {"price_fen": price.price_fen, "effective_from": _local(price.effective_from)}
            )
    return [
        _service(s, accepts_vouchers(s.category, today))
        | {"active": s.active, "created_at": _local(s.created_at), "prices": history[s.id]}
        for s in rows
    ]


def _complaint(complaint: Complaint) -> dict:
    return {
        "id": complaint.id,
        "provider": {"id": complaint.provider.id, "name": complaint.provider.name},
        "booking_id": complaint.booking_id,
        "text": complaint.text,
        "status": complaint.status,
        "resolution": complaint.resolution,
        "created_at": _local(complaint.created_at),
        "closed_at": _local(complaint.closed_at),
    }


def _page(statement, order, query: dict) -> tuple[list, int]:
    total = db.session.scalar(sa.select(sa.func.count()).select_from(statement.subquery()))
    rows = db.session.scalars(
        statement.order_by(*order).limit(query["limit"]).offset(query["offset"])
    ).all()
    return list(rows), total


# --- public reference -------------------------------------------------------------------


@blp.get("/service-categories")
@token_required("read")
@blp.doc(security=BEARER)
@blp.response(200, MarketplaceCategorySchema(many=True))
@error_responses(blp, 401, 403)
def list_categories():
    """The kinds of service, in the order the marketplace shows them, and which of them a
    voucher can pay part of today."""
    today = local_today()
    categories = db.session.scalars(
        sa.select(ServiceCategory).order_by(ServiceCategory.sort_order, ServiceCategory.code)
    ).all()
    return [
        {
            "code": c.code,
            "name_zh": c.name_zh,
            "name_en": c.name_en,
            "programme": c.programme,
            "accepts_vouchers": accepts_vouchers(c, today),
            "requires_caregiver_certificate": c.requires_caregiver_certificate,
            "provider_types": c.provider_types.split(),
        }
        for c in categories
    ]


@blp.get("/providers/search")
@token_required("read")
@blp.doc(security=BEARER)
@blp.arguments(MarketplaceSearchQuerySchema, location="query")
@blp.response(200, MarketplaceSearchPageSchema)
@error_responses(blp, 401, 403, 422)
def search(query):
    """Services of certified providers within ``radius_m`` of a point, nearest first (or
    ``sort=price`` cheapest, ``sort=rating`` best rated first)."""
    district_id = None
    if "district" in query:
        district_id = db.session.scalar(
            sa.select(District.id).where(District.code == query["district"])
        )
        if district_id is None:
            raise InvalidInput(details={"district": _l("No district has this code.")})
    try:
        found = search_services(
            lat=query["lat"],
            lng=query["lng"],
            radius_m=query.get("radius_m"),
            category=query.get("category"),
            district_id=district_id,
            max_price_fen=query.get("max_price_fen"),
            min_rating=query.get("min_rating"),
            min_stars=query.get("min_stars"),
            accepts_vouchers=query.get("accepts_vouchers"),
            open_at=now_utc() if query.get("open_now") else None,
            provider_type=query.get("provider_type"),
            sort=query["sort"],
            limit=query["limit"] + 1,  # one more tells whether another page follows
            offset=query["offset"],
        )
    except InvalidInput as error:
        raise _renamed(error, _SEARCH_FIELDS) from None
    return {
        "items": [
            {
                "service": _service_summary(r.service, r.accepts_vouchers),
                "provider": _provider_summary(r.provider),
                "distance_m": round(r.distance_m, 1),
                "rating": _rating(r.rating_avg, r.rating_count),
                "accepts_vouchers": r.accepts_vouchers,
                "open_now": r.open_now,
            }
            for r in found[: query["limit"]]
        ],
        "limit": query["limit"],
        "offset": query["offset"],
        "has_more": len(found) > query["limit"],
    }


@blp.get("/providers/<int:provider_id>")
@token_required("read")
@blp.doc(security=BEARER)
@blp.response(200, MarketplaceProviderSchema)
@error_responses(blp, 401, 403, 404)
def get_provider(provider_id):
    """A certified provider: where, when open, its services and its latest reviews."""
    provider = _listed_provider(provider_id)
    today = local_today()
    services = db.session.scalars(
        sa.select(Service)
        .join(ServiceCategory, Service.category_code == ServiceCategory.code)
        .where(Service.provider_id == provider.id, Service.active)
        .order_by(ServiceCategory.sort_order, Service.title, Service.id)
    ).all()
    latest = db.session.scalars(
        sa.select(Review)
        .where(Review.provider_id == provider.id)
        .order_by(Review.created_at.desc(), Review.id.desc())
        .limit(REVIEWS_SHOWN)
    ).all()
    average, count = ratings_of([provider.id]).get(provider.id, (None, 0))
    return _provider_summary(provider) | {
        "certified_until": provider.certified_until,
        "opening_hours": provider.opening_hours,
        "open_now": is_open(provider.opening_hours, now_utc()),
        "beds_total": provider.beds_total,
        "beds_free": provider.beds_free,
        "service_districts": sorted(d.code for d in provider.service_districts),
        "rating": _rating(average, count),
        "services": [_service(s, accepts_vouchers(s.category, today)) for s in services],
        "reviews": [_review(r) for r in latest],
    }


@blp.get("/services/<int:service_id>")
@token_required("read")
@blp.doc(security=BEARER)
@blp.response(200, MarketplacePublicServiceSchema)
@error_responses(blp, 401, 403, 404)
def get_service(service_id):
    """A service on offer now, with its provider; one no longer offered, or of a provider
    not certified today, is 404."""
    service = db.session.get(Service, service_id)
    if service is None or not service.active:
        raise NotFound()
    provider = _listed_provider(service.provider_id)
    average, count = ratings_of([provider.id]).get(provider.id, (None, 0))
    return _service(service, accepts_vouchers(service.category, local_today())) | {
        "provider": _provider_summary(provider),
        "rating": _rating(average, count),
        "open_now": is_open(provider.opening_hours, now_utc()),
    }


# --- the elder's side -------------------------------------------------------------------


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
    rows, total = _page(statement, (Booking.slot_start.desc(), Booking.id.desc()), query)
    return {
        "items": _elder_bookings(rows),
        "total": total,
        "limit": query["limit"],
        "offset": query["offset"],
    }


@blp.post("/bookings")
@token_required("read")
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
@token_required("read")
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
@token_required("read")
@_for_elders
@blp.doc(security=BEARER)
@blp.arguments(MarketplaceReviewRequestSchema)
@blp.response(201, MarketplaceReviewCreatedSchema)
@error_responses(blp, 401, 403, 404, 409, 422)
def review_booking(body, booking_id):
    """Rate a service the provider has marked done: 1 to 5 whole stars, once per booking."""
    booking = _my_booking(booking_id)
    row = reviews.review(booking, by=g.api_user, rating=body["rating"], text=body["text"])
    return _review(row) | {"id": row.id, "booking_id": booking.id}


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
@token_required("read")
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


# --- the provider's own software ---------------------------------------------------------


@blp.get("/provider/bookings")
@token_required("providers:write", "read", any_of=True)
@blp.doc(security=BEARER)
@blp.arguments(MarketplaceProviderBookingQuerySchema, location="query")
@blp.response(200, MarketplaceProviderBookingPageSchema)
@error_responses(blp, 401, 403, 422)
def list_provider_bookings(query):
    """The caller's provider's bookings, earliest slot first; ``status=requested`` is the
    list of requests waiting for an answer."""
    provider = provider_of(g.api_user)
    statement = sa.select(Booking).where(Booking.provider_id == provider.id)
    if "status" in query:
        statement = statement.where(Booking.status == query["status"])
    rows, total = _page(statement, (Booking.slot_start, Booking.id), query)
    return {
        "items": [_provider_booking(b) for b in rows],
        "total": total,
        "limit": query["limit"],
        "offset": query["offset"],
    }


@blp.post("/provider/bookings/<int:booking_id>/accept")
@token_required("providers:write")
@blp.doc(security=BEARER)
@blp.response(200, MarketplaceProviderBookingSchema)
@error_responses(blp, 401, 403, 404, 409)
def accept_booking(booking_id):
    """Accept a request whose time has not come yet."""
    booking = _providers_booking(booking_id)
    bookings.accept(booking, g.api_user)
    return _provider_booking(booking)


@blp.post("/provider/bookings/<int:booking_id>/decline")
@token_required("providers:write")
@blp.doc(security=BEARER)
@blp.arguments(MarketplaceReasonSchema)
@blp.response(200, MarketplaceProviderBookingSchema)
@error_responses(blp, 401, 403, 404, 409, 422)
def decline_booking(body, booking_id):
    """Decline a request, telling the elder why (``reason`` is required)."""
    booking = _providers_booking(booking_id)
    bookings.decline(booking, g.api_user, body["reason"])
    return _provider_booking(booking)


@blp.post("/provider/bookings/<int:booking_id>/complete")
@token_required("providers:write")
@blp.doc(security=BEARER)
@blp.response(200, MarketplaceProviderBookingSchema)
@error_responses(blp, 401, 403, 404, 409)
def complete_booking(booking_id):
    """Mark an accepted booking done, once its time has begun."""
    booking = _providers_booking(booking_id)
    bookings.complete(booking, g.api_user)
    return _provider_booking(booking)


@blp.post("/provider/bookings/<int:booking_id>/cancel")
@token_required("providers:write")
@blp.doc(security=BEARER)
@blp.arguments(MarketplaceReasonSchema)
@blp.response(200, MarketplaceProviderBookingSchema)
@error_responses(blp, 401, 403, 404, 409, 422)
def provider_cancel_booking(body, booking_id):
    """Cancel a booking before it starts, telling the elder why (``reason`` is required)."""
    booking = _providers_booking(booking_id)
    bookings.cancel(booking, g.api_user, body["reason"])
    return _provider_booking(booking)


@blp.get("/provider/services")
@token_required("providers:write", "read", any_of=True)
@blp.doc(security=BEARER)
@blp.response(200, MarketplaceOwnServiceSchema(many=True))
@error_responses(blp, 401, 403)
def list_own_services():
    """The provider's catalogue, offered and withdrawn, each with its price history.
    For the provider's administrators."""
    provider = provider_of(g.api_user, admin=True)
    rows = db.session.scalars(
        sa.select(Service)
        .where(Service.provider_id == provider.id)
        .order_by(Service.active.desc(), Service.title, Service.id)
    ).all()
    return _own_services(list(rows))


@blp.post("/provider/services")
@token_required("providers:write")
@blp.doc(security=BEARER)
@blp.arguments(MarketplaceNewServiceSchema)
@blp.response(201, MarketplaceOwnServiceSchema)
@error_responses(blp, 401, 403, 422)
def add_own_service(body):
    """Add a service to the catalogue, offered in some of the districts the provider serves."""
    provider = provider_of(g.api_user, admin=True)
    codes = list(dict.fromkeys(body["districts"]))
    districts = db.session.scalars(sa.select(District).where(District.code.in_(codes))).all()
    try:
        if len(districts) != len(codes):  # a code of no district at all
            raise InvalidInput(
                details={"districts": _l("Choose districts among those your provider serves.")}
            )
        service = catalogue.add_service(
            provider,
            actor=g.api_user,
            category_code=body["category"],
            title=body["title"],
            description=body["description"],
            unit=body["unit"],
            price_fen=body["price_fen"],
            capacity_per_slot=body["capacity_per_slot"],
            districts=list(districts),
        )
    except InvalidInput as error:
        raise _renamed(error, _SERVICE_FIELDS) from None
    return _own_services([service])[0]


@blp.post("/provider/services/<int:service_id>/price")
@token_required("providers:write")
@blp.doc(security=BEARER)
@blp.arguments(MarketplacePriceChangeSchema)
@blp.response(200, MarketplaceOwnServiceSchema)
@error_responses(blp, 401, 403, 404, 422)
def change_own_price(body, service_id):
    """A new price from now on; bookings already made keep theirs, and the old price stays
    in the history."""
    service = _own_service(service_id)
    catalogue.change_price(service, body["price_fen"], actor=g.api_user)
    return _own_services([service])[0]


@blp.post("/provider/services/<int:service_id>/active")
@token_required("providers:write")
@blp.doc(security=BEARER)
@blp.arguments(MarketplaceServiceActiveSchema)
@blp.response(200, MarketplaceOwnServiceSchema)
@error_responses(blp, 401, 403, 404, 422)
def set_own_service_active(body, service_id):
    """Offer a service again (``true``) or withdraw it (``false``); it stays in the list."""
    service = _own_service(service_id)
    catalogue.set_active(service, body["active"])
    return _own_services([service])[0]


@blp.put("/provider/beds")
@token_required("providers:write")
@blp.doc(security=BEARER)
@blp.arguments(MarketplaceBedsSchema)
@blp.response(200, MarketplaceBedsSchema)
@error_responses(blp, 401, 403, 422)
def set_own_beds(body):
    """A care institution's beds, in total and free now."""
    provider = provider_of(g.api_user, admin=True)
    catalogue.set_beds(provider, total=body["beds_total"], free=body["beds_free"])
    return {"beds_total": provider.beds_total, "beds_free": provider.beds_free}
