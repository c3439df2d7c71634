"""The provider's own pages: the application, the dashboard (status, documents, profile) and
the staff page.

Every route finds the provider from the signed-in account (``providers.provider_of``), never
from the URL: an id of another provider's document or staff member answers 404. A view only
reads the form, calls the service, and on a ``DomainError`` rolls back and shows the page
again (422) with the service's messages next to the fields they concern.
"""

from __future__ import annotations

import io

import sqlalchemy as sa
from flask import (
    flash,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask_babel import gettext as _
from flask_login import current_user
from werkzeug.routing import BuildError

from eldercare import confirmation
from eldercare.accounts import MIN_PASSWORD_LENGTH, User
from eldercare.auth import ensure_in_district, roles_required
from eldercare.confirmation import Question
from eldercare.db import db
from eldercare.errors import DomainError, NotFound
from eldercare.forms import FormErrors, input_problem, parse_date, problem_from
from eldercare.residents import District
from eldercare.timeutil import local_today
from marketplace import documents, providers
from marketplace import staff as staff_service
from marketplace.documents import DOCUMENT_KIND_LABELS
from marketplace.forms import (
    PROVIDER_STATUS_LABELS,
    PROVIDER_TYPE_LABELS,
    WEEKDAY_LABELS,
    district_by_id,
    districts_by_ids,
    opening_hours_values,
    parse_coordinate,
    parse_int,
    parse_opening_hours,
)
from marketplace.models import PROVIDER_TYPES, Provider, ProviderDocument
from marketplace.providers import WEEKDAYS
from marketplace.views import bp

EXPIRY_WARNING_DAYS = 30
BUREAU_READERS = ("bureau_officer", "bureau_approver", "auditor")
MULTIPART_SLACK = 64 * 1024  # the form's other fields and the multipart envelope

APPLY_FIELDS = (
    "name",
    "credit_code",
    "type",
    "district_id",
    "address",
    "latitude",
    "longitude",
    "service_districts",
    "contact_name",
    "contact_phone",
    "bank_account_name",
    "bank_name",
    "bank_account_number",
    "beds_total",
    "opening_hours",
    *(f"hours_{day}" for day in WEEKDAYS),
)
PROFILE_FIELDS = (
    "contact_name",
    "contact_phone",
    "bank_account_name",
    "bank_name",
    "bank_account_number",
    "opening_hours",
    *(f"hours_{day}" for day in WEEKDAYS),
)
BANK_FIELDS = ("bank_account_name", "bank_name", "bank_account_number")
# The opening-hours rows report under hours_<day>; the summary's link goes to the day's first input.
HOURS_ANCHORS = {f"hours_{day}": f"hours_{day}_from" for day in WEEKDAYS}
STAFF_FIELDS = (
    "username",
    "display_name",
    "password",
    "certificate_number",
    "certificate_valid_until",
)


@bp.context_processor
def _page_helpers():
    return {
        "PROVIDER_TYPE_LABELS": PROVIDER_TYPE_LABELS,
        "PROVIDER_STATUS_LABELS": PROVIDER_STATUS_LABELS,
        "DOCUMENT_KIND_LABELS": DOCUMENT_KIND_LABELS,
        "WEEKDAY_LABELS": WEEKDAY_LABELS,
        "WEEKDAYS": WEEKDAYS,
        "EXPIRY_WARNING_DAYS": EXPIRY_WARNING_DAYS,
        "today": local_today(),
    }


@bp.url_value_preprocessor
def _limit_upload_size(endpoint, _values):
    # Runs before the app's CSRF check reads (and spools) the body. Up to twice the limit
    # still reaches the view, which answers with the limit in words; beyond that, 413.
    if endpoint == "marketplace.upload_document":
        request.max_content_length = 2 * documents.max_bytes() + MULTIPART_SLACK


def _districts() -> list[District]:
    return list(db.session.scalars(sa.select(District).order_by(District.code)))


# --------------------------------------------------------------------------- application


def _render_apply(status=200, problem=None, values=None, service_district_ids=()):
    return render_template(
        "marketplace/provider_apply.html",
        problem=problem,
        values=values or {},
        service_district_ids=set(service_district_ids),
        hours_anchors=HOURS_ANCHORS,
        districts=_districts(),
        types=[(code, PROVIDER_TYPE_LABELS[code]) for code in PROVIDER_TYPES],
    ), status


@bp.route("/apply", methods=["GET", "POST"])
@roles_required("provider_admin")
def apply():
    if providers.staff_record(current_user) is not None:
        flash(_("Your account already works for a provider."), "info")
        return redirect(url_for(".dashboard"))
    if request.method == "GET":
        return _render_apply()

    form = request.form
    ticked = form.getlist("service_districts")
    errors = FormErrors()
    latitude = parse_coordinate(form.get("latitude"), "latitude", errors)
    longitude = parse_coordinate(form.get("longitude"), "longitude", errors)
    beds = parse_int(
        form.get("beds_total"), "beds_total", errors, _("Enter the number of beds as a number.")
    )
    hours = parse_opening_hours(form, errors)
    try:
        provider = providers.apply_provider(
            applicant=current_user,
            name=form.get("name", ""),
            credit_code=form.get("credit_code", ""),
            type=form.get("type", ""),
            district=district_by_id(form.get("district_id")),
            address=form.get("address", ""),
            latitude=latitude,
            longitude=longitude,
            service_districts=districts_by_ids(ticked),
            contact_name=form.get("contact_name", ""),
            contact_phone=form.get("contact_phone", ""),
            bank_account_name=form.get("bank_account_name", ""),
            bank_name=form.get("bank_name", ""),
            bank_account_number=form.get("bank_account_number", ""),
            opening_hours=hours,
            beds_total=beds,
        )
    except DomainError as error:
        db.session.rollback()
        problem = problem_from(error, APPLY_FIELDS, extra=errors)
        return _render_apply(422, problem, form, ticked)
    if errors:  # the service accepted what it was given, but part of the form was unreadable
        db.session.rollback()
        return _render_apply(422, input_problem(errors), form, ticked)
    flash(
        _(
            "Your application for %(name)s has been received. Upload your documents below; "
            "the bureau will then decide.",
            name=provider.name,
        ),
        "success",
    )
    return redirect(url_for(".dashboard"))


# --------------------------------------------------------------------------- dashboard


def _admin_provider() -> Provider:
    return providers.provider_of(current_user, admin=True)


def _render_dashboard(status=200, problem=None, target=None, values=None):
    record = providers.staff_record(current_user)
    if record is None:
        providers.provider_of(current_user)  # 403 with the reason
    provider = db.session.get(Provider, record.provider_id)
    docs = documents.documents_of(provider)
    return render_template(
        "marketplace/provider_dashboard.html",
        provider=provider,
        is_admin=record.is_admin,
        documents=docs,
        missing=documents.missing_kinds(provider, docs),
        problem=problem,
        target=target,
        values=values if values is not None else _profile_values(provider),
        max_megabytes=f"{documents.max_bytes() / 2**20:g}",
        payee_page=_payee_page(),
        kinds=[(k, DOCUMENT_KIND_LABELS[k]) for k in DOCUMENT_KIND_LABELS],
    ), status


def _payee_page() -> str | None:
    """The payment account page, where a certified provider asks to change its account
    (settlement's; marketplace does not import it, so found by endpoint name)."""
    try:
        return url_for("settlement.payee_account")
    except BuildError:
        return None


def _profile_values(provider: Provider) -> dict:
    values = {
        key: getattr(provider, key)
        for key in (
            "contact_name",
            "contact_phone",
            "bank_account_name",
            "bank_name",
            "bank_account_number",
        )
    }
    values.update(opening_hours_values(provider.opening_hours))
    return values


@bp.get("/provider")
@roles_required("provider_admin", "provider_staff")
def dashboard():
    if providers.staff_record(current_user) is None and current_user.has_role("provider_admin"):
        return redirect(url_for(".apply"))
    return _render_dashboard()


@bp.post("/provider/profile")
@roles_required("provider_admin")
def provider_profile():
    provider = _admin_provider()
    form = request.form
    errors = FormErrors()
    hours = parse_opening_hours(form, errors)
    if errors:
        return _render_dashboard(422, input_problem(errors), "profile", form)
    try:
        providers.update_profile(
            provider,
            contact_name=form.get("contact_name", ""),
            contact_phone=form.get("contact_phone", ""),
            opening_hours=hours,
            # The form has the bank fields only before certification; after it the account
            # changes on the payment account page, with the bureau's approval.
            **{key: form.get(key, "") for key in BANK_FIELDS if key in form},
        )
    except DomainError as error:
        db.session.rollback()
        # A certified provider's form has no bank fields: their message goes above the form.
        fields = PROFILE_FIELDS
        if provider.status != "applied":
            fields = tuple(f for f in PROFILE_FIELDS if f not in BANK_FIELDS)
        return _render_dashboard(422, problem_from(error, fields), "profile", form)
    flash(_("Your details have been saved."), "success")
    return redirect(url_for(".dashboard") + "#profile")


@bp.post("/provider/documents")
@roles_required("provider_admin")
def upload_document():
    provider = _admin_provider()
    upload = request.files.get("file")
    data = upload.stream.read(documents.max_bytes() + 1) if upload else b""
    try:
        document = documents.store_document(
            provider,
            kind=request.form.get("kind", ""),
            filename=upload.filename if upload else None,
            data=data,
            actor=current_user,
        )
    except DomainError as error:
        db.session.rollback()
        problem = problem_from(error, ("kind", "file"))
        return _render_dashboard(422, problem, "documents", None)
    flash(
        _("%(name)s has been uploaded.", name=document.original_filename),
        "success",
    )
    return redirect(url_for(".dashboard") + "#documents")


@bp.get("/documents/<int:document_id>")
@roles_required("provider_admin", *BUREAU_READERS)
def download_document(document_id: int):
    """The provider's own administrators and the bureau; anyone else's id looks missing."""
    document = db.session.get(ProviderDocument, document_id)
    if document is None:
        raise NotFound()
    provider = db.session.get(Provider, document.provider_id)
    if current_user.has_role(*BUREAU_READERS):
        ensure_in_district(provider.district_id)
    else:
        record = providers.staff_record(current_user)
        if record is None or not record.is_admin or record.provider_id != provider.id:
            raise NotFound()
    data = documents.read_document(document)
    response = send_file(
        io.BytesIO(data),
        mimetype=document.content_type,
        as_attachment=True,
        download_name=document.original_filename,
        max_age=0,
    )
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response.headers["Cache-Control"] = "private, no-store"
    return response


# --------------------------------------------------------------------------- staff


def _render_staff(status=200, problem=None, target=None, values=None):
    provider = _admin_provider()
    return render_template(
        "marketplace/provider_staff.html",
        provider=provider,
        members=staff_service.staff_of(provider),
        problem=problem,
        target=target,
        values=values or {},
        min_password=MIN_PASSWORD_LENGTH,
    ), status


@bp.get("/provider/staff")
@roles_required("provider_admin")
def provider_staff():
    return _render_staff()


@bp.post("/provider/staff")
@roles_required("provider_admin")
def invite_staff():
    provider = _admin_provider()
    form = request.form
    errors = FormErrors()
    valid_until = parse_date(
        form.get("certificate_valid_until"), "certificate_valid_until", errors, required=False
    )
    if errors:
        return _render_staff(422, input_problem(errors), "new", form)
    try:
        member = staff_service.invite_staff(
            provider,
            username=form.get("username", ""),
            display_name=form.get("display_name", ""),
            password=form.get("password", ""),
            is_admin=form.get("role") == "provider_admin",
            certificate_number=form.get("certificate_number"),
            certificate_valid_until=valid_until,
        )
    except DomainError as error:
        db.session.rollback()
        return _render_staff(422, problem_from(error, STAFF_FIELDS), "new", form)
    flash(
        _(
            "%(name)s can now sign in as %(username)s.",
            name=member.user.display_name,
            username=member.user.username,
        ),
        "success",
    )
    return redirect(url_for(".provider_staff"))


@bp.post("/provider/staff/<int:staff_id>/certificate")
@roles_required("provider_admin")
def staff_certificate(staff_id: int):
    member = staff_service.staff_member(_admin_provider(), staff_id)
    form = request.form
    errors = FormErrors()
    valid_until = parse_date(
        form.get("certificate_valid_until"), "certificate_valid_until", errors, required=False
    )
    if errors:
        return _render_staff(422, input_problem(errors), member.id, form)
    try:
        staff_service.set_certificate(
            member, number=form.get("certificate_number"), valid_until=valid_until
        )
    except DomainError as error:
        db.session.rollback()
        return _render_staff(422, problem_from(error, STAFF_FIELDS), member.id, form)
    name = db.session.get(User, member.user_id).display_name
    flash(_("The certificate of %(name)s has been saved.", name=name), "success")
    return redirect(url_for(".provider_staff") + f"#staff-{member.id}")


@bp.post("/provider/staff/<int:staff_id>/deactivate")
@roles_required("provider_admin")
def deactivate_staff(staff_id: int):
    member = staff_service.staff_member(_admin_provider(), staff_id)
    try:
        staff_service.deactivate_staff(member, actor=current_user)
    except DomainError as error:
        db.session.rollback()
        return _render_staff(422, problem_from(error), member.id)
    name = db.session.get(User, member.user_id).display_name
    # After the service's checks (never oneself, never the last administrator); the
    # question's rollback undoes it until the administrator confirms.
    confirmation.require(
        Question(
            title=_("Deactivate %(name)s?", name=name),
            consequences=[
                _(
                    "%(name)s can no longer scan vouchers or take bookings for your provider, "
                    "from now on. Their earlier work stays on record.",
                    name=name,
                )
            ],
            button=_("Yes, deactivate %(name)s", name=name),
            back=url_for(".provider_staff") + f"#staff-{member.id}",
        )
    )
    flash(_("%(name)s no longer works for your provider here.", name=name), "success")
    return redirect(url_for(".provider_staff"))
