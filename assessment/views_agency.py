"""The assessment agency's pages: its worklist, and arranging the visit of a case.

Assessors and agency administrators see only their own agency's cases; the tablet form on
which a visit is recorded is in ``views_record``.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user

from assessment import lifecycle
from assessment.agencies import assessor_for_user
from assessment.forms import parse_local_datetime
from assessment.models import Agency, AgencyAdmin, Assessment
from assessment.views import bp, get_case, problem_from
from eldercare.auth import roles_required
from eldercare.db import db
from eldercare.errors import DomainError, NotFound
from eldercare.forms import FormErrors, input_problem

AGENCY_ROLES = ("assessor", "agency_admin")
WORK_STATUSES = ("assigned", "scheduled", "returned")  # what the agency still has to do
RECORDABLE = ("scheduled", "returned")  # when the tablet form is offered (record() decides)


def my_agency_id() -> int | None:
    """The agency of the signed-in assessor or agency administrator."""
    assessor = assessor_for_user(current_user)
    if assessor is not None:
        return assessor.agency_id
    admin = db.session.get(AgencyAdmin, current_user.id)
    return admin.agency_id if admin is not None else None


def agency_case(case_id: int, agency_id: int | None) -> Assessment:
    """A case of the given agency; any other case looks missing."""
    case = get_case(case_id)
    if agency_id is None or case.agency_id != agency_id:
        raise NotFound()
    return case


def _render_worklist(
    status: int = 200, problem: dict | None = None, problem_case=None, values=None
):
    agency_id = my_agency_id()
    agency = db.session.get(Agency, agency_id) if agency_id is not None else None
    cases = []
    if agency is not None:
        cases = db.session.scalars(
            sa.select(Assessment)
            .where(Assessment.agency_id == agency.id, Assessment.status.in_(WORK_STATUSES))
            .order_by(Assessment.scheduled_for.is_(None), Assessment.scheduled_for, Assessment.id)
        ).all()
    return render_template(
        "assessment/worklist.html",
        agency=agency,
        cases=cases,
        can_record=assessor_for_user(current_user) is not None,
        recordable=RECORDABLE,
        problem=problem,
        problem_case=problem_case,
        values=values or {},
    ), status


@bp.get("/work")
@roles_required(*AGENCY_ROLES)
def worklist():
    return _render_worklist()


@bp.post("/cases/<int:case_id>/schedule")
@roles_required(*AGENCY_ROLES)
def schedule(case_id: int):
    case = agency_case(case_id, my_agency_id())
    errors = FormErrors()
    when = parse_local_datetime(request.form.get("date"), request.form.get("time"), errors)
    if errors:
        return _render_worklist(422, input_problem(errors), case.id, request.form)
    try:
        lifecycle.schedule(case, when, actor=current_user)
    except DomainError as error:
        db.session.rollback()
        problem = problem_from(error)
        if "scheduled_for" in error.details:  # the service judges the date and time together
            problem["fields"]["date"] = str(error.details["scheduled_for"])
        return _render_worklist(422, problem, case_id, request.form)
    flash(_("The visit has been arranged."), "success")
    return redirect(url_for(".worklist"))
