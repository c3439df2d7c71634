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

Each kind of client has its module, which adds its endpoints to ``blp``: ``api_public``,
``api_elders`` and ``api_provider`` (``marketplace/__init__.py`` imports them). This module
holds the blueprint and the shapes of answer they share.

Every rule lives in the service modules (``bookings``, ``reviews``, ``complaints``,
``catalogue``, ``search``); the views find the caller's records, call them, and shape the
answer. Money is integer fen; times are ISO 8601 in Asia/Shanghai.

Authentication (and the caller's role) is checked before the body is parsed, so a caller
without a valid token learns nothing about the request format from a 422.
"""

from __future__ import annotations

from flask_smorest import Blueprint

from eldercare.api import local_time
from marketplace.models import Booking, Review, Service

blp = Blueprint(
    "marketplace_api", __name__, url_prefix="/api/v1", description="Providers, services, bookings"
)


# --- shaping answers --------------------------------------------------------------------


def shape_service_summary(service: Service, kinds: tuple[str, ...]) -> dict:
    """``kinds``: the voucher kinds whose policy in force pays part of it."""
    return {
        "id": service.id,
        "title": service.title,
        "category": service.category_code,
        "unit": service.unit,
        "price_fen": service.price_fen,
        "accepts_vouchers": bool(kinds),
        "voucher_kinds": list(kinds),
        "delivery_place": service.delivery_place,
    }


def shape_service(service: Service, kinds: tuple[str, ...]) -> dict:
    return shape_service_summary(service, kinds) | {
        "description": service.description,
        "capacity_per_slot": service.capacity_per_slot,
        "districts": sorted(d.code for d in service.districts),
    }


def shape_review(row: Review | None) -> dict | None:
    if row is None:
        return None
    return {"rating": row.rating, "text": row.text, "created_at": local_time(row.created_at)}


def shape_booking(booking: Booking) -> dict:
    service = booking.service
    return {
        "id": booking.id,
        "status": booking.status,
        "slot_start": local_time(booking.slot_start),
        "slot_end": local_time(booking.slot_end),
        "price_fen": booking.price_fen,
        "note": booking.note,
        "reason": booking.cancel_reason,
        "created_at": local_time(booking.created_at),
        "decided_at": local_time(booking.decided_at),
        "completed_at": local_time(booking.completed_at),
        "service": {
            "id": service.id,
            "title": service.title,
            "category": service.category_code,
            "unit": service.unit,
        },
    }
