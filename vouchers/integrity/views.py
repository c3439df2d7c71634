"""The bureau's pages for redemption flags.

- ``bureau_flags`` (GET /vouchers/bureau/flags): the open flags, oldest first, each with
  the redemption's facts, the rule and its evidence, and two forms: clear, reject (a reason
  required for both). A district's officers see their district's elders' flags only.
- ``bureau_flag_clear`` / ``bureau_flag_reject`` (POST): -> flags.clear / flags.reject.
- ``bureau_flag_raise`` (GET/POST /vouchers/bureau/redemptions/<id>/flag): "Hold out of
  settlement", reached from the bureau's redemptions list: -> flags.raise_flag (rule
  "bureau", the officer's reason as evidence).
"""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from eldercare import confirmation
from eldercare.accounts import BUREAU_ROLES
from eldercare.auth import ensure_in_district, roles_required
from eldercare.db import db
from eldercare.errors import DomainError, NotFound
from eldercare.forms import problem_from, yuan
from eldercare.navigation import Destination
from eldercare.residents import Resident, mask_name
from eldercare.timeutil import format_local
from marketplace.models import Provider, Service
from vouchers.integrity import flags
from vouchers.models import Redemption
from vouchers.redemption.views_redeem import reversal_question
from vouchers.views import bp
from vouchers.views_elder import REDEMPTION_LABELS

DESTINATIONS = [
    Destination(
        "vouchers.bureau_flags",
        _l("Redemptions held out of settlement"),
        description=_l(
            "Redemptions flagged for a closer look: clear them for settlement, or reject "
            "them (the redemption is reversed)."
        ),
    ),
]


def _facts(r: Redemption) -> dict:
    service = db.session.get(Service, r.service_id) if r.service_id else None
    return {
        "id": r.id,
        "elder": mask_name(db.session.get(Resident, r.resident_id).name),
        "provider": db.session.get(Provider, r.provider_id).name,
        "service": service.title if service else "—",
        "when": format_local(r.redeemed_at or r.checked_in_at),
        "price": yuan(r.price_fen),
        "subsidy": yuan(r.subsidy_fen),
        "copay": yuan(r.copay_fen),
        "method": r.payment_method or "—",
        "status": REDEMPTION_LABELS.get(r.status, r.status),
        "link": url_for("vouchers.redemption_page", redemption_id=r.id),
    }


def _evidence(flag) -> list[tuple[str, str]]:
    return [(str(key), str(value)) for key, value in sorted((flag.evidence or {}).items())]


def _render_list(status=200, problem=None, problem_id=None, values=None, action=None):
    rows = [
        {
            "id": flag.id,
            "rule": flags.RULE_LABELS.get(flag.rule, flag.rule),
            "evidence": _evidence(flag),
            "raised_at": format_local(flag.raised_at),
            "redemption": _facts(redemption),
        }
        for flag, redemption in flags.open_flags(current_user)
    ]
    return render_template(
        "vouchers/bureau_flags.html",
        rows=rows,
        problem=problem,
        problem_id=problem_id,
        problem_action=action,
        # A flag decided meanwhile is no longer listed: its problem goes at the top.
        problem_on_top=problem is not None and problem_id not in {row["id"] for row in rows},
        values=values or {},
    ), status


@bp.get("/bureau/flags")
@roles_required(*BUREAU_ROLES)
def bureau_flags():
    return _render_list()


def _decide(flag_id: int, name: str, action, done_message):
    flag = flags.flag_in_scope(flag_id, current_user)
    try:
        action(flag, reason=request.form.get("reason", ""), actor=current_user)
    except DomainError as error:
        db.session.rollback()
        if isinstance(error, NotFound):
            raise
        problem = problem_from(error, fields=("reason",))
        return _render_list(error.status, problem, flag_id, request.form, name)
    flash(done_message, "success")
    return redirect(url_for(".bureau_flags"))


@bp.post("/bureau/flags/<int:flag_id>/clear")
@roles_required(*BUREAU_ROLES)
def bureau_flag_clear(flag_id: int):
    return _decide(
        flag_id, "clear", flags.clear, _l("The flag was cleared: the redemption will be settled.")
    )


def _reject(flag, *, reason, actor) -> None:
    """Rejecting a flag reverses its redemption, which commits and asks the gateway for the
    card refund: asked before, once the reason is given (the service's own refusal first)."""
    redemption = db.session.get(Redemption, flag.redemption_id)
    if flag.status == "open" and redemption.status == "redeemed":
        text = flags.clean_reason(reason)
        back = url_for(".bureau_flags") + f"#flag-{flag.id}"
        confirmation.require(reversal_question(redemption, text, back))
    flags.reject(flag, reason=reason, actor=actor)


@bp.post("/bureau/flags/<int:flag_id>/reject")
@roles_required(*BUREAU_ROLES)
def bureau_flag_reject(flag_id: int):
    return _decide(
        flag_id, "reject", _reject, _l("The flag was rejected and the redemption reversed.")
    )


def _redemption_in_scope(redemption_id: int) -> Redemption:
    r = db.session.get(Redemption, redemption_id)
    if r is None:
        raise NotFound()
    ensure_in_district(r.voucher.district_id)
    return r


def _render_raise(r: Redemption, status=200, problem=None, values=None):
    held = flags.open_flag_of(r.id)
    return render_template(
        "vouchers/bureau_flag_raise.html",
        r=_facts(r),
        flaggable=r.status in flags.FLAGGABLE_STATUSES and held is None,
        held=held,
        problem=problem,
        values=values or {},
    ), status


@bp.get("/bureau/redemptions/<int:redemption_id>/flag")
@roles_required(*BUREAU_ROLES)
def bureau_flag_raise(redemption_id: int):
    return _render_raise(_redemption_in_scope(redemption_id))


@bp.post("/bureau/redemptions/<int:redemption_id>/flag")
@roles_required(*BUREAU_ROLES)
def bureau_flag_raise_post(redemption_id: int):
    r = _redemption_in_scope(redemption_id)
    try:
        flag = flags.raise_flag(
            r,
            rule=flags.RULE_BUREAU,
            evidence={"reason": request.form.get("reason", "")},
            actor=current_user,
        )
    except DomainError as error:
        db.session.rollback()
        problem = problem_from(error, fields=("reason",))
        return _render_raise(
            _redemption_in_scope(redemption_id), error.status, problem, request.form
        )
    if flag.settled:
        flash(
            _(
                "Flag raised, but this redemption is in an approved statement: it is settled "
                "already. Rejecting the flag claws the subsidy back from the provider."
            ),
            "info",
        )
    else:
        flash(_("The redemption is held out of settlement until the flag is decided."), "success")
    return redirect(url_for(".bureau_flags"))
