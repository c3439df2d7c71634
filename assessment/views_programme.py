"""The bureau's pages about the programme as a whole: eligibility policy versions (the city's
approver adds one from a future date) and the assessment fees owed back to elders."""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from assessment import fee_refunds, policy, refund_accounts
from assessment.views import bp, level_label, problem_from
from eldercare import confirmation
from eldercare.accounts import BUREAU_ROLES
from eldercare.auth import roles_required, scope_to_district
from eldercare.confirmation import Question
from eldercare.db import db
from eldercare.errors import DomainError, PermissionDenied
from eldercare.forms import (
    FormErrors,
    input_problem,
    parse_date,
    parse_yuan,
    whole_number,
    yuan,
)
from eldercare.paging import page_number
from eldercare.residents import District
from eldercare.timeutil import local_today

POLICY_NUMBER_FIELDS = {
    "min_age": _l("Enter the minimum age in whole years."),
    "assessment_validity_months": _l("Enter the validity in whole months."),
    "conflict_lookback_months": _l("Enter the look-back in whole months."),
    "expiry_reminder_days": _l("Enter the reminder in whole days."),
}
POLICY_FIELDS = (
    "effective_from",
    *POLICY_NUMBER_FIELDS,
    "fee_refund_cap_fen",
    "eligible_levels",
    "note",
)
REFUNDS_PER_PAGE = 50


# --------------------------------------------------------------------------- policy


def _city_approver() -> bool:
    return current_user.has_role("bureau_approver") and current_user.district_id is None


def _render_policies(status=200, problem=None, values=None, levels=None):
    current = policy.versions()
    today = local_today()
    latest = current[0] if current else None
    suggested = max(date(today.year + 1, 1, 1), latest.effective_from) if latest else today
    defaults = {
        "effective_from": suggested.isoformat(),
        **(
            {
                "min_age": latest.min_age,
                "assessment_validity_months": latest.assessment_validity_months,
                "fee_refund_cap": f"{latest.fee_refund_cap_fen / 100:g}",
                "conflict_lookback_months": latest.conflict_lookback_months,
                "expiry_reminder_days": latest.expiry_reminder_days,
            }
            if latest
            else {}
        ),
    }
    return render_template(
        "assessment/policies.html",
        versions=current,
        level_options=[(code, level_label(code)) for code in policy.POLICY_LEVELS],
        is_approver=_city_approver(),
        problem=problem,
        values=values or defaults,
        levels=levels if levels is not None else (latest.eligible_level_set if latest else ()),
    ), status


@bp.get("/policies")
@roles_required(*BUREAU_ROLES)
def policies():
    return _render_policies()


@bp.post("/policies")
@roles_required("bureau_approver")
def policy_add():
    if not _city_approver():
        raise PermissionDenied(_l("Only the city's approvers change the eligibility policy."))
    form = request.form
    levels = form.getlist("eligible_levels")
    errors = FormErrors()
    start = parse_date(form.get("effective_from"), "effective_from", errors)
    numbers = {}
    for name, message in POLICY_NUMBER_FIELDS.items():
        numbers[name] = whole_number(form.get(name), digits=4)
        if numbers[name] is None:
            errors.add(name, message)
    cap = parse_yuan(form.get("fee_refund_cap"), "fee_refund_cap", errors)
    if errors:
        return _render_policies(422, input_problem(errors), form, levels)
    try:
        version = policy.add_version(
            effective_from=start,
            eligible_levels=levels,
            fee_refund_cap_fen=cap,
            note=form.get("note", ""),
            actor=current_user,
            **numbers,
        )
    except DomainError as error:
        db.session.rollback()
        problem = problem_from(error, fields=POLICY_FIELDS)
        if "fee_refund_cap_fen" in problem["fields"]:
            problem["fields"]["fee_refund_cap"] = problem["fields"].pop("fee_refund_cap_fen")
        return _render_policies(422, problem, form, levels)
    # After the service accepted the version (its checks speak first); the question's
    # rollback undoes it until the approver confirms.
    day = version.effective_from.isoformat()
    eligible = ", ".join(level_label(code) for code in sorted(version.eligible_level_set))
    confirmation.require(
        Question(
            title=_("Change the eligibility rule from %(day)s?", day=day),
            consequences=[
                _(
                    "From %(day)s vouchers go only to elders assessed at these levels: "
                    "%(levels)s. An elder at another level receives none under this rule.",
                    day=day,
                    levels=eligible,
                ),
                _("A rule cannot be taken back once it applies; a later rule can change it."),
            ],
            facts=[
                (_("Applies from"), day),
                (_("Eligible levels"), eligible),
                (_("Assessment fee refund cap"), yuan(version.fee_refund_cap_fen)),
            ],
            button=_("Yes, save the new rule"),
            back=url_for(".policies"),
        )
    )
    flash(
        _(
            "New eligibility rule saved; it applies from %(day)s.",
            day=version.effective_from.isoformat(),
        ),
        "success",
    )
    return redirect(url_for(".policies"))


# --------------------------------------------------------------------------- fee refunds


@bp.get("/fee-refunds")
@roles_required(*BUREAU_ROLES)
def fee_refund_list():
    args = request.args
    problem, rows, total, total_fen = None, [], 0, 0
    page = page_number(args.get("page"))
    try:
        month = fee_refunds.parse_month(args.get("month"))
        district = fee_refunds.district_by_code(args.get("district"))
    except DomainError as error:
        problem = problem_from(error, fields=("month", "district"))
    if problem is None:
        filters = {"month": month, "district_id": district.id if district else None}
        scoped = fee_refunds.FeeRefund.district_id
        statement = scope_to_district(fee_refunds.refunds_query(**filters), scoped)
        total, total_fen = db.session.execute(
            scope_to_district(fee_refunds.totals_query(**filters), scoped)
        ).one()
        rows = db.session.execute(
            statement.order_by(*fee_refunds.REFUND_ORDER)
            .limit(REFUNDS_PER_PAGE)
            .offset((page - 1) * REFUNDS_PER_PAGE)
        ).all()
    districts = scope_to_district(sa.select(District).order_by(District.code), District.id)
    return render_template(
        "assessment/fee_refunds.html",
        rows=rows,
        total=total,
        total_fen=total_fen,
        page=page,
        pages=max((total + REFUNDS_PER_PAGE - 1) // REFUNDS_PER_PAGE, 1),
        problem=problem,
        values=args,
        districts=db.session.scalars(districts).all(),
        masked=refund_accounts.masked,
    ), 422 if problem else 200
