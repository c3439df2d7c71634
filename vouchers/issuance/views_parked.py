"""The bureau's page of parked eligibility events: events the feed could not handle (each
with its error), and the two things an officer does with one, both audited: retry it (it is
handled as of today) or dismiss it with a reason.

- ``parked_events`` (GET /vouchers/bureau/parked-events): open ones first, then the last
  100 settled; a district's officers see their district's elders only.
- ``parked_retry`` / ``parked_dismiss`` (POST): -> eligibility_feed.retry_parked /
  dismiss_parked.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from eldercare import confirmation
from eldercare.accounts import BUREAU_ROLES
from eldercare.auth import roles_required, scope_to_district
from eldercare.confirmation import Question
from eldercare.db import db
from eldercare.errors import InvalidInput
from eldercare.forms import problem_from
from eldercare.navigation import Destination
from eldercare.residents import Resident
from eldercare.timeutil import format_local
from vouchers.issuance.eligibility_feed import dismiss_parked, parked_in_scope, retry_parked
from vouchers.models import ParkedEvent
from vouchers.views import bp

SETTLED_SHOWN = 100
EVENT_LABELS = {
    "assessment_approved": _l("Assessment approved"),
    "death": _l("Death"),
    "moved_out": _l("Moved out of the city"),
    "exclusion_started": _l("Exclusion started"),
    "exclusion_ended": _l("Exclusion ended"),
}
RESOLUTION_LABELS = {"handled": _l("Handled on retry"), "dismissed": _l("Dismissed")}

DESTINATIONS = [
    Destination(
        "vouchers.parked_events",
        _l("Parked eligibility events"),
        description=_l(
            "Eligibility events the voucher feed could not handle: retry or dismiss them."
        ),
    ),
]


def _rows(open_ones: bool) -> list[dict]:
    statement = (
        sa.select(ParkedEvent, Resident)
        .join(Resident, Resident.id == ParkedEvent.resident_id)
        .where(
            ParkedEvent.resolved_at.is_(None) if open_ones else ParkedEvent.resolved_at.is_not(None)
        )
    )
    statement = scope_to_district(statement, Resident.district_id)
    if open_ones:
        statement = statement.order_by(ParkedEvent.parked_at, ParkedEvent.id)
    else:
        statement = statement.order_by(ParkedEvent.resolved_at.desc()).limit(SETTLED_SHOWN)
    return [
        {
            "id": parked.id,
            "event_id": parked.event_id,
            "kind": EVENT_LABELS.get(parked.event_kind, parked.event_kind),
            "effective_on": parked.effective_on.isoformat(),
            "elder": resident.masked_name,
            "id_number": resident.masked_id_number,
            "error": parked.error,
            "attempts": parked.attempts,
            "parked_at": format_local(parked.parked_at),
            "resolved_at": format_local(parked.resolved_at),
            "resolution": RESOLUTION_LABELS.get(parked.resolution or "", ""),
            "note": parked.resolution_note,
        }
        for parked, resident in db.session.execute(statement).all()
    ]


def _render(status=200, problem=None, problem_id=None, values=None):
    return render_template(
        "vouchers/bureau_parked.html",
        open_rows=_rows(True),
        settled_rows=_rows(False),
        problem=problem,
        problem_id=problem_id,
        values=values or {},
    ), status


@bp.get("/bureau/parked-events")
@roles_required(*BUREAU_ROLES)
def parked_events():
    return _render()


@bp.post("/bureau/parked-events/<int:parked_id>/retry")
@roles_required(*BUREAU_ROLES)
def parked_retry(parked_id: int):
    parked_in_scope(parked_id, current_user.district_id)
    error = retry_parked(parked_id, actor=current_user)
    if error is not None:
        # The event's own work was undone; the failed attempt and its audit row are kept.
        problem = {
            "message": _("The event failed again; it stays parked."),
            "fields": {},
            "other": [error],
        }
        return _render(422, problem, parked_id)
    flash(_("The event was handled."), "success")
    return redirect(url_for(".parked_events"))


@bp.post("/bureau/parked-events/<int:parked_id>/dismiss")
@roles_required(*BUREAU_ROLES)
def parked_dismiss(parked_id: int):
    parked = parked_in_scope(parked_id, current_user.district_id)
    try:
        dismiss_parked(parked_id, actor=current_user, note=request.form.get("note", ""))
    except InvalidInput as error:
        db.session.rollback()
        return _render(422, problem_from(error, fields=("note",)), parked_id, request.form)
    # After the service's checks (a reason, an event still open); the question's rollback
    # undoes the dismissal until the officer confirms.
    resident = db.session.get(Resident, parked.resident_id)
    kind = EVENT_LABELS.get(parked.event_kind, parked.event_kind)
    confirmation.require(
        Question(
            title=_("Dismiss the event “%(kind)s” for good?", kind=kind),
            consequences=[
                _(
                    "The voucher feed never applies this event (%(kind)s of %(elder)s, from "
                    "%(day)s): the elder's vouchers stay as they are unless someone corrects "
                    "them by hand.",
                    kind=kind,
                    elder=resident.masked_name,
                    day=parked.effective_on.isoformat(),
                )
            ],
            button=_("Yes, dismiss the event"),
            back=url_for(".parked_events") + f"#parked-{parked.id}",
        )
    )
    flash(_("The event was dismissed."), "success")
    return redirect(url_for(".parked_events"))
