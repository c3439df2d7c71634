"""The page where the bureau, or a care institution's administrator, sets an elder's voucher
kind and whether the elder lives in an institution (issue 10 item 6).

- GET /vouchers/kinds: the form (the elder's resident ID, lives in an institution, kind).
- POST /vouchers/kinds: ``kinds.set_kind``; the answer says from which month it applies.
District staff reach their district's elders only; an institution's administrator reaches
only the elders it houses (``kinds.set_kind`` checks), as the API does.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import render_template, request
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from eldercare.auth import ensure_in_district, roles_required
from eldercare.db import db
from eldercare.errors import DomainError, InvalidInput, NotFound
from eldercare.forms import problem_from
from eldercare.navigation import Destination
from eldercare.register import resident_id_error
from eldercare.residents import Resident
from marketplace.providers import provider_of
from vouchers.models import VOUCHER_KINDS
from vouchers.pool import kinds
from vouchers.views import bp
from vouchers.views_elder import KIND_LABELS

SETTERS = ("bureau_officer", "bureau_approver", "provider_admin")
DESTINATIONS = [
    Destination(
        "vouchers.kind_page",
        _l("Voucher kind and institution"),
        description=_l("Say that an elder lives in a care institution, or set the voucher kind."),
    )
]


def _resident(id_number: str) -> Resident:
    problem = resident_id_error(id_number)
    if problem:
        raise InvalidInput(details={"id_number": problem})
    resident = db.session.scalar(sa.select(Resident).where(Resident.id_number_is(id_number)))
    if resident is None:
        raise NotFound(_l("No elder with that resident ID is registered in your reach."))
    return resident


def _render(problem=None, values=None, done=None, status=200):
    return render_template(
        "vouchers/kind_set.html",
        kind_options=[("", _("Institutional when living in an institution"))]
        + [(k, KIND_LABELS[k]) for k in VOUCHER_KINDS],
        problem=problem,
        values=values or {},
        done=done,
        kind_labels=KIND_LABELS,
    ), status


@bp.get("/kinds")
@roles_required(*SETTERS)
def kind_page():
    return _render()


@bp.post("/kinds")
@roles_required(*SETTERS)
def kind_set():
    form = request.form
    try:
        resident = _resident(form.get("id_number", ""))
        institution = None
        if current_user.has_role("bureau_officer", "bureau_approver"):
            ensure_in_district(resident.district_id)
        else:
            institution = provider_of(current_user, admin=True)
        answer = kinds.set_kind(
            resident,
            kind=form.get("kind") or None,
            in_institution=form.get("in_institution") == "yes",
            actor=current_user,
            institution=institution,
        )
    except DomainError as error:
        db.session.rollback()
        if isinstance(error, NotFound) and not error.details:
            error = NotFound(_l("No elder with that resident ID is registered in your reach."))
        problem = problem_from(error, fields=("id_number", "kind", "in_institution"))
        return _render(problem, form, status=error.status)
    done = {
        "masked": resident.masked_id_number,
        "kind": KIND_LABELS[answer["kind"]],
        "in_institution": answer["in_institution"],
        "month": answer["applies_from"].strftime("%Y-%m"),
    }
    return _render(done=done)
