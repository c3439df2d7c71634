"""Booking and reviewing, for elders and families; the provider's bookings.

Every step goes through the service modules (``bookings``, ``reviews``); a view reads the
form, calls the service and, on a ``DomainError``, rolls back and shows the page again with
the service's message (status 422), so nothing is saved.

- ``book`` (POST /marketplace/services/<id>/book): the service page's form posts here;
  success goes to ``my_bookings``, a refusal shows ``booking_form.html`` again (422).
  ``book_form`` (GET, same path) shows the same form on its own.
- ``my_bookings`` (GET /marketplace/bookings): the bookings of the elders the account acts for,
  with cancelling while allowed, rating after completion and a link to complain.
- ``provider_bookings`` (GET /marketplace/provider/bookings): the provider's requests to
  accept or decline and accepted bookings to complete or cancel; elders' names masked.
  Another provider's bookings answer 404.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta

import sqlalchemy as sa
from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from eldercare.accounts import ELDER_ROLES, elders_acted_for
from eldercare.auth import roles_required
from eldercare.db import db
from eldercare.errors import DomainError, NotFound
from eldercare.forms import (
    DATE_OUT_OF_RANGE,
    FormErrors,
    input_problem,
    problem_from,
    row_id,
    whole_number_or_raw,
    yuan,
)
from eldercare.residents import Resident, mask_name
from eldercare.timeutil import SHANGHAI, in_date_range, local_today, now_utc
from marketplace import bookings, reviews
from marketplace.forms import UNIT_LABELS, WEEKDAY_LABELS
from marketplace.models import Booking, Provider, Review, Service
from marketplace.providers import WEEKDAYS, provider_of
from marketplace.views import bp

PROVIDER_ROLES = ("provider_admin", "provider_staff")
RECENT_DAYS = 30  # how far back the provider's page shows closed bookings

STATUS_LABELS = {
    "requested": _l("Waiting for the provider"),
    "accepted": _l("Accepted"),
    "declined": _l("Declined by the provider"),
    "cancelled": _l("Cancelled"),
    "completed": _l("Done"),
}
# The same states as the provider's staff read them.
PROVIDER_SIDE_LABELS = {**STATUS_LABELS, "requested": _l("Waiting for your answer")}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIME = re.compile(r"^\d{2}:\d{2}$")


# --------------------------------------------------------------------------- shared


def page_words() -> dict:
    """What the booking, review and complaint templates use besides their own values."""
    return {
        "yuan": yuan,
        "mask_name": mask_name,
        "STATUS_LABELS": STATUS_LABELS,
        "PROVIDER_SIDE_LABELS": PROVIDER_SIDE_LABELS,
        "UNIT_LABELS": UNIT_LABELS,
        "WEEKDAYS": WEEKDAYS,
        "WEEKDAY_LABELS": WEEKDAY_LABELS,
    }


def _my_booking(booking_id: int) -> Booking:
    """A booking of an elder the account acts for; any other looks missing."""
    booking = db.session.get(Booking, booking_id)
    if booking is None or booking.resident_id not in {r.id for r in elders_acted_for(current_user)}:
        raise NotFound()
    return booking


# --------------------------------------------------------------------------- booking


def parse_slot(day_text: str | None, time_text: str | None, errors: FormErrors) -> datetime | None:
    """slot_date (YYYY-MM-DD) and slot_time (HH:MM), typed in Shenyang, as an aware time."""
    day_text, time_text = (day_text or "").strip(), (time_text or "").strip()
    day = clock = None
    if _DATE.match(day_text):
        try:
            day = date.fromisoformat(day_text)
        except ValueError:
            day = None
    if day is not None and not in_date_range(day):  # year 9999: no slot, and no next day
        errors.add("slot_date", DATE_OUT_OF_RANGE)
        day = None
    if day is None:
        errors.add("slot_date", _("Enter the date as year-month-day, for example 2025-07-01."))
    if _TIME.match(time_text):
        try:
            clock = time.fromisoformat(time_text)
        except ValueError:
            clock = None
    if clock is None:
        errors.add("slot_time", _("Enter the time as hours:minutes, for example 09:30."))
    if day is None or clock is None:
        return None
    return datetime.combine(day, clock, tzinfo=SHANGHAI)


def _chosen_elder(value: str | None, errors: FormErrors) -> Resident | None:
    """The elder the form names (the service decides whether the account acts for them)."""
    text = (value or "").strip()
    if not text:
        elders = elders_acted_for(current_user)
        if len(elders) == 1:
            return elders[0]
        errors.add("resident_id", _("Choose the elder this booking is for."))
        return None
    try:
        resident = db.session.get(Resident, row_id(text))
    except ValueError:  # not an id at all
        resident = None
    if resident is None:
        errors.add("resident_id", _("Choose the elder this booking is for."))
    return resident


def _service(service_id: int) -> Service:
    service = db.session.get(Service, service_id)
    if service is None:
        raise NotFound()
    return service


def _render_form(service: Service, status=200, problem=None, values=None):
    today = local_today()
    elders = elders_acted_for(current_user)
    return render_template(
        "marketplace/booking_form.html",
        service=service,
        provider=db.session.get(Provider, service.provider_id),
        elders=elders,
        elder_options=[(r.id, r.name) for r in elders],
        problem=problem,
        values=values or {},
        earliest=today.isoformat(),
        latest=(today + timedelta(days=bookings.MAX_DAYS_AHEAD)).isoformat(),
        max_days=bookings.MAX_DAYS_AHEAD,
        **page_words(),
    ), status


@bp.get("/services/<int:service_id>/book")
@roles_required(*ELDER_ROLES)
def book_form(service_id: int):
    return _render_form(_service(service_id))


@bp.post("/services/<int:service_id>/book")
@roles_required(*ELDER_ROLES)
def book(service_id: int):
    service = _service(service_id)
    form = request.form
    errors = FormErrors()
    start = parse_slot(form.get("slot_date"), form.get("slot_time"), errors)
    resident = _chosen_elder(form.get("resident_id"), errors)
    if errors:
        return _render_form(service, 422, input_problem(errors), form)
    try:
        booking = bookings.book(
            service,
            resident=resident,
            booked_by=current_user,
            slot_start=start,
            note=form.get("note"),
        )
    except DomainError as error:
        db.session.rollback()
        problem = problem_from(error, fields=("slot", "note", "resident_id"))
        return _render_form(_service(service_id), 422, problem, form)
    flash(
        _(
            "Your booking request for %(title)s has been sent. The provider will accept it "
            "or tell you why not.",
            title=booking.service.title,
        ),
        "success",
    )
    return redirect(url_for(".my_bookings"))


# --------------------------------------------------------------------------- the elder's page


def _render_my_bookings(status=200, problem=None, problem_booking=None, values=None):
    now = now_utc()
    elders = elders_acted_for(current_user)
    ids = [r.id for r in elders]
    rows = db.session.scalars(
        sa.select(Booking)
        .where(Booking.resident_id.in_(ids))
        .order_by(Booking.slot_start.desc(), Booking.id.desc())
        .limit(200)
    ).all()
    upcoming = sorted(
        (b for b in rows if b.status in bookings.HOLDING_STATUSES and b.slot_end > now),
        key=lambda b: (b.slot_start, b.id),
    )
    shown = {b.id for b in upcoming}
    earlier = [b for b in rows if b.id not in shown]
    reviewed = {
        r.booking_id: r
        for r in db.session.scalars(
            sa.select(Review).where(Review.booking_id.in_([b.id for b in rows]))
        )
    }
    return render_template(
        "marketplace/booking_list.html",
        elders=elders,
        upcoming=upcoming,
        earlier=earlier,
        reviewed=reviewed,
        can_cancel=lambda b: bookings.can_cancel_as_elder(b, now),
        notice_hours=int(bookings.ELDER_CANCEL_NOTICE / timedelta(hours=1)),
        problem=problem,
        problem_booking=problem_booking,
        values=values or {},
        **page_words(),
    ), status


@bp.get("/bookings")
@roles_required(*ELDER_ROLES)
def my_bookings():
    return _render_my_bookings()


@bp.post("/bookings/<int:booking_id>/cancel")
@roles_required(*ELDER_ROLES)
def cancel_my_booking(booking_id: int):
    booking = _my_booking(booking_id)
    try:
        bookings.cancel(booking, current_user, request.form.get("reason"))
    except DomainError as error:
        db.session.rollback()
        problem = problem_from(error, fields=("reason",))
        return _render_my_bookings(422, problem, booking_id, request.form)
    flash(_("The booking has been cancelled."), "success")
    return redirect(url_for(".my_bookings"))


@bp.post("/bookings/<int:booking_id>/review")
@roles_required(*ELDER_ROLES)
def review_booking(booking_id: int):
    booking = _my_booking(booking_id)
    try:
        reviews.review(
            booking,
            by=current_user,
            rating=whole_number_or_raw(request.form.get("rating")),
            text=request.form.get("text"),
        )
    except DomainError as error:
        db.session.rollback()
        problem = problem_from(error, fields=("rating", "text"))
        return _render_my_bookings(422, problem, booking_id, request.form)
    flash(_("Thank you for your rating."), "success")
    return redirect(url_for(".my_bookings"))


# --------------------------------------------------------------------------- the provider's page


def _render_provider_bookings(provider, status=200, problem=None, problem_booking=None):
    since = now_utc() - timedelta(days=RECENT_DAYS)

    def of(*statuses, recent=False):
        statement = sa.select(Booking).where(
            Booking.provider_id == provider.id, Booking.status.in_(statuses)
        )
        if recent:
            return db.session.scalars(
                statement.where(Booking.slot_start >= since)
                .order_by(Booking.slot_start.desc(), Booking.id.desc())
                .limit(100)
            ).all()
        return db.session.scalars(statement.order_by(Booking.slot_start, Booking.id)).all()

    return render_template(
        "marketplace/booking_provider.html",
        provider=provider,
        requested=of("requested"),
        accepted=of("accepted"),
        closed=of(*bookings.CLOSED_STATUSES, recent=True),
        recent_days=RECENT_DAYS,
        now=now_utc(),
        problem=problem,
        problem_booking=problem_booking,
        **page_words(),
    ), status


def _providers_booking(booking_id: int):
    provider = provider_of(current_user)
    booking = db.session.get(Booking, booking_id)
    if booking is None or booking.provider_id != provider.id:
        raise NotFound()
    return provider, booking


@bp.get("/provider/bookings")
@roles_required(*PROVIDER_ROLES)
def provider_bookings():
    return _render_provider_bookings(provider_of(current_user))


def _provider_step(booking_id: int, step, done_message):
    provider, booking = _providers_booking(booking_id)
    try:
        step(booking)
    except DomainError as error:
        db.session.rollback()
        problem = problem_from(error, fields=("reason",))
        return _render_provider_bookings(provider, 422, problem, booking_id)
    flash(done_message(booking), "success")
    return redirect(url_for(".provider_bookings"))


def _who(booking: Booking) -> str:
    return booking.resident.masked_name


@bp.post("/provider/bookings/<int:booking_id>/accept")
@roles_required(*PROVIDER_ROLES)
def provider_accept(booking_id: int):
    return _provider_step(
        booking_id,
        lambda b: bookings.accept(b, current_user),
        lambda b: _("Accepted: %(name)s, %(title)s.", name=_who(b), title=b.service.title),
    )


@bp.post("/provider/bookings/<int:booking_id>/decline")
@roles_required(*PROVIDER_ROLES)
def provider_decline(booking_id: int):
    return _provider_step(
        booking_id,
        lambda b: bookings.decline(b, current_user, request.form.get("reason", "")),
        lambda b: _("Declined: %(name)s, %(title)s.", name=_who(b), title=b.service.title),
    )


@bp.post("/provider/bookings/<int:booking_id>/complete")
@roles_required(*PROVIDER_ROLES)
def provider_complete(booking_id: int):
    return _provider_step(
        booking_id,
        lambda b: bookings.complete(b, current_user),
        lambda b: _("Marked done: %(name)s, %(title)s.", name=_who(b), title=b.service.title),
    )


@bp.post("/provider/bookings/<int:booking_id>/cancel")
@roles_required(*PROVIDER_ROLES)
def provider_cancel(booking_id: int):
    return _provider_step(
        booking_id,
        lambda b: bookings.cancel(b, current_user, request.form.get("reason", "")),
        lambda b: _("Cancelled: %(name)s, %(title)s.", name=_who(b), title=b.service.title),
    )
