"""Certifying agencies (the bureau) and registering assessors (the agency's administrator)."""

from __future__ import annotations

import sqlalchemy as sa
from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user

from assessment.agencies import (
    create_agency,
    register_assessor,
    renew_assessor_certificate,
    renew_certification,
)
from assessment.models import Agency, AgencyAdmin, Assessor
from assessment.views import bp, problem_from
from assessment.views_bureau import render_agencies
from eldercare.auth import roles_required
from eldercare.db import db
from eldercare.errors import DomainError, NotFound, PermissionDenied
from eldercare.forms import FormErrors, input_problem, parse_date, row_id

AGENCY_FIELDS = ("name", "licence_number", "credit_code", "certified_until", "district_id")
ASSESSOR_FIELDS = ("username", "display_name", "password", "certificate_number", "valid_until")


@bp.post("/agencies")
@roles_required("bureau_approver")
def certify_agency():
    form = request.form
    errors = FormErrors()
    until = parse_date(form.get("certified_until"), "certified_until", errors)
    if errors:
        return render_agencies(422, input_problem(errors), "new", form)
    try:
        agency = create_agency(
            name=form.get("name", ""),
            licence_number=form.get("licence_number", ""),
            credit_code=form.get("credit_code"),
            certified_until=until,
            district_id=form.get("district_id", type=row_id) or None,
        )
    except DomainError as error:
        db.session.rollback()
        return render_agencies(422, problem_from(error, fields=AGENCY_FIELDS), "new", form)
    flash(
        _("%(agency)s is certified until %(day)s.", agency=agency.name, day=until.isoformat()),
        "success",
    )
    return redirect(url_for(".agencies"))


@bp.post("/agencies/<int:agency_id>/renew")
@roles_required("bureau_approver")
def renew_agency(agency_id: int):
    agency = db.session.get(Agency, agency_id)
    if agency is None:
        raise NotFound()
    errors = FormErrors()
    until = parse_date(request.form.get("certified_until"), "certified_until", errors)
    if errors:
        return render_agencies(422, input_problem(errors), agency.id)
    try:
        renew_certification(agency, until, request.form.get("reason", ""))
    except DomainError as error:
        db.session.rollback()
        return render_agencies(
            422, problem_from(error, fields=("certified_until", "reason")), agency.id
        )
    flash(
        _("%(agency)s is certified until %(day)s.", agency=agency.name, day=until.isoformat()),
        "success",
    )
    return redirect(url_for(".agencies"))


def _administered_agency() -> Agency:
    link = db.session.get(AgencyAdmin, current_user.id)
    if link is None:
        raise PermissionDenied(_("Your account is not linked to an assessment agency."))
    return db.session.get(Agency, link.agency_id)


def _render_assessors(status=200, problem=None, target=None, form=None):
    agency = _administered_agency()
    assessors = db.session.scalars(
        sa.select(Assessor).where(Assessor.agency_id == agency.id).order_by(Assessor.name)
    ).all()
    return render_template(
        "assessment/assessors.html",
        agency=agency,
        assessors=assessors,
        problem=problem,
        target=target,
        form=form or {},
    ), status


@bp.get("/assessors")
@roles_required("agency_admin")
def assessors():
    return _render_assessors()


@bp.post("/assessors")
@roles_required("agency_admin")
def add_assessor_account():
    agency = _administered_agency()
    form = request.form
    errors = FormErrors()
    valid_until = parse_date(form.get("valid_until"), "valid_until", errors)
    if errors:
        return _render_assessors(422, input_problem(errors), "new", form)
    try:
        assessor = register_assessor(
            agency,
            username=form.get("username", ""),
            display_name=form.get("display_name", ""),
            password=form.get("password", ""),
            certificate_number=form.get("certificate_number"),
            valid_until=valid_until,
        )
    except DomainError as error:
        db.session.rollback()
        return _render_assessors(422, problem_from(error, fields=ASSESSOR_FIELDS), "new", form)
    flash(
        _("%(name)s can now sign in as an assessor of your agency.", name=assessor.name), "success"
    )
    return redirect(url_for(".assessors"))


@bp.post("/assessors/<int:assessor_id>/certificate")
@roles_required("agency_admin")
def renew_certificate(assessor_id: int):
    agency = _administered_agency()
    assessor = db.session.get(Assessor, assessor_id)
    if assessor is None or assessor.agency_id != agency.id:
        raise NotFound()
    errors = FormErrors()
    valid_until = parse_date(request.form.get("valid_until"), "valid_until", errors)
    if errors:
        return _render_assessors(422, input_problem(errors), assessor.id)
    renew_assessor_certificate(assessor, valid_until)
    flash(
        _(
            "The certificate of %(name)s is valid until %(day)s.",
            name=assessor.name,
            day=valid_until.isoformat(),
        ),
        "success",
    )
    return redirect(url_for(".assessors"))
