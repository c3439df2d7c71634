"""Finding services near an elder: the 15-minute eldercare circle (a 1 km walk by default).

Only what could be booked today is found: active services of providers certified today.
The database narrows the providers to a bounding box around the centre (plain comparisons
on the indexed latitude and longitude, the same on SQLite and PostgreSQL, no extension);
the exact great-circle distance then decides who is within the radius, and sorts.

A service's districts are where it is offered (whose residents it serves, at home or at the
provider's premises); ``district_id`` keeps the services offered to that district's elders.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from dataclasses import dataclass
from datetime import date, datetime

import sqlalchemy as sa
from flask import current_app
from flask_babel import lazy_gettext as _l

from eldercare.db import db
from eldercare.errors import InvalidInput, NotFound
from eldercare.residents import District
from eldercare.timeutil import SHANGHAI, local_today, now_utc
from marketplace.geo import bounding_box, haversine_m
from marketplace.models import (
    PROVIDER_TYPES,
    Provider,
    Review,
    Service,
    ServiceCategory,
    service_districts,
)
from marketplace.providers import WEEKDAYS
from marketplace.voucher_scope import kinds_paying, scope_on

DEFAULT_RADIUS_M = 1000  # a 15-minute walk for an elder; SEARCH_DEFAULT_RADIUS_M overrides
MAX_RADIUS_M = 50_000  # the whole city from its centre; anything more is a typing mistake
MAX_LIMIT = 200
SORTS = ("distance", "price", "rating")
BOX_MARGIN_M = 1.0
REVIEWS_SHOWN = 20  # on a provider's public page, newest first


@dataclass(frozen=True, slots=True)
class FoundService:
    """What a search result shows of a service (the columns it needs, not the row)."""

    id: int
    title: str
    category_code: str
    category: ServiceCategory
    unit: str
    price_fen: int
    delivery_place: str


@dataclass(frozen=True, slots=True)
class FoundProvider:
    """What the public may know of a found service's provider."""

    id: int
    name: str
    type: str
    district_code: str
    address: str
    latitude: float
    longitude: float
    star_level: int | None
    opening_hours: dict


@dataclass(frozen=True)
class Result:
    service: FoundService
    provider: FoundProvider
    distance_m: float
    rating_avg: float | None  # None: no reviews yet
    rating_count: int
    # The voucher kinds (of those the search asked about) that pay part of it.
    voucher_kinds: tuple[str, ...]
    # Open at ``open_at`` (or now, when the search did not ask); None: no hours published.
    open_now: bool | None

    @property
    def accepts_vouchers(self) -> bool:
        return bool(self.voucher_kinds)


def is_open(opening_hours: dict | None, at: datetime) -> bool | None:
    """Whether opening hours ({"mon": [["08:00", "18:00"]], ...}, Shanghai time) contain
    the moment ``at``; each interval includes its start and excludes its end. None when
    the provider published no hours at all; a weekday it does not list is closed."""
    if at.tzinfo is None:
        raise ValueError("is_open needs an aware datetime")
    if not opening_hours:
        return None
    local = at.astimezone(SHANGHAI)
    clock = f"{local.hour:02d}:{local.minute:02d}"
    intervals = opening_hours.get(WEEKDAYS[local.weekday()]) or []
    return any(start <= clock < end for start, end in intervals)


def default_radius_m() -> int:
    return int(current_app.config.get("SEARCH_DEFAULT_RADIUS_M", DEFAULT_RADIUS_M))


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(
    *,
    lat,
    lng,
    radius_m,
    category,
    max_price_fen,
    min_rating,
    min_stars,
    open_at,
    provider_type,
    sort,
    limit,
    offset,
) -> None:
    errors: dict = {}
    if not (_is_number(lat) and -90 <= lat <= 90 and _is_number(lng) and -180 <= lng <= 180):
        errors["location"] = _l(
            "The place to search from is not on the map (latitude -90 to 90, "
            "longitude -180 to 180)."
        )
    if not (_is_number(radius_m) and 0 < radius_m <= MAX_RADIUS_M):
        errors["radius"] = _l("Choose a distance between 1 metre and 50 km.")
    if category is not None and db.session.get(ServiceCategory, category) is None:
        errors["category"] = _l("Choose a kind of service from the list.")
    if max_price_fen is not None and not (_is_int(max_price_fen) and max_price_fen > 0):
        errors["max_price"] = _l("Enter the highest price in yuan, for example 50 or 49.50.")
    if min_rating is not None and not (_is_number(min_rating) and 1 <= min_rating <= 5):
        errors["min_rating"] = _l("Choose a rating from 1 to 5.")
    if min_stars is not None and not (_is_int(min_stars) and 1 <= min_stars <= 5):
        errors["min_stars"] = _l("Choose 1 to 5 stars.")
    if open_at is not None and (not isinstance(open_at, datetime) or open_at.tzinfo is None):
        errors["open_at"] = _l("Give the time with its time zone.")
    if provider_type is not None and provider_type not in PROVIDER_TYPES:
        errors["provider_type"] = _l("Choose the kind of provider from the list.")
    if sort not in SORTS:
        errors["sort"] = _l("Sort by distance, price or rating.")
    if not (_is_int(limit) and 1 <= limit <= MAX_LIMIT) or not (_is_int(offset) and offset >= 0):
        errors["page"] = _l("This page of results does not exist.")
    if errors:
        raise InvalidInput(details=errors)


def _longitude_condition(min_lng: float, max_lng: float):
    """The box's longitudes, split in two where it crosses the 180th meridian."""
    column = Provider.longitude
    if max_lng - min_lng >= 360:
        return sa.true()
    if min_lng < -180:
        return sa.or_(column >= min_lng + 360, column <= max_lng)
    if max_lng > 180:
        return sa.or_(column >= min_lng, column <= max_lng - 360)
    return column.between(min_lng, max_lng)


def ratings_of(provider_ids) -> dict[int, tuple[float, int]]:
    """Average rating and number of reviews per provider, in one aggregate query."""
    ids = sorted(set(provider_ids))
    if not ids:
        return {}
    rows = db.session.execute(
        sa.select(Review.provider_id, sa.func.avg(Review.rating), sa.func.count(Review.id))
        .where(Review.provider_id.in_(ids))
        .group_by(Review.provider_id)
    )
    # PostgreSQL's avg() of integers is a NUMERIC (Decimal), SQLite's a float.
    return {provider_id: (float(avg), int(count)) for provider_id, avg, count in rows}


def search_services(
    *,
    lat: float,
    lng: float,
    radius_m: float | None = None,
    category: str | None = None,
    district_id: int | None = None,
    max_price_fen: int | None = None,
    min_rating: float | None = None,
    min_stars: int | None = None,
    accepts_vouchers: bool | None = None,
    voucher_kinds: Collection[str] | None = None,
    open_at: datetime | None = None,
    provider_type: str | None = None,
    sort: str = "distance",
    limit: int = 50,
    offset: int = 0,
    today: date | None = None,
) -> list[Result]:
    """Active services of providers certified on ``today`` within ``radius_m`` of
    (``lat``, ``lng``), nearest first (or cheapest, or best rated); bad values raise
    InvalidInput naming each one. ``accepts_vouchers`` True keeps only services a voucher
    can pay part of, False only the others; a voucher of one of ``voucher_kinds`` (the
    elder's own kind; None: any kind in force on ``today``). ``open_at`` keeps providers
    open then."""
    radius_m = default_radius_m() if radius_m is None else radius_m
    _check(
        lat=lat,
        lng=lng,
        radius_m=radius_m,
        category=category,
        max_price_fen=max_price_fen,
        min_rating=min_rating,
        min_stars=min_stars,
        open_at=open_at,
        provider_type=provider_type,
        sort=sort,
        limit=limit,
        offset=offset,
    )
    today = today or local_today()
    # A metre more than the radius: a provider exactly on the circle must not be lost to a
    # float's last bit in the box while haversine counts it in.
    box = bounding_box(lat, lng, radius_m + BOX_MARGIN_M)
    # One statement, whatever the number found: the columns a result shows (no ORM objects,
    # no lazy loads per row), the provider's district code and its rating alongside.
    review_of_provider = Review.provider_id == Provider.id
    statement = (
        sa.select(
            Service.id,
            Service.title,
            Service.category_code,
            Service.unit,
            Service.price_fen,
            Provider.id,
            Provider.name,
            Provider.type,
            District.code,
            Provider.address,
            Provider.latitude,
            Provider.longitude,
            Provider.star_level,
            Provider.opening_hours_json,
            sa.select(sa.func.avg(Review.rating)).where(review_of_provider).scalar_subquery(),
            sa.select(sa.func.count(Review.id)).where(review_of_provider).scalar_subquery(),
            Service.delivery_place,
        )
        .join(Provider, Service.provider_id == Provider.id)
        .join(District, Provider.district_id == District.id)
        .where(
            Service.active,
            # Provider.is_certified_on(today), as SQL:
            Provider.status == "active",
            Provider.certified_until.is_not(None),
            Provider.certified_until >= today,
            Provider.latitude.between(box.min_lat, box.max_lat),
            _longitude_condition(box.min_lng, box.max_lng),
        )
    )
    if category is not None:
        statement = statement.where(Service.category_code == category)
    if district_id is not None:
        statement = statement.where(
            sa.exists().where(
                service_districts.c.service_id == Service.id,
                service_districts.c.district_id == district_id,
            )
        )
    if max_price_fen is not None:
        statement = statement.where(Service.price_fen <= max_price_fen)
    if min_stars is not None:
        statement = statement.where(Provider.star_level >= min_stars)
    if provider_type is not None:
        statement = statement.where(Provider.type == provider_type)

    rows = db.session.execute(statement).all()
    if not rows:
        return []
    # The catalogue is a dozen rows: all of it in one statement; the voucher scope is asked
    # once per search (one statement for every kind), then looked up per category.
    categories = {c.code: c for c in db.session.scalars(sa.select(ServiceCategory))}
    scope = scope_on(today)
    covered: dict[str, tuple[str, ...]] = {}
    moment = open_at or now_utc()
    hours: dict[int, tuple[dict, bool | None]] = {}
    kept = []
    for row in rows:
        distance = haversine_m(lat, lng, row[10], row[11])
        if distance > radius_m:
            continue
        code = row[2]
        if code not in covered:
            covered[code] = kinds_paying(scope, code, voucher_kinds)
        if accepts_vouchers is not None and bool(covered[code]) != accepts_vouchers:
            continue
        # PostgreSQL's avg() of integers is a NUMERIC (Decimal), SQLite's a float.
        avg = float(row[14]) if row[14] is not None else None
        if min_rating is not None and (avg is None or avg < min_rating):
            continue
        provider_id = row[5]
        if provider_id not in hours:
            opening = json.loads(row[13]) if row[13] else {}
            hours[provider_id] = (opening, is_open(opening, moment))
        open_now = hours[provider_id][1]
        if open_at is not None and not open_now:
            continue
        kept.append((distance, avg, int(row[15]), open_now, row))

    if sort == "price":
        kept.sort(key=lambda k: (k[4][4], k[0], k[4][0]))
    elif sort == "rating":
        kept.sort(key=lambda k: (k[1] is None, -(k[1] or 0), -k[2], k[0], k[4][0]))
    else:
        kept.sort(key=lambda k: (k[0], k[4][0]))
    return [
        Result(
            service=FoundService(
                id=row[0],
                title=row[1],
                category_code=row[2],
                category=categories[row[2]],
                unit=row[3],
                price_fen=row[4],
                delivery_place=row[16],
            ),
            provider=FoundProvider(
                id=row[5],
                name=row[6],
                type=row[7],
                district_code=row[8],
                address=row[9],
                latitude=row[10],
                longitude=row[11],
                star_level=row[12],
                opening_hours=hours[row[5]][0],
            ),
            distance_m=distance,
            rating_avg=avg,
            rating_count=count,
            voucher_kinds=covered[row[2]],
            open_now=open_now,
        )
        for distance, avg, count, open_now, row in kept[offset : offset + limit]
    ]


# --- one provider, as the public sees it ----------------------------------------------


def listed_provider(provider_id: int, today: date) -> Provider:
    """A provider the public may see: certified ``today``. Any other answers 404, exactly
    as a missing one does."""
    provider = db.session.get(Provider, provider_id)
    if provider is None or not provider.is_certified_on(today):
        raise NotFound()
    return provider


def listed_service(service_id: int, today: date) -> Service:
    """A service on offer: active, of a provider certified ``today``; anything else is 404."""
    service = db.session.get(Service, service_id)
    if service is None or not service.active:
        raise NotFound()
    listed_provider(service.provider_id, today)
    return service


def offered_services(provider: Provider) -> list[Service]:
    """The provider's active services, in the marketplace's order of categories."""
    return list(
        db.session.scalars(
            sa.select(Service)
            .join(ServiceCategory, Service.category_code == ServiceCategory.code)
            .where(Service.provider_id == provider.id, Service.active)
            .order_by(ServiceCategory.sort_order, Service.title, Service.id)
        )
    )


def latest_reviews(provider: Provider, limit: int = REVIEWS_SHOWN) -> list[Review]:
    """The provider's newest reviews, newest first."""
    return list(
        db.session.scalars(
            sa.select(Review)
            .where(Review.provider_id == provider.id)
            .order_by(Review.created_at.desc(), Review.id.desc())
            .limit(limit)
        )
    )


def rating_of(provider_id: int) -> tuple[float | None, int]:
    """One provider's average rating and number of reviews; (None, 0) without reviews."""
    return ratings_of([provider_id]).get(provider_id, (None, 0))
