"""Complaints: filed by elders and families, handled by the bureau; providers' credit scores.

- ``complaint_new`` (GET/POST /marketplace/complaints/new?provider_id=&booking_id=): an elder
  or family agent complains about a provider, optionally naming one of their bookings;
- ``my_complaints`` (GET /marketplace/complaints): what they filed and how it was resolved;
- ``bureau_complaints`` (GET /marketplace/bureau/complaints): the bureau's queue by status;
  officers open investigations and close them (upheld / dismissed) with a resolution;
- ``credit_list`` (GET /marketplace/bureau/credit): providers' credit scores, those below the
  threshold marked "suspension recommended" with a link to the certification queue.

Bureau staff of one district see the complaints and scores of that district's providers only.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from werkzeug.routing import BuildError

from eldercare.accounts import BUREAU_ROLES, ELDER_ROLES, User, elders_acted_for
from eldercare.auth import ensure_in_district, roles_required, scope_to_district
from eldercare.db import db
from eldercare.errors import DomainError, NotFound
from eldercare.forms import problem_from, row_id
from eldercare.timeutil import format_local, local_today, now_utc
from marketplace import complaints, credit
from marketplace.models import Booking, Complaint, Provider
from marketplace.views import bp
from marketplace.views_bookings import page_words

CLOSED_SHOWN_DAYS = 90  # how far back the bureau's queue shows closed complaints
CERTIFICATION_QUEUE_PATH = "/marketplace/bureau/providers"

COMPLAINT_STATUS_LABELS = {
    "received": _l("Received, waiting for the bureau"),
    "investigating": _l("Being investigated"),
    "upheld": _l("Upheld"),
    "dismissed": _l("Dismissed"),
}


def _words() -> dict:
    return {**page_words(), "COMPLAINT_STATUS_LABELS": COMPLAINT_STATUS_LABELS}


def certification_queue_url() -> str:
    """The certification queue, once its page exists under that endpoint; its path until then."""
    try:
        return url_for("marketplace.certification_queue")
    except BuildError:
        return CERTIFICATION_QUEUE_PATH


# --------------------------------------------------------------------------- filing


def _provider(provider_id) -> Provider:
    provider = db.session.get(Provider, provider_id) if provider_id else None
    if provider is None:
        raise NotFound()
    return provider


def _bookings_with(provider: Provider) -> list[Booking]:
    """The bookings of the account's elders with this provider, newest first."""
    ids = [r.id for r in elders_acted_for(current_user)]
    return db.session.scalars(
        sa.select(Booking)
        .where(Booking.provider_id == provider.id, Booking.resident_id.in_(ids))
        .order_by(Booking.slot_start.desc(), Booking.id.desc())
        .limit(50)
    ).all()


def _render_new(provider: Provider, status=200, problem=None, values=None):
    own = _bookings_with(provider)
    options = [(b.id, f"{b.service.title} · {format_local(b.slot_start)}") for b in own]
    return render_template(
        "marketplace/complaint_new.html",
        provider=provider,
        booking_options=options,
        problem=problem,
        values=values or {},
        max_length=complaints.MAX_TEXT_LENGTH,
        **_words(),
    ), status


@bp.route("/complaints/new", methods=["GET", "POST"])
@roles_required(*ELDER_ROLES)
def complaint_new():
    source = request.form if request.method == "POST" else request.args
    provider = _provider(source.get("provider_id", type=row_id))
    if request.method == "GET":
        return _render_new(provider, values={"booking_id": source.get("booking_id", "")})
    booking = None
    booking_id = request.form.get("booking_id", type=row_id)
    if booking_id:
        booking = db.session.get(Booking, booking_id)
        if booking is None:
            raise NotFound()
    try:
        complaints.file_complaint(
            provider, by=current_user, text=request.form.get("text", ""), booking=booking
        )
    except DomainError as error:
        db.session.rollback()
        problem = problem_from(error, fields=("text", "booking_id"))
        return _render_new(_provider(provider.id), 422, problem, request.form)
    flash(
        _("Your complaint has been received. The civil affairs bureau will look into it."),
        "success",
    )
    return redirect(url_for(".my_complaints"))


@bp.get("/complaints")
@roles_required(*ELDER_ROLES)
def my_complaints():
    rows = db.session.scalars(
        sa.select(Complaint)
        .where(Complaint.filed_by_user_id == current_user.id)
        .order_by(Complaint.created_at.desc(), Complaint.id.desc())
    ).all()
    return render_template("marketplace/complaint_list.html", complaints=rows, **_words())


# --------------------------------------------------------------------------- the bureau


def _in_district(statement):
    return scope_to_district(
        statement.join(Provider, Complaint.provider_id == Provider.id), Provider.district_id
    )


def _render_queue(status=200, problem=None, problem_complaint=None, values=None):
    def of(*statuses, since=None):
        statement = _in_district(sa.select(Complaint).where(Complaint.status.in_(statuses)))
        if since is not None:
            statement = statement.where(Complaint.closed_at >= since).order_by(
                Complaint.closed_at.desc(), Complaint.id.desc()
            )
        else:
            statement = statement.order_by(Complaint.created_at, Complaint.id)
        return db.session.scalars(statement).all()

    received, investigating = of("received"), of("investigating")
    closed = of(*complaints.DECISIONS, since=now_utc() - timedelta(days=CLOSED_SHOWN_DAYS))
    shown = received + investigating + closed
    filers = {
        u.id: u
        for u in db.session.scalars(
            sa.select(User).where(User.id.in_(sorted({c.filed_by_user_id for c in shown})))
        )
    }
    booked = {
        b.id: b
        for b in db.session.scalars(
            sa.select(Booking).where(
                Booking.id.in_(sorted({c.booking_id for c in shown if c.booking_id}))
            )
        )
    }
    below = credit.providers_below_threshold(local_today(), district_id=current_user.district_id)
    return render_template(
        "marketplace/complaint_queue.html",
        received=received,
        investigating=investigating,
        closed=closed,
        closed_days=CLOSED_SHOWN_DAYS,
        filers=filers,
        booked=booked,
        below=below,
        can_handle=current_user.has_role(*complaints.HANDLER_ROLES),
        problem=problem,
        problem_complaint=problem_complaint,
        values=values or {},
        **_words(),
    ), status


def _complaint(complaint_id: int) -> Complaint:
    complaint = db.session.get(Complaint, complaint_id)
    if complaint is None:
        raise NotFound()
    ensure_in_district(complaint.provider.district_id)
    return complaint


@bp.get("/bureau/complaints")
@roles_required(*BUREAU_ROLES)
def bureau_complaints():
    return _render_queue()


@bp.post("/bureau/complaints/<int:complaint_id>/investigate")
@roles_required(*complaints.HANDLER_ROLES)
def complaint_investigate(complaint_id: int):
    complaint = _complaint(complaint_id)
    try:
        complaints.investigate(complaint, by=current_user)
    except DomainError as error:
        db.session.rollback()
        return _render_queue(422, problem_from(error), complaint_id)
    flash(_("Complaint %(id)s is now under investigation.", id=complaint_id), "success")
    return redirect(url_for(".bureau_complaints"))


@bp.post("/bureau/complaints/<int:complaint_id>/close")
@roles_required(*complaints.HANDLER_ROLES)
def complaint_close(complaint_id: int):
    complaint = _complaint(complaint_id)
    decision = request.form.get("decision", "")
    try:
        complaints.close(
            complaint,
            by=current_user,
            decision=decision,
            resolution=request.form.get("resolution", ""),
        )
    except DomainError as error:
        db.session.rollback()
        problem = problem_from(error, fields=("decision", "resolution"))
        return _render_queue(422, problem, complaint_id, request.form)
    if decision == "upheld":
        flash(
            _("Complaint %(id)s is upheld; the provider has been told.", id=complaint_id), "success"
        )
    else:
        flash(_("Complaint %(id)s is dismissed.", id=complaint_id), "success")
    return redirect(url_for(".bureau_complaints"))


@bp.get("/bureau/credit")
@roles_required(*BUREAU_ROLES)
def credit_list():
    today = local_today()
    statement = scope_to_district(
        sa.select(Provider).where(Provider.status == "active").order_by(Provider.name),
        Provider.district_id,
    )
    scores = sorted(
        credit.credit_scores(db.session.scalars(statement), today),
        key=lambda s: (s.score, s.provider.name, s.provider.id),
    )
    return render_template(
        "marketplace/credit_list.html",
        below=[s for s in scores if s.below_threshold],
        scores=scores,
        threshold=credit.THRESHOLD,
        today=today,
        certification_queue=certification_queue_url(),
        **_words(),
    )
