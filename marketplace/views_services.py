"""The provider's own catalogue: services, prices (with history), beds.

Only a provider's administrators reach it (``providers.provider_of(admin=True)``), and only
their own provider's services: another provider's service answers 404, as a missing one
does. Every change goes through ``marketplace.catalogue``; a refusal rolls back and shows
the page again, with HTTP 422 and the message next to the field it concerns.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required

from eldercare.auth import roles_required
from eldercare.db import db
from eldercare.errors import DomainError, NotFound
from eldercare.forms import fen_from_yuan, problem_from, whole_number, yuan
from eldercare.timeutil import local_today
from marketplace import catalogue
from marketplace.forms import (
    DELIVERY_PLACE_HINTS,
    DELIVERY_PLACE_LABELS,
    UNIT_LABELS,
    districts_by_ids,
)
from marketplace.models import DELIVERY_PLACES, UNITS, Provider, Service, ServiceCategory
from marketplace.providers import administers_a_provider, provider_of
from marketplace.views import bp
from marketplace.views_public import category_name, district_name, page_words

SERVICE_FIELDS = (
    "category_code",
    "title",
    "description",
    "unit",
    "price",
    "capacity_per_slot",
    "districts",
    "delivery_place",
)
# The catalogue's names for what the form calls otherwise.
_RENAMED = {"price_fen": "price"}


def _problem(error: DomainError, fields=SERVICE_FIELDS) -> dict:
    if error.details:
        error.details = {_RENAMED.get(k, k): v for k, v in error.details.items()}
    return problem_from(error, fields)


def _own_service(provider: Provider, service_id: int) -> Service:
    service = db.session.get(Service, service_id)
    if service is None or service.provider_id != provider.id:
        raise NotFound()
    return service


def _render(provider: Provider, status: int = 200, problem=None, target=None, form=None):
    services = catalogue.services_of(provider)
    history = catalogue.price_histories(services)
    categories = [
        c
        for c in db.session.scalars(
            sa.select(ServiceCategory).order_by(ServiceCategory.sort_order, ServiceCategory.code)
        )
        if provider.type in c.provider_types.split()
    ]
    return render_template(
        "marketplace/services.html",
        provider=provider,
        services=services,
        history=history,
        category_options=[(c.code, category_name(c)) for c in categories],
        district_choices=[(d.id, district_name(d)) for d in provider.service_districts],
        today=local_today(),
        units=[(unit, UNIT_LABELS[unit]) for unit in UNITS],
        places=[
            (place, f"{DELIVERY_PLACE_LABELS[place]} ({DELIVERY_PLACE_HINTS[place]})")
            # Only where this kind of provider can deliver (catalogue refuses the others).
            for place in catalogue.PLACES_BY_PROVIDER_TYPE.get(provider.type, DELIVERY_PLACES)
        ],
        problem=problem,
        target=target,
        form=form or {},
        **page_words(),
    ), status


@bp.route("/provider/services", methods=["GET", "POST"])
@roles_required(also=administers_a_provider)  # so menus offer it to administrators only
def provider_services():
    provider = provider_of(current_user, admin=True)
    if request.method == "GET":
        return _render(provider)
    form = request.form
    try:
        service = catalogue.add_service(
            provider,
            actor=current_user,
            category_code=form.get("category_code", ""),
            title=form.get("title", ""),
            description=form.get("description", ""),
            unit=form.get("unit", ""),
            price_fen=fen_from_yuan(form.get("price")),
            capacity_per_slot=whole_number(form.get("capacity_per_slot")),
            districts=districts_by_ids(form.getlist("districts")),
            delivery_place=form.get("delivery_place", ""),
        )
    except DomainError as error:
        db.session.rollback()
        return _render(provider, 422, _problem(error), "new", form)
    flash(_("“%(title)s” is now in your catalogue.", title=service.title), "success")
    return redirect(url_for(".provider_services"))


@bp.post("/provider/services/<int:service_id>/price")
@login_required
def provider_service_price(service_id: int):
    provider = provider_of(current_user, admin=True)
    service = _own_service(provider, service_id)
    try:
        price_fen = fen_from_yuan(request.form.get("price"))
        catalogue.change_price(service, price_fen, actor=current_user)
    except DomainError as error:
        db.session.rollback()
        return _render(provider, 422, _problem(error, ("price",)), service_id, request.form)
    flash(
        _(
            "The price of “%(title)s” is now %(price)s; bookings already made keep their price.",
            title=service.title,
            price=yuan(service.price_fen),
        ),
        "success",
    )
    return redirect(url_for(".provider_services") + f"#service-{service.id}")


@bp.post("/provider/services/<int:service_id>/place")
@login_required
def provider_service_place(service_id: int):
    provider = provider_of(current_user, admin=True)
    service = _own_service(provider, service_id)
    try:
        catalogue.set_delivery_place(
            service, request.form.get("delivery_place", ""), actor=current_user
        )
    except DomainError as error:
        db.session.rollback()
        return _render(
            provider, 422, _problem(error, ("delivery_place",)), service_id, request.form
        )
    flash(
        _(
            "“%(title)s” is now delivered: %(place)s.",
            title=service.title,
            place=DELIVERY_PLACE_LABELS[service.delivery_place],
        ),
        "success",
    )
    return redirect(url_for(".provider_services") + f"#service-{service.id}")


@bp.post("/provider/services/<int:service_id>/active")
@login_required
def provider_service_active(service_id: int):
    provider = provider_of(current_user, admin=True)
    service = _own_service(provider, service_id)
    active = request.form.get("active") == "1"
    catalogue.set_active(service, active)
    if active:
        flash(_("“%(title)s” is offered again.", title=service.title), "success")
    else:
        flash(
            _("“%(title)s” is no longer offered; it stays in your list.", title=service.title),
            "success",
        )
    return redirect(url_for(".provider_services") + f"#service-{service.id}")


@bp.post("/provider/services/beds")
@login_required
def provider_services_beds():
    provider = provider_of(current_user, admin=True)
    form = request.form
    try:
        catalogue.set_beds(
            provider,
            total=whole_number(form.get("beds_total")),
            free=whole_number(form.get("beds_free")),
        )
    except DomainError as error:
        db.session.rollback()
        return _render(
            provider, 422, problem_from(error, ("beds_total", "beds_free")), "beds", form
        )
    flash(
        _(
            "Beds saved: %(free)s free of %(total)s.",
            free=provider.beds_free,
            total=provider.beds_total,
        ),
        "success",
    )
    return redirect(url_for(".provider_services") + "#beds")
