"""/api/v1 for a provider's own software.

A token of one of its staff ("providers:write"; reading also with "read"). Staff answer
booking requests and mark them done; the catalogue (services, prices, beds) is its
administrators'. Another provider's booking or service answers 404.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import g
from flask_babel import lazy_gettext as _l

from eldercare.api import BEARER, error_responses, local_time, page_of, rename_details
from eldercare.db import db
from eldercare.errors import Conflict, InvalidInput, NotFound
from eldercare.residents import District
from eldercare.timeutil import local_today
from eldercare.tokens import token_required
from marketplace import bookings, catalogue
from marketplace.api import blp, shape_booking, shape_service
from marketplace.models import Booking, Service
from marketplace.providers import provider_of
from marketplace.schemas import (
    MarketplaceBedsSchema,
    MarketplaceDeliveryPlaceSchema,
    MarketplaceNewServiceSchema,
    MarketplaceOwnServiceSchema,
    MarketplacePriceChangeSchema,
    MarketplaceProviderBookingPageSchema,
    MarketplaceProviderBookingQuerySchema,
    MarketplaceProviderBookingSchema,
    MarketplaceReasonSchema,
    MarketplaceServiceActiveSchema,
)
from marketplace.voucher_scope import kinds_paying, scope_on

# catalogue.add_service says "category_code" where the API says "category".
_SERVICE_FIELDS = {"category_code": "category"}


# --- whose records ----------------------------------------------------------------------


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


def _provider_booking(booking: Booking) -> dict:
    resident = booking.resident
    return shape_booking(booking) | {
        "resident": {"masked_name": resident.masked_name, "district": resident.district.code}
    }


def _own_services(rows: list[Service]) -> list[dict]:
    scope = scope_on(local_today())
    history = catalogue.price_histories(rows)
    return [
        shape_service(s, kinds_paying(scope, s.category_code, None))
        | {
            "active": s.active,
            "created_at": local_time(s.created_at),
            "prices": [
                {"price_fen": p.price_fen, "effective_from": local_time(p.effective_from)}
                for p in history[s.id]
            ],
        }
        for s in rows
    ]


# --- endpoints --------------------------------------------------------------------------


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
    page = page_of(statement, (Booking.slot_start, Booking.id), query)
    return page | {"items": [_provider_booking(b) for b in page["items"]]}


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
    return _own_services(catalogue.services_of(provider))


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
            delivery_place=body["delivery_place"],
        )
    except InvalidInput as error:
        raise rename_details(error, _SERVICE_FIELDS) from None
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


@blp.post("/provider/services/<int:service_id>/delivery-place")
@token_required("providers:write")
@blp.doc(security=BEARER)
@blp.arguments(MarketplaceDeliveryPlaceSchema)
@blp.response(200, MarketplaceOwnServiceSchema)
@error_responses(blp, 401, 403, 404, 422)
def set_own_delivery_place(body, service_id):
    """Where the service is delivered from now on: ``home`` (check-in needs the phone's
    location near the elder's home), ``provider`` or ``institution`` (no location needed)."""
    service = _own_service(service_id)
    catalogue.set_delivery_place(service, body["delivery_place"], actor=g.api_user)
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
@error_responses(blp, 401, 403, 409, 422)
def set_own_beds(body):
    """A care institution's beds, in total and free now (``beds_free`` at most
    ``beds_total``: 422 otherwise). Only a care institution has beds: for any other kind of
    provider the request conflicts with what the provider is (409)."""
    provider = provider_of(g.api_user, admin=True)
    if provider.type != "care_institution":
        raise Conflict(
            _l("Only care institutions have beds."), details={"provider_type": provider.type}
        )
    catalogue.set_beds(provider, total=body["beds_total"], free=body["beds_free"])
    return {"beds_total": provider.beds_total, "beds_free": provider.beds_free}
