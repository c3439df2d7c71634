"""The bureau's pages for one resident: finding them, applying on their behalf, and their
eligibility (with recording a death and exclusions such as a stay in hospital).

A resident outside the signed-in user's district looks missing.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from assessment import lifecycle
from assessment.eligibility import (
    EXCLUSION_LABELS,
    add_exclusion,
    end_exclusion,
    record_death,
    record_move_out,
)
from assessment.forms import TYPE_LABELS
from assessment.models import EXCLUSION_KINDS, Assessment, Exclusion
from assessment.views import bp, disputed_assessment, eligibility_and_basis, problem_from
from eldercare import confirmation
from eldercare.accounts import BUREAU_ROLES
from eldercare.auth import ensure_in_district, roles_required, scope_to_district
from eldercare.confirmation import Question
from eldercare.db import db
from eldercare.errors import DomainError, NotFound
from eldercare.forms import FormErrors, input_problem, parse_date, row_id
from eldercare.residents import Resident
from eldercare.timeutil import local_today

NO_SUCH_RESIDENT = _l("No resident with this ID number is in the register you can see.")
# Lookups by a full ID number are POSTed: an address lands in access logs and histories.
ID_NUMBER_NOT_IN_LINKS = _l(
    "ID numbers are not looked up from a link or address, to keep them out of logs and "
    "browser history. Type the number into the form below."
)


def _resident_in_district(resident_id: int | None) -> Resident:
    resident = db.session.get(Resident, resident_id) if resident_id else None
    if resident is None:
        raise NotFound()
    ensure_in_district(resident.district_id)
    return resident


def _resident_by_id_number(id_number: str | None) -> Resident | None:
    number = (id_number or "").strip().upper()
    if not number:
        return None
    statement = scope_to_district(
        sa.select(Resident).where(Resident.id_number_is(number)), Resident.district_id
    )
    return db.session.scalar(statement)


# --------------------------------------------------------------------------- find


@bp.get("/residents/find")
@roles_required(*BUREAU_ROLES)
def find_resident_from_link():
    """An old link or bookmark carrying ?id_number=: refused, never looked up, so that no
    lookup by a full ID number works from an address (access logs, browser history)."""
    if "id_number" not in request.args:
        return redirect(url_for(".index"))
    return render_template(
        "assessment/index.html", lookup_error=str(ID_NUMBER_NOT_IN_LINKS), id_number=""
    ), 400


@bp.post("/residents/find")
@roles_required(*BUREAU_ROLES)
def find_resident():
    """The ID number comes in the form's body; the answer redirects to the resident's page
    by the register's own row id, so the number appears in no address."""
    id_number = request.form.get("id_number", "")
    resident = _resident_by_id_number(id_number)
    if resident is None:
        return render_template(
            "assessment/index.html",
            lookup_error=str(NO_SUCH_RESIDENT),
            id_number=id_number.strip(),
        ), 404
    return redirect(url_for(".resident", resident_id=resident.id))


# --------------------------------------------------------------------------- apply


def _apply_page(resident, *, status=200, problem=None, values=None, lookup_error=None):
    approved = []
    if resident is not None:
        approved = db.session.scalars(
            sa.select(Assessment)
            .where(Assessment.resident_id == resident.id, Assessment.status == "approved")
            .order_by(Assessment.assessed_on.desc(), Assessment.id.desc())
        ).all()
    return render_template(
        "assessment/apply.html",
        resident=resident,
        approved=approved,
        problem=problem,
        values=values or {},
        lookup_error=lookup_error,
        types=TYPE_LABELS,
    ), status


@bp.get("/apply")
@roles_required("bureau_officer")
def apply_for_elder():
    if "id_number" in request.args:  # see find_resident_from_link
        return _apply_page(None, status=400, lookup_error=str(ID_NUMBER_NOT_IN_LINKS))
    resident_id = request.args.get("resident_id", type=row_id)
    if resident_id:
        return _apply_page(_resident_in_district(resident_id))
    return _apply_page(None)


@bp.post("/apply/find")
@roles_required("bureau_officer")
def apply_find():
    """The apply page's look-up by ID number (in the body); found, the page continues at
    ?resident_id=<row id>, never at the number."""
    id_number = request.form.get("id_number", "")
    resident = _resident_by_id_number(id_number)
    if resident is None:
        return _apply_page(
            None, status=404, lookup_error=str(NO_SUCH_RESIDENT), values={"id_number": id_number}
        )
    return redirect(url_for(".apply_for_elder", resident_id=resident.id))


@bp.post("/apply")
@roles_required("bureau_officer")
def submit_application():
    resident = _resident_in_district(request.form.get("resident_id", type=row_id))
    try:
        case = lifecycle.apply(
            resident,
            type=request.form.get("type", ""),
            applied_by=current_user,
            via="bureau",
            note=request.form.get("note"),
            disputed=disputed_assessment(request.form),
        )
    except DomainError as error:
        db.session.rollback()
        problem = problem_from(error, fields=("type", "disputed_assessment_id"))
        return _apply_page(resident, status=422, problem=problem, values=request.form)
    flash(
        _("The application has been made (case %(id)s); it now waits for an agency.", id=case.id),
        "success",
    )
    return redirect(url_for(".resident", resident_id=resident.id))


# --------------------------------------------------------------------------- eligibility


def _render_resident(resident: Resident, status=200, problem=None, problem_form=None, values=None):
    result, current = eligibility_and_basis(resident, local_today())
    history = db.session.scalars(
        sa.select(Assessment)
        .where(Assessment.resident_id == resident.id)
        .order_by(Assessment.created_at.desc(), Assessment.id.desc())
    ).all()
    exclusions = db.session.scalars(
        sa.select(Exclusion)
        .where(Exclusion.resident_id == resident.id)
        .order_by(Exclusion.start_date.desc(), Exclusion.id.desc())
    ).all()
    return render_template(
        "assessment/resident.html",
        resident=resident,
        result=result,
        current=current,
        history=history,
        exclusions=exclusions,
        exclusion_kinds=EXCLUSION_KINDS,
        problem=problem,
        problem_form=problem_form,
        values=values or {},
    ), status


@bp.get("/residents/<int:resident_id>")
@roles_required(*BUREAU_ROLES)
def resident(resident_id: int):
    return _render_resident(_resident_in_district(resident_id))


@bp.post("/residents/<int:resident_id>/death")
@roles_required("bureau_officer")
def resident_death(resident_id: int):
    person = _resident_in_district(resident_id)
    errors = FormErrors()
    died_on = parse_date(request.form.get("date_of_death"), "date_of_death", errors)
    if errors:
        return _render_resident(person, 422, input_problem(errors), "death", request.form)
    try:
        record_death(person, died_on, today=local_today())
    except DomainError as error:
        db.session.rollback()
        problem = problem_from(error, fields=("date_of_death",))
        return _render_resident(person, 422, problem, "death", request.form)
    # After the service's checks (no date ahead, none recorded yet); the question's rollback
    # undoes the record until the officer confirms.
    confirmation.require(
        Question(
            title=_("Record %(name)s as deceased on %(day)s?", name=person.name, day=died_on),
            consequences=[
                _(
                    "%(name)s's vouchers stop at once: the voucher of the month of death is "
                    "revoked and no new one is issued. A death cannot be taken back here.",
                    name=person.name,
                )
            ],
            button=_("Yes, record the death"),
            back=url_for(".resident", resident_id=person.id),
        )
    )
    flash(_("The date of death has been recorded."), "success")
    return redirect(url_for(".resident", resident_id=person.id))


@bp.post("/residents/<int:resident_id>/exclusions")
@roles_required("bureau_officer")
def resident_add_exclusion(resident_id: int):
    person = _resident_in_district(resident_id)
    form = request.form
    errors = FormErrors()
    start = parse_date(form.get("start_date"), "start_date", errors)
    end = parse_date(form.get("end_date"), "end_date", errors, required=False)
    if errors:
        return _render_resident(person, 422, input_problem(errors), "exclusion", form)
    try:
        add_exclusion(
            person,
            form.get("kind", ""),
            start,
            end_date=end,
            source=(form.get("source") or "").strip() or None,
        )
    except DomainError as error:
        db.session.rollback()
        problem = problem_from(error, fields=("kind", "end_date"))
        return _render_resident(person, 422, problem, "exclusion", form)
    # After the service's checks; the question's rollback undoes it until confirmed.
    confirmation.require(
        Question(
            title=_(
                "Record that %(name)s is excluded from %(day)s (%(kind)s)?",
                name=person.name,
                kind=EXCLUSION_LABELS[form.get("kind", "")],
                day=start,
            ),
            consequences=[
                _(
                    "%(name)s is excluded from the vouchers while it lasts: no voucher is "
                    "issued from the month after %(day)s until the exclusion ends.",
                    name=person.name,
                    day=start,
                )
            ],
            button=_("Yes, record the exclusion"),
            back=url_for(".resident", resident_id=person.id),
        )
    )
    flash(_("The exclusion has been recorded."), "success")
    return redirect(url_for(".resident", resident_id=person.id))


@bp.post("/residents/<int:resident_id>/exclusions/<int:exclusion_id>/end")
@roles_required("bureau_officer")
def resident_end_exclusion(resident_id: int, exclusion_id: int):
    person = _resident_in_district(resident_id)
    exclusion = db.session.get(Exclusion, exclusion_id)
    if exclusion is None or exclusion.resident_id != person.id:
        raise NotFound()
    errors = FormErrors()
    end = parse_date(request.form.get("end_date"), "end_date", errors)
    form_name = f"end-{exclusion_id}"
    if errors:
        return _render_resident(person, 422, input_problem(errors), form_name, request.form)
    try:
        end_exclusion(exclusion_id, end)
    except DomainError as error:
        db.session.rollback()
        problem = problem_from(error, fields=("end_date",))
        return _render_resident(person, 422, problem, form_name, request.form)
    flash(_("The end of the exclusion has been recorded."), "success")
    return redirect(url_for(".resident", resident_id=person.id))


@bp.post("/residents/<int:resident_id>/move-out")
@roles_required("bureau_officer")
def resident_move_out(resident_id: int):
    """The first day the elder no longer lives in the city (a known future day too)."""
    person = _resident_in_district(resident_id)
    errors = FormErrors()
    moved_on = parse_date(request.form.get("moved_out_on"), "moved_out_on", errors)
    if errors:
        return _render_resident(person, 422, input_problem(errors), "move-out", request.form)
    try:
        record_move_out(person, moved_on, today=local_today())
    except DomainError as error:
        db.session.rollback()
        problem = problem_from(error, fields=("moved_out_on",))
        return _render_resident(person, 422, problem, "move-out", request.form)
    confirmation.require(
        Question(
            title=_(
                "Record that %(name)s moves out of the city on %(day)s?",
                name=person.name,
                day=moved_on,
            ),
            consequences=[
                _(
                    "%(name)s's vouchers stop from the month after: no voucher is issued "
                    "for it or any later month while the move stands.",
                    name=person.name,
                )
            ],
            button=_("Yes, record the move"),
            back=url_for(".resident", resident_id=person.id),
        )
    )
    flash(
        _(
            "The move out of the city on %(day)s has been recorded; vouchers stop from the "
            "following month.",
            day=moved_on.isoformat(),
        ),
        "success",
    )
    return redirect(url_for(".resident", resident_id=person.id))
