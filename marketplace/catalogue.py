"""The service catalogue: what a provider offers, at what price (with history), where."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from eldercare import audit
from eldercare.accounts import User
from eldercare.db import db
from eldercare.errors import InvalidInput, NotFound
from eldercare.residents import District
from eldercare.timeutil import now_utc
from marketplace.models import (
    DELIVERY_PLACES,
    MAX_PRICE_FEN,
    UNITS,
    Provider,
    Service,
    ServiceCategory,
    ServicePrice,
)

MAX_CAPACITY = 500
MAX_BEDS = 10_000  # a typo guard: no institution of the city has more


def _price_problem(price_fen) -> str | None:
    if isinstance(price_fen, bool) or not isinstance(price_fen, int):
        return _l("Enter the price in yuan, for example 35 or 35.50.")
    if not 0 < price_fen <= MAX_PRICE_FEN:
        return _l("The price must be more than 0 and at most 50,000 yuan.")
    return None


# Where each kind of provider can deliver: a home-service company has no premises elders
# come to (declaring its visits "at the provider" would only take them out of the check-in
# location rule); only a care institution has residents to serve "in the institution".
PLACES_BY_PROVIDER_TYPE = {
    "home_service": ("home",),
    "community_station": ("home", "provider"),
    "care_institution": ("home", "provider", "institution"),
}


def _place_problem(delivery_place, provider: Provider) -> str | None:
    if delivery_place not in DELIVERY_PLACES:
        return _l(
            "Choose where the service is delivered: in the elder's home, at your premises "
            "or in a care institution."
        )
    if delivery_place not in PLACES_BY_PROVIDER_TYPE.get(provider.type, DELIVERY_PLACES):
        return _l("Your kind of provider cannot deliver a service there.")
    return None


def add_service(
    provider: Provider,
    *,
    actor: User,
    category_code: str,
    title: str,
    description: str,
    unit: str,
    price_fen: int,
    capacity_per_slot: int,
    districts: list[District],
    delivery_place: str,
) -> Service:
    errors: dict = {}
    category = db.session.get(ServiceCategory, category_code or "")
    if category is None:
        errors["category_code"] = _l("Choose a category.")
    elif provider.type not in category.provider_types.split():
        errors["category_code"] = _l("Your kind of provider cannot offer this category.")
    if not (title or "").strip() or len(title.strip()) > 120:
        errors["title"] = _l("Give the service a title (at most 120 characters).")
    if unit not in UNITS:
        errors["unit"] = _l("Choose the unit the price is for.")
    if problem := _price_problem(price_fen):
        errors["price_fen"] = problem
    if problem := _place_problem(delivery_place, provider):
        errors["delivery_place"] = problem
    if (
        isinstance(capacity_per_slot, bool)
        or not isinstance(capacity_per_slot, int)
        or not 1 <= capacity_per_slot <= MAX_CAPACITY
    ):
        errors["capacity_per_slot"] = _l("Capacity is 1 to 500 bookings per time slot.")
    served = {d.id for d in provider.service_districts}
    if not districts or any(d.id not in served for d in districts):
        errors["districts"] = _l("Choose districts among those your provider serves.")
    if errors:
        raise InvalidInput(details=errors)
    service = Service(
        provider_id=provider.id,
        provider=provider,
        category_code=category.code,
        title=title.strip(),
        description=(description or "").strip(),
        unit=unit,
        price_fen=price_fen,
        capacity_per_slot=capacity_per_slot,
        delivery_place=delivery_place,
    )
    service.districts = list(districts)
    db.session.add(service)
    db.session.flush()
    db.session.add(
        ServicePrice(
            service_id=service.id,
            price_fen=price_fen,
            effective_from=now_utc(),
            set_by_user_id=actor.id,
        )
    )
    audit.record(
        "service.create",
        service,
        district_id=provider.district_id,
        after={
            "title": service.title,
            "category": category.code,
            "price_fen": price_fen,
            "delivery_place": delivery_place,
        },
    )
    return service


def set_delivery_place(service: Service, delivery_place: str, *, actor: User) -> None:
    """Where the service is delivered from now on; check-ins already made keep theirs."""
    if problem := _place_problem(delivery_place, service.provider):
        raise InvalidInput(details={"delivery_place": problem})
    if delivery_place == service.delivery_place:
        return
    before = service.delivery_place
    service.delivery_place = delivery_place
    audit.record(
        "service.delivery_place",
        service,
        district_id=service.provider.district_id,  # seen by the district's auditors
        actor=actor,
        before={"delivery_place": before},
        after={"delivery_place": delivery_place},
    )


def change_price(service: Service, price_fen: int, *, actor: User) -> None:
    """The new price holds from now; bookings keep the price they were made at."""
    if problem := _price_problem(price_fen):
        raise InvalidInput(details={"price_fen": problem})
    if price_fen == service.price_fen:
        return
    before = service.price_fen
    service.price_fen = price_fen
    db.session.add(
        ServicePrice(
            service_id=service.id,
            price_fen=price_fen,
            effective_from=now_utc(),
            set_by_user_id=actor.id,
        )
    )
    audit.record(
        "service.price", service, before={"price_fen": before}, after={"price_fen": price_fen}
    )


def services_of(provider: Provider) -> list[Service]:
    """The provider's whole catalogue: offered services first, then withdrawn, by title."""
    return list(
        db.session.scalars(
            sa.select(Service)
            .where(Service.provider_id == provider.id)
            .order_by(Service.active.desc(), Service.title, Service.id)
        )
    )


def service_of(provider: Provider, service_id) -> Service:
    """One of the provider's own services; another provider's (or no one's) is NotFound."""
    service = db.session.get(Service, service_id) if isinstance(service_id, int) else None
    if service is None or service.provider_id != provider.id:
        raise NotFound(_l("That service is not in your catalogue."))
    return service


def service_by_id(service_id: int) -> Service:
    """A service by its id, whoever offers it (for records that name it, like a redemption)."""
    service = db.session.get(Service, service_id)
    if service is None:
        raise NotFound(_l("That service does not exist."))
    return service


def price_histories(services: list[Service]) -> dict[int, list[ServicePrice]]:
    """Each service's prices by service id, newest first, in one query."""
    history: dict[int, list[ServicePrice]] = {s.id: [] for s in services}
    if history:
        for price in db.session.scalars(
            sa.select(ServicePrice)
            .where(ServicePrice.service_id.in_(list(history)))
            .order_by(ServicePrice.effective_from.desc(), ServicePrice.id.desc())
        ):
            history[price.service_id].append(price)
    return history


def price_on(service_id: int, when: datetime) -> int:
    """The price that was in force at ``when``."""
    price = db.session.scalar(
        sa.select(ServicePrice.price_fen)
        .where(ServicePrice.service_id == service_id, ServicePrice.effective_from <= when)
        .order_by(ServicePrice.effective_from.desc(), ServicePrice.id.desc())
        .limit(1)
    )
    if price is None:
        raise NotFound(_l("The service had no price at that time."))
    return price


def set_active(service: Service, active: bool) -> None:
    if service.active == active:
        return
    service.active = active
    audit.record("service.active", service, after={"active": active})


def set_beds(provider: Provider, *, total: int, free: int) -> None:
    if provider.type != "care_institution":
        raise InvalidInput(details={"beds_total": _l("Only care institutions have beds.")})
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (total, free))
    if not ints or not (1 <= total <= MAX_BEDS and 0 <= free <= total):
        raise InvalidInput(
            details={"beds_free": _l("Free beds must be between 0 and the number of beds.")}
        )
    before = {"total": provider.beds_total, "free": provider.beds_free}
    provider.beds_total, provider.beds_free = total, free
    audit.record("provider.beds", provider, before=before, after={"total": total, "free": free})
