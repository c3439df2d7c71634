"""Public pages: the marketplace search, provider and service pages (no login needed).

Elders and their families read these on phones: large cards, distances in words
("about 250 m"), prices in yuan per unit, ratings as text. A query that cannot be read
(a negative distance, letters in a price, a latitude of 999) shows the form again with a
message next to the field, with HTTP 422, and searches nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import sqlalchemy as sa
from flask import render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from eldercare.accounts import ELDER_ROLES, elders_acted_for
from eldercare.db import db
from eldercare.errors import InvalidInput
from eldercare.forms import fen_from_yuan, whole_number, yuan, yuan_input
from eldercare.i18n import current_locale
from eldercare.residents import District, Resident
from eldercare.timeutil import local_today, now_utc
from marketplace.forms import (
    DELIVERY_PLACE_LABELS,
    PROVIDER_TYPE_LABELS,
    UNIT_LABELS,
    WEEKDAY_LABELS,
)
from marketplace.models import Provider, ServiceCategory
from marketplace.providers import WEEKDAYS
from marketplace.search import (
    MAX_RADIUS_M,
    SORTS,
    default_radius_m,
    is_open,
    latest_reviews,
    listed_provider,
    listed_service,
    offered_services,
    rating_of,
    search_services,
)
from marketplace.views import bp
from marketplace.voucher_scope import kind_label, kinds_held, kinds_paying, scope_on

PAGE_SIZE = 20
RADIUS_CHOICES = (500, 1000, 2000, 5000)
RATING_CHOICES = ("3", "4", "4.5")
STAR_CHOICES = (1, 2, 3, 4, 5)

SORT_LABELS = {
    "distance": _l("Nearest first"),
    "price": _l("Cheapest first"),
    "rating": _l("Best rated first"),
}


# --------------------------------------------------------------------------- words


def distance_text(metres: float) -> str:
    """About how far, in words an elder reads at a glance: "About 250 m", "About 1.2 km"."""
    if metres < 1000:
        return _("About %(metres)s m", metres=max(10, int(round(metres / 10.0)) * 10))
    return _("About %(km)s km", km=f"{metres / 1000:.1f}")


def radius_text(metres: int) -> str:
    if metres < 1000:
        return _("%(metres)s m", metres=metres)
    km = metres / 1000
    return _("%(km)s km", km=f"{km:g}")


def rating_text(avg: float | None, count: int) -> str:
    """ "4.5 / 5 (12 reviews)": the stars said in words, never only as symbols."""
    if not count or avg is None:
        return _("No reviews yet")
    if count == 1:
        return _("%(avg)s / 5 (1 review)", avg=f"{avg:.1f}")
    return _("%(avg)s / 5 (%(num)s reviews)", avg=f"{avg:.1f}", num=count)


def stars_text(stars: int | None) -> str:
    if not stars:
        return _("Not yet evaluated by the bureau")
    return _("%(stars)s of 5 stars (bureau evaluation)", stars=stars)


def unit_label(unit: str) -> str:
    return str(UNIT_LABELS.get(unit, unit))


def category_name(category: ServiceCategory | None) -> str:
    return category.display_name(current_locale()) if category else "—"


def district_name(district: District | None) -> str:
    return district.display_name(current_locale()) if district else "—"


@dataclass(frozen=True)
class VoucherView:
    """Whose voucher the page speaks of: the kinds of the elders the reader acts for (an
    elder, a family agent), or every kind in force (None) for anyone else."""

    kinds: frozenset[str] | None
    scope: dict  # {kind: category codes}, the policy in force today

    def paying(self, category_code: str) -> tuple[str, ...]:
        return kinds_paying(self.scope, category_code, self.kinds)

    @property
    def own(self) -> bool:
        return self.kinds is not None

    def badge(self, kinds: tuple[str, ...]) -> str:
        """ "Voucher accepted"; for a reader holding no voucher, which kinds pay, when
        there is more than one."""
        if self.own or len(self.scope) < 2:
            return _("Voucher accepted")
        names = "、".join if current_locale().startswith("zh") else ", ".join
        return _("Voucher accepted: %(kinds)s", kinds=names(kind_label(k) for k in kinds))


def voucher_view(resident_ids, today) -> VoucherView:
    kinds = kinds_held(resident_ids, today) if resident_ids else None
    return VoucherView(kinds=kinds, scope=dict(scope_on(today)))


def hours_rows(provider: Provider) -> list[tuple[str, str]]:
    """(weekday, "08:00–12:00, 13:00–18:00" or "Closed") for each day of the week."""
    hours = provider.opening_hours
    rows = []
    for day in WEEKDAYS:
        intervals = hours.get(day) or []
        text = ", ".join(f"{start}–{end}" for start, end in intervals) or _("Closed")
        rows.append((str(WEEKDAY_LABELS[day]), text))
    return rows


def page_words() -> dict:
    """What every marketplace page of this module shows codes and numbers with."""
    return {
        "yuan": yuan,
        "yuan_input": yuan_input,
        "distance_text": distance_text,
        "radius_text": radius_text,
        "rating_text": rating_text,
        "stars_text": stars_text,
        "unit_label": unit_label,
        "category_name": category_name,
        "district_name": district_name,
        "hours_rows": hours_rows,
        "PROVIDER_TYPE_LABELS": PROVIDER_TYPE_LABELS,
        "DELIVERY_PLACE_LABELS": DELIVERY_PLACE_LABELS,
    }


# --------------------------------------------------------------------------- the search


@dataclass
class SearchQuery:
    """The search form as read from the query string, with what could not be read."""

    values: dict  # what the form shows back
    errors: dict = field(default_factory=dict)
    run: bool = False  # enough to search with
    lat: float | None = None
    lng: float | None = None
    centre_label: str = ""
    params: dict = field(default_factory=dict)  # for search_services
    page: int = 1


def _float(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_search(args, elders: list[Resident], districts: dict[int, District]) -> SearchQuery:
    """Read the form; where to search from, when the form does not say: the first elder's
    home (for an elder or a family agent), else the chosen district's centre."""

    def get(name: str) -> str:
        return (args.get(name) or "").strip()

    submitted = bool(args)
    errors: dict = {}
    params: dict = {}

    category = get("category") or None
    if category is not None and db.session.get(ServiceCategory, category) is None:
        errors["category"] = _("Choose a kind of service from the list.")
        category = None

    district_text = get("district")
    district = None
    if not submitted and elders:
        district = elders[0].district
    elif district_text:
        district_id = whole_number(district_text)
        district = districts.get(district_id) if district_id is not None else None
        if district is None:
            errors["district"] = _("Choose a district from the list.")

    home_choices = {
        f"home-{elder.id}": elder
        for elder in elders
        if elder.latitude is not None and elder.longitude is not None
    }
    near = get("near") or (next(iter(home_choices), None) if home_choices else "district")
    lat = lng = None
    centre_label = ""
    if near == "here":
        lat, lng = _float(get("lat")), _float(get("lng"))
        if lat is None or lng is None or not (-90 <= lat <= 90 and -180 <= lng <= 180):
            errors["near"] = _(
                "Your location could not be read. Press “Use where I am now” again, "
                "or choose your district."
            )
            lat = lng = None
        else:
            centre_label = _("Near where you are now")
    elif near in home_choices:
        elder = home_choices[near]
        lat, lng = elder.latitude, elder.longitude
        centre_label = _("Near the home of %(name)s", name=elder.name)
    elif near == "district":
        if district is not None and district.center_latitude is not None:
            lat, lng = district.center_latitude, district.center_longitude
            centre_label = _("Near the centre of %(district)s", district=district_name(district))
        elif district is not None:
            errors["near"] = _(
                "This district has no centre on our map. Press “Use where I am now” instead."
            )
        elif submitted and "district" not in errors:
            errors["district"] = _("Choose your district, or press “Use where I am now”.")
    else:
        errors["near"] = _("Choose where to search from.")

    radius_text_in = get("radius")
    radius = default_radius_m()
    if radius_text_in:
        radius = whole_number(radius_text_in)
        if radius is None or not 0 < radius <= MAX_RADIUS_M:
            errors["radius"] = _("Choose a distance from the list.")
            radius = default_radius_m()

    max_price_text = get("max_price")
    if max_price_text:
        fen = fen_from_yuan(max_price_text)
        if fen is None or fen <= 0:
            errors["max_price"] = _("Enter the highest price in yuan, for example 50 or 49.50.")
        else:
            params["max_price_fen"] = fen

    if min_rating := get("min_rating"):
        value = _float(min_rating)
        if value is None or not 1 <= value <= 5:
            errors["min_rating"] = _("Choose a rating from the list.")
        else:
            params["min_rating"] = value

    if min_stars := get("min_stars"):
        value = whole_number(min_stars)
        if value is None or not 1 <= value <= 5:
            errors["min_stars"] = _("Choose a number of stars from the list.")
        else:
            params["min_stars"] = value

    sort = get("sort") or "distance"
    if sort not in SORTS:
        errors["sort"] = _("Choose an order from the list.")
        sort = "distance"

    page = 1
    if page_text := get("page"):
        page = whole_number(page_text) or 0
        if not 1 <= page <= 1000:
            errors["page"] = _("This page of results does not exist.")
            page = 1

    vouchers = get("vouchers") == "1"
    open_now = get("open_now") == "1"
    if vouchers:
        params["accepts_vouchers"] = True
    if open_now:
        params["open_at"] = now_utc()
    params.update(
        category=category,
        district_id=district.id if district is not None else None,
        radius_m=radius,
        sort=sort,
        limit=PAGE_SIZE + 1,  # one more tells whether there is a next page
        offset=(page - 1) * PAGE_SIZE,
    )
    values = {
        "category": category or "",
        "district": str(district.id) if district is not None else "",
        "near": near,
        "lat": "" if lat is None or near != "here" else f"{lat:.6f}",
        "lng": "" if lng is None or near != "here" else f"{lng:.6f}",
        "radius": radius,
        "max_price": max_price_text,
        "min_rating": min_rating,
        "min_stars": min_stars,
        "vouchers": vouchers,
        "open_now": open_now,
        "sort": sort,
    }
    return SearchQuery(
        values=values,
        errors=errors,
        run=not errors and lat is not None,
        lat=lat,
        lng=lng,
        centre_label=centre_label,
        params=params,
        page=page,
    )


def _page_url(query: SearchQuery, page: int) -> str:
    args = {k: v for k, v in request.args.items() if k != "page"}
    args.update({"near": query.values["near"], "page": page})
    return url_for("marketplace.search", **args)


@bp.get("/")
def search():
    categories = db.session.scalars(
        sa.select(ServiceCategory).order_by(ServiceCategory.sort_order, ServiceCategory.code)
    ).all()
    districts = {
        d.id: d for d in db.session.scalars(sa.select(District).order_by(District.code)).all()
    }
    elders = elders_acted_for(current_user)
    today = local_today()
    query = read_search(request.args, elders, districts)
    results, more = None, False
    # The badge and the filter speak of the voucher of the elder searched for (near an
    # elder's home), else of the elders the account acts for, else of every kind.
    near_elder = next((e for e in elders if query.values["near"] == f"home-{e.id}"), None)
    vouchers = voucher_view([near_elder.id] if near_elder else [e.id for e in elders], today)
    if query.run:
        try:
            found = search_services(
                lat=query.lat, lng=query.lng, voucher_kinds=vouchers.kinds, **query.params
            )
        except InvalidInput as error:  # the form checks first; this is the last word
            query.errors.update({k: str(v) for k, v in error.details.items()})
        else:
            results, more = found[:PAGE_SIZE], len(found) > PAGE_SIZE
    homes = [e for e in elders if e.latitude is not None and e.longitude is not None]
    near_options = [(f"home-{e.id}", _("The home of %(name)s", name=e.name)) for e in homes]
    near_options.append(("district", _("The centre of the chosen district")))
    if query.values["near"] == "here":
        near_options.append(("here", _("Where I am now")))
    radii = sorted(set(RADIUS_CHOICES) | {query.values["radius"]})
    return render_template(
        "marketplace/search.html",
        q=query,
        category_options=[(c.code, category_name(c)) for c in categories],
        district_options=[(d.id, district_name(d)) for d in districts.values()],
        near_options=near_options,
        radius_options=[(r, _("Within %(distance)s", distance=radius_text(r))) for r in radii],
        rating_options=[(r, _("%(rating)s / 5 or better", rating=r)) for r in RATING_CHOICES],
        star_options=[(s, _("%(stars)s stars or more", stars=s)) for s in STAR_CHOICES],
        sort_options=[(key, str(label)) for key, label in SORT_LABELS.items()],
        results=results,
        vouchers=vouchers,
        previous_url=_page_url(query, query.page - 1) if query.page > 1 else None,
        next_url=_page_url(query, query.page + 1) if more else None,
        **page_words(),
    ), (422 if query.errors else 200)


# --------------------------------------------------------------------------- provider, service


@bp.get("/providers/<int:provider_id>")
def provider_page(provider_id: int):
    today = local_today()
    provider = listed_provider(provider_id, today)
    services = offered_services(provider)
    vouchers = voucher_view([e.id for e in elders_acted_for(current_user)], today)
    covered = {s.category_code: vouchers.paying(s.category_code) for s in services}
    reviews = latest_reviews(provider)
    avg, count = rating_of(provider.id)
    return render_template(
        "marketplace/public_provider.html",
        provider=provider,
        services=services,
        covered=covered,
        vouchers=vouchers,
        reviews=reviews,
        rating_avg=avg,
        rating_count=count,
        open_now=is_open(provider.opening_hours, now_utc()),
        **page_words(),
    )


@bp.get("/services/<int:service_id>")
def service_page(service_id: int):
    today = local_today()
    service = listed_service(service_id, today)
    provider = service.provider
    avg, count = rating_of(provider.id)
    can_book = current_user.is_authenticated and current_user.has_role(*ELDER_ROLES)
    elders = elders_acted_for(current_user)
    vouchers = voucher_view([e.id for e in elders], today)
    return render_template(
        "marketplace/public_service.html",
        service=service,
        provider=provider,
        voucher_kinds=vouchers.paying(service.category_code),
        vouchers=vouchers,
        rating_avg=avg,
        rating_count=count,
        open_now=is_open(provider.opening_hours, now_utc()),
        can_book=can_book,
        elders=elders if can_book else [],
        today=today,
        **page_words(),
    )
