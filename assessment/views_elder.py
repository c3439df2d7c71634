"""Elders' and family agents' own page (/assessment/my): each elder's level, how long it is
valid, any case under way, and applying for a new assessment.

An elder acts for themselves; a family agent for the elders linked to their account.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user

from assessment import lifecycle, refund_accounts
from assessment.models import Assessment
from assessment.policy import policy_on
from assessment.views import bp, disputed_assessment, eligibility_and_basis, problem_from
from eldercare.accounts import ELDER_ROLES, elders_acted_for
from eldercare.auth import roles_required
from eldercare.db import db
from eldercare.errors import DomainError, NotFound
from eldercare.residents import Resident
from eldercare.timeutil import local_today

ELDER_TYPES = ("first", "routine", "reassessment")  # what the elder's page can ask for


def _my_elders() -> list[tuple[Resident, str]]:
    """The elders this account may act for, with how it applies for them."""
    own_id = current_user.resident_id if current_user.has_role("elder") else None
    return [
        (resident, "self" if resident.id == own_id else "family_agent")
        for resident in elders_acted_for(current_user)
    ]


def _elder_summary(resident: Resident, via: str) -> dict:
    today = local_today()
    result, current = eligibility_and_basis(resident, today)
    due_on = None
    if current is not None and current.valid_until is not None:
        due_on = current.valid_until - timedelta(days=policy_on(today).expiry_reminder_days)
    open_case = db.session.scalar(
        sa.select(Assessment)
        .where(
            Assessment.resident_id == resident.id,
            Assessment.status.in_(lifecycle.OPEN_STATUSES),
        )
        .order_by(Assessment.id.desc())
        .limit(1)
    )
    return {
        "resident": resident,
        "via": via,
        "result": result,
        "current": current,
        "valid": current is not None and current.valid_until >= today,
        "due_on": due_on,
        "open_case": open_case,
        # Assessment fees owed back, each with the account it is paid to (or its form).
        "refunds": refund_accounts.refunds_of(resident.id),
    }


def render_my(status=200, problem=None, problem_resident=None, *, refund_id=None, values=None):
    """The page; ``refund_id``: the refund whose account form the problem is about."""
    summaries = [_elder_summary(resident, via) for resident, via in _my_elders()]
    return render_template(
        "assessment/my.html",
        summaries=summaries,
        problem=problem,
        problem_resident=problem_resident,
        problem_refund=refund_id,
        values=values or {},
    ), status


@bp.get("/my")
@roles_required(*ELDER_ROLES)
def my():
    return render_my()


@bp.post("/my/<int:resident_id>/apply")
@roles_required(*ELDER_ROLES)
def my_apply(resident_id: int):
    match = next(((r, via) for r, via in _my_elders() if r.id == resident_id), None)
    if match is None:
        raise NotFound()
    person, via = match
    kind = request.form.get("type", "")
    if kind not in ELDER_TYPES:
        abort(422)
    disputed = disputed_assessment(request.form) if kind == "reassessment" else None
    try:
        lifecycle.apply(person, type=kind, applied_by=current_user, via=via, disputed=disputed)
    except DomainError as error:
        db.session.rollback()
        return render_my(422, problem_from(error), person.id)
    flash(
        _(
            "Your application has been received. An assessment agency will contact you "
            "to arrange a visit."
        ),
        "success",
    )
    return redirect(url_for(".my"))
