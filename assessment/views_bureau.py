"""The bureau's case work: the assignment and review queues, and the assessment agencies.

Officers assign new applications to an agency or cancel them; approvers approve recorded
assessments or return them, and suspend, reinstate or revoke agencies. The bureau sees only
the cases of residents in its district.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user

from assessment import lifecycle, review
from assessment.agencies import set_agency_status
from assessment.forms import AGENCY_ACTIONS, AGENCY_STATUS_LABELS
from assessment.models import Agency, Assessment
from assessment.views import bp, get_case, level_label, problem_from
from eldercare import confirmation
from eldercare.accounts import BUREAU_ROLES
from eldercare.auth import ensure_in_district, roles_required, scope_to_district
from eldercare.confirmation import Question
from eldercare.db import db
from eldercare.errors import DomainError, NotFound
from eldercare.forms import row_id, whole_number
from eldercare.residents import District, Resident
from eldercare.timeutil import local_today

ASSIGNABLE = ("applied", "assigned")


def _case_in_district(case_id: int) -> Assessment:
    """A case the signed-in bureau user may see; other districts' cases look missing."""
    case = get_case(case_id)
    ensure_in_district(case.resident.district_id)
    return case


def _district_cases(condition, *order_by) -> list[Assessment]:
    """The cases meeting a condition, of residents in the signed-in user's district."""
    statement = scope_to_district(
        sa.select(Assessment)
        .join(Resident, Assessment.resident_id == Resident.id)
        .where(condition)
        .order_by(*order_by),
        Resident.district_id,
    )
    return db.session.scalars(statement).unique().all()


def _agencies_by_name() -> list[Agency]:
    return db.session.scalars(sa.select(Agency).order_by(Agency.name)).all()


# --------------------------------------------------------------------------- assignment


def _render_assign_queue(status=200, problem=None, problem_case=None):
    cases = _district_cases(Assessment.status.in_(ASSIGNABLE), Assessment.created_at, Assessment.id)
    today = local_today()
    return render_template(
        "assessment/assign_queue.html",
        cases=cases,
        agencies=[agency for agency in _agencies_by_name() if agency.is_active_on(today)],
        problem=problem,
        problem_case=problem_case,
    ), status


@bp.get("/queue/assign")
@roles_required("bureau_officer")
def assign_queue():
    return _render_assign_queue()


@bp.post("/cases/<int:case_id>/assign")
@roles_required("bureau_officer")
def assign(case_id: int):
    case = _case_in_district(case_id)
    agency = db.session.get(Agency, request.form.get("agency_id", type=row_id) or 0)
    if agency is None:
        problem = {
            "message": _("Choose an agency."),
            "fields": {"agency_id": _("Choose an agency.")},
        }
        return _render_assign_queue(422, problem, case.id)
    try:
        lifecycle.assign(case, agency)
    except DomainError as error:
        db.session.rollback()
        return _render_assign_queue(422, problem_from(error, fields=("agency_id",)), case_id)
    flash(_("The case has been assigned to %(agency)s.", agency=agency.name), "success")
    return redirect(url_for(".assign_queue"))


@bp.post("/cases/<int:case_id>/cancel")
@roles_required("bureau_officer")
def cancel(case_id: int):
    case = _case_in_district(case_id)
    try:
        lifecycle.cancel(case, actor=current_user, reason=request.form.get("reason", ""))
    except DomainError as error:
        db.session.rollback()
        return _render_assign_queue(422, problem_from(error, fields=("reason",)), case_id)
    # After the service's checks (a reason, a case still open); the question's rollback
    # undoes the cancellation until the officer confirms.
    confirmation.require(
        Question(
            title=_("Cancel the application of %(name)s?", name=case.resident.name),
            consequences=[
                _(
                    "The assessment of %(name)s will not take place, and a cancelled "
                    "application cannot be reopened: to be assessed, the elder must apply "
                    "again. The reason is kept: %(reason)s",
                    name=case.resident.name,
                    reason=(request.form.get("reason") or "").strip(),
                )
            ],
            button=_("Yes, cancel the application"),
            back=url_for(".assign_queue"),
        )
    )
    flash(_("The application has been cancelled."), "success")
    return redirect(url_for(".assign_queue"))


# --------------------------------------------------------------------------- review


def _render_review_queue(status=200, problem=None, problem_case=None, values=None):
    return render_template(
        "assessment/review_queue.html",
        cases=_district_cases(
            Assessment.status == "recorded", Assessment.recorded_at, Assessment.id
        ),
        problem=problem,
        problem_case=problem_case,
        values=values or {},
    ), status


@bp.get("/queue/review")
@roles_required("bureau_approver")
def review_queue():
    return _render_review_queue()


@bp.post("/cases/<int:case_id>/approve")
@roles_required("bureau_approver")
def approve(case_id: int):
    case = _case_in_district(case_id)
    try:
        lifecycle.approve(case, reviewer=current_user)
    except DomainError as error:
        db.session.rollback()
        return _render_review_queue(422, problem_from(error), case_id)
    flash(
        _(
            "Approved: %(name)s is assessed as %(level)s until %(day)s.",
            name=case.resident.name,
            level=level_label(case.level),
            day=case.valid_until.isoformat(),
        ),
        "success",
    )
    return redirect(url_for(".review_queue"))


@bp.post("/cases/<int:case_id>/return")
@roles_required("bureau_approver")
def return_case(case_id: int):
    case = _case_in_district(case_id)
    try:
        lifecycle.return_for_correction(
            case, reviewer=current_user, reason=request.form.get("reason", "")
        )
    except DomainError as error:
        db.session.rollback()
        problem = problem_from(error, fields=("reason",))
        return _render_review_queue(422, problem, case_id, request.form)
    flash(_("The case has been returned to the agency for correction."), "success")
    return redirect(url_for(".review_queue"))


# --------------------------------------------------------------------------- bulk review


def _render_bulk(status=200, problem=None, outcomes=None, values=None):
    """Recorded cases with every check, for one decision on the selected ones."""
    agency_id = whole_number(request.values.get("agency_id"))
    condition = Assessment.status == "recorded"
    if agency_id is not None:
        condition = sa.and_(condition, Assessment.agency_id == agency_id)
    today = local_today()
    cases = _district_cases(condition, Assessment.recorded_at, Assessment.id)
    rows = [(case, review.checks(case, today=today)) for case in cases]
    by_id = {o.assessment_id: o for o in outcomes or ()}
    decided = db.session.scalars(sa.select(Assessment).where(Assessment.id.in_(by_id))).all()
    return render_template(
        "assessment/bulk_review.html",
        rows=rows,
        check_labels=review.CHECK_LABELS,
        agencies=_agencies_by_name(),
        agency_id=agency_id,
        outcomes=outcomes,
        decided={case.id: case for case in decided},
        problem=problem,
        values=values or {},
        most=review.MAX_CASES_PER_DECISION,
    ), status


@bp.get("/queue/bulk")
@roles_required("bureau_approver")
def bulk_review():
    return _render_bulk()


@bp.post("/queue/bulk")
@roles_required("bureau_approver")
def bulk_decide():
    form = request.form
    ids = [whole_number(value) for value in form.getlist("case_id")]
    try:
        outcomes = review.decide_many(
            ids,
            form.get("decision", ""),
            reviewer=current_user,
            reason=form.get("reason"),
            today=local_today(),
        )
    except DomainError as error:
        db.session.rollback()
        problem = problem_from(error, fields=("assessment_ids", "decision", "reason"))
        return _render_bulk(422, problem, values=form)
    done = sum(o.outcome != "refused" for o in outcomes)
    flash(
        _(
            "%(done)s of %(asked)s cases decided; the others are listed with the reason.",
            done=done,
            asked=len(outcomes),
        ),
        "success" if done == len(outcomes) else "info",
    )
    return _render_bulk(outcomes=outcomes)


# --------------------------------------------------------------------------- agencies


def render_agencies(status=200, problem=None, problem_agency=None, form=None):
    """The agencies page; ``problem_agency`` is an agency id, or "new" for the new-agency form."""
    districts = db.session.scalars(sa.select(District).order_by(District.code)).all()
    return render_template(
        "assessment/agencies.html",
        agencies=_agencies_by_name(),
        actions=AGENCY_ACTIONS,
        problem=problem,
        problem_agency=problem_agency,
        districts=districts,
        form=form or {},
    ), status


@bp.get("/agencies")
@roles_required(*BUREAU_ROLES)
def agencies():
    return render_agencies()


def _agency_question(agency: Agency) -> Question | None:
    """Suspending or revoking stops an agency's work at once; reinstating takes nothing."""
    reason = (request.form.get("reason") or "").strip()
    if agency.status == "suspended":
        title = _("Suspend %(agency)s?", agency=agency.name)
        words = _(
            "From now %(agency)s can be given no case and its assessors can record no "
            "assessment, until the bureau reinstates it.",
            agency=agency.name,
        )
    elif agency.status == "revoked":
        title = _("Revoke the certification of %(agency)s?", agency=agency.name)
        words = _(
            "%(agency)s loses its certification for good: it can be given no case and its "
            "assessors can record no assessment. Only a new certification lets it work again.",
            agency=agency.name,
        )
    else:
        return None
    return Question(
        title=title,
        consequences=[words, _("The reason is kept: %(reason)s", reason=reason)],
        button=_("Yes, record the decision"),
        back=url_for(".agencies") + f"#agency-{agency.id}",
    )


@bp.post("/agencies/<int:agency_id>/status")
@roles_required("bureau_approver")
def agency_status(agency_id: int):
    agency = db.session.get(Agency, agency_id)
    if agency is None:
        raise NotFound()
    try:
        set_agency_status(agency, request.form.get("status", ""), request.form.get("reason", ""))
    except DomainError as error:
        db.session.rollback()
        problem = problem_from(error, fields=("status", "reason"))
        return render_agencies(422, problem, agency_id)
    question = _agency_question(agency)
    if question:  # after the service's checks; the question's rollback undoes the change
        confirmation.require(question)
    flash(
        _(
            "%(agency)s is now: %(status)s.",
            agency=agency.name,
            status=AGENCY_STATUS_LABELS[agency.status],
        ),
        "success",
    )
    return redirect(url_for(".agencies"))
