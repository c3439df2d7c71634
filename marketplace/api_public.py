"""/api/v1 for anyone with a token holding "read": the service categories, the search (the
15-minute circle, ``marketplace.search``), and the pages of certified providers and their
services.

A provider that is not certified today answers 404, as a missing one does; the public never
sees a provider's bank account, credit code or telephone.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import jsonify
from flask_babel import lazy_gettext as _l

from eldercare.api import BEARER, error_responses, rename_details
from eldercare.db import db
from eldercare.errors import InvalidInput, NotFound
from eldercare.residents import District
from eldercare.timeutil import local_today, now_utc
from eldercare.tokens import token_required
from marketplace.api import blp, shape_review, shape_service, shape_service_summary
from marketplace.models import Provider, ServiceCategory
from marketplace.schemas import (
    MarketplaceCategorySchema,
    MarketplaceProviderSchema,
    MarketplacePublicServiceSchema,
    MarketplaceSearchPageSchema,
    MarketplaceSearchQuerySchema,
)
from marketplace.search import (
    FoundProvider,
    is_open,
    latest_reviews,
    listed_provider,
    listed_service,
    offered_services,
    rating_of,
    search_services,
)
from marketplace.voucher_scope import kinds_paying, scope_on

# search_services names the problems after its own parameters; the API's are these.
_SEARCH_FIELDS = {
    "location": ("lat", "lng"),
    "radius": ("radius_m",),
    "max_price": ("max_price_fen",),
    "open_at": ("open_now",),
    "page": ("limit", "offset"),
}


def _rating(average: float | None, count: int) -> dict:
    return {"average": round(average, 2) if average is not None else None, "count": count}


def _provider_summary(provider: Provider | FoundProvider, district_code: str) -> dict:
    return {
        "id": provider.id,
        "name": provider.name,
        "type": provider.type,
        "district": district_code,
        "address": provider.address,
        "latitude": provider.latitude,
        "longitude": provider.longitude,
        "star_level": provider.star_level,
    }


@blp.get("/service-categories")
@token_required("read")
@blp.doc(security=BEARER)
@blp.response(200, MarketplaceCategorySchema(many=True))
@error_responses(blp, 401, 403)
def list_categories():
    """The kinds of service, in the order the marketplace shows them, and which of them a
    voucher can pay part of today."""
    scope = scope_on(local_today())
    categories = db.session.scalars(
        sa.select(ServiceCategory).order_by(ServiceCategory.sort_order, ServiceCategory.code)
    ).all()
    return [
        {
            "code": c.code,
            "name_zh": c.name_zh,
            "name_en": c.name_en,
            "programme": c.programme,
            "accepts_vouchers": bool(kinds_paying(scope, c.code, None)),
            "voucher_kinds": list(kinds_paying(scope, c.code, None)),
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
@error_responses(blp, 401, 403, 404, 422)
def search(query):
    """Services of certified providers within ``radius_m`` of a point, nearest first (or
    ``sort=price`` cheapest, ``sort=rating`` best rated first). A ``district`` or
    ``category`` code that names none: 404."""
    if "category" in query and db.session.get(ServiceCategory, query["category"]) is None:
        raise NotFound(
            _l("Choose a kind of service from the list."),
            details={"category": query["category"]},
        )
    district_id = None
    if "district" in query:
        district_id = db.session.scalar(
            sa.select(District.id).where(District.code == query["district"])
        )
        if district_id is None:
            code = query["district"]
            raise NotFound(_l("No district has this code."), details={"district": code})
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
        raise rename_details(error, _SEARCH_FIELDS) from None
    # Built to MarketplaceSearchPageSchema exactly (a test dumps it through the schema and
    # compares) and sent as is: marshmallow walking 50 results field by field cost more than
    # the search's own SQL.
    return jsonify(
        {
            "items": [
                {
                    "service": shape_service_summary(r.service, r.voucher_kinds),
                    "provider": _provider_summary(r.provider, r.provider.district_code),
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
    )


@blp.get("/providers/<int:provider_id>")
@token_required("read")
@blp.doc(security=BEARER)
@blp.response(200, MarketplaceProviderSchema)
@error_responses(blp, 401, 403, 404)
def get_provider(provider_id):
    """A certified provider: where, when open, its services and its latest reviews."""
    today = local_today()
    provider = listed_provider(provider_id, today)
    services = offered_services(provider)
    scope = scope_on(today)  # once, however many services
    latest = latest_reviews(provider)
    average, count = rating_of(provider.id)
    return _provider_summary(provider, provider.district.code) | {
        "certified_until": provider.certified_until,
        "opening_hours": provider.opening_hours,
        "open_now": is_open(provider.opening_hours, now_utc()),
        "beds_total": provider.beds_total,
        "beds_free": provider.beds_free,
        "service_districts": sorted(d.code for d in provider.service_districts),
        "rating": _rating(average, count),
        "services": [
            shape_service(s, kinds_paying(scope, s.category_code, None)) for s in services
        ],
        "reviews": [shape_review(r) for r in latest],
    }


@blp.get("/services/<int:service_id>")
@token_required("read")
@blp.doc(security=BEARER)
@blp.response(200, MarketplacePublicServiceSchema)
@error_responses(blp, 401, 403, 404)
def get_service(service_id):
    """A service on offer now, with its provider; one no longer offered, or of a provider
    not certified today, is 404."""
    today = local_today()
    service = listed_service(service_id, today)
    provider = service.provider
    average, count = rating_of(provider.id)
    kinds = kinds_paying(scope_on(today), service.category_code, None)
    return shape_service(service, kinds) | {
        "provider": _provider_summary(provider, provider.district.code),
        "rating": _rating(average, count),
        "open_now": is_open(provider.opening_hours, now_utc()),
    }
