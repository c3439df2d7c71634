"""The bureau's pages for redemption flags.

- ``bureau_flags`` (GET /vouchers/bureau/flags?rule=&page=): the open flags, oldest first,
  a page at a time, each with the redemption's facts, the rule's name and its evidence in
  words (``flags.explain``), whether the redemption is already settled (rejecting then
  claws it back) and how many other flags hold it, and two forms: clear, reject (a reason
  required for both); how many open flags each rule has, each a filter. A district's
  officers see their district's elders' flags only.
- ``bureau_flag_clear`` / ``bureau_flag_reject`` (POST): -> flags.clear / flags.reject
  (rejecting asks first, saying what the reversal does, that a settled redemption is clawed
  back and that the redemption's other open flags close with it).
- ``bureau_flag_raise`` (GET/POST /vouchers/bureau/redemptions/<id>/flag): "Hold out of
  settlement", reached from the bureau's redemptions list: -> flags.raise_flag (rule
  "bureau", the officer's reason as evidence).
"""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from flask_login import current_user

from eldercare import confirmation
from eldercare.accounts import BUREAU_ROLES
from eldercare.auth import ensure_in_district, roles_required
from eldercare.db import db
from eldercare.errors import DomainError, NotFound
from eldercare.forms import problem_from, yuan
from eldercare.navigation import Destination
from eldercare.paging import page_number
from eldercare.residents import Resident, mask_name
from eldercare.timeutil import format_local
from marketplace.models import Provider, Service
from vouchers.integrity import flags
from vouchers.models import Redemption
from vouchers.redemption import views_redeem
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


FLAG_PAGE = 25
FLAG_STATUS_LABELS = {
    "open": _l("Open: held out of settlement"),
    "cleared": _l("Cleared"),
    "rejected": _l("Rejected"),
}


def flag_listing(r: Redemption) -> list[dict]:
    """The redemption's flags in words, for its own page (``views_redeem.flag_listing``)."""
    return [
        {
            "id": flag.id,
            "code": flag.rule,
            "rule": flags.rule_label(flag.rule),
            "words": flags.explain(flag.rule, flag.evidence, district_id=current_user.district_id),
            "status_code": flag.status,
            "status": FLAG_STATUS_LABELS.get(flag.status, flag.status),
            "raised_at": format_local(flag.raised_at),
            "reason": flag.reason,
        }
        for flag in flags.flags_of(r.id)
    ]


views_redeem.flag_listing = flag_listing


def _rule_filter(text: str | None) -> str | None:
    from vouchers.integrity.rules import RULES

    text = (text or "").strip()
    return text if text == flags.RULE_BUREAU or text in RULES else None


def _render_list(status=200, problem=None, problem_id=None, values=None, action=None):
    rule = _rule_filter(request.args.get("rule"))
    page = page_number(request.args.get("page"))
    found = db.session.execute(
        flags.flag_query(current_user, rule=rule)
        .offset((page - 1) * FLAG_PAGE)
        .limit(FLAG_PAGE + 1)
    ).all()
    shown = found[:FLAG_PAGE]
    others = flags.others_open({r.id: flag.id for flag, r in shown})
    rows = [
        {
            "id": flag.id,
            "rule": flags.rule_label(flag.rule),
            "code": flag.rule,
            "words": flags.explain(flag.rule, flag.evidence, district_id=current_user.district_id),
            "raised_at": format_local(flag.raised_at),
            "redemption": _facts(redemption),
            # A reversal of a settled one clawed it back already: no claw-back to promise.
            "settled": redemption.status == "redeemed" and flags.is_settled(redemption),
            "reversed": redemption.status != "redeemed",
            "others": others.get(redemption.id, 0),
        }
        for flag, redemption in shown
    ]
    counts = flags.counts_by_rule(current_user)
    return render_template(
        "vouchers/bureau_flags.html",
        rows=rows,
        rule=rule,
        page=page,
        more=len(found) > FLAG_PAGE,
        counts=sorted(
            ((code, flags.rule_label(code), n) for code, n in counts.items()),
            key=lambda item: (-item[2], item[0]),
        ),
        total=sum(counts.values()),
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
    if done_message is not None:  # clearing flashes its own words (``_clear``)
        flash(done_message, "success")
    return redirect(url_for(".bureau_flags"))


def _clear(flag, *, reason, actor) -> None:
    flags.clear(flag, reason=reason, actor=actor)
    redemption = db.session.get(Redemption, flag.redemption_id)
    if redemption.status != "redeemed":
        # A reversal leaves its flags open (flags.py): clearing one settles nothing.
        flash(
            _("The flag was cleared: the redemption was reversed; nothing will be settled."),
            "success",
        )
        return
    if flags.is_settled(redemption):
        # Flagged after its statement was approved: it was paid already, and stays so.
        flash(
            _("The flag was cleared: the redemption was settled already; nothing changes."),
            "success",
        )
        return
    others = flags.still_holding(flag)
    if others:
        flash(
            ngettext(
                "The flag was cleared; the redemption is still held by %(num)s other flag.",
                "The flag was cleared; the redemption is still held by %(num)s other flags.",
                others,
            ),
            "info",
        )
    else:
        flash(
            _("The flag was cleared: the redemption will be settled with the next run."),
            "success",
        )


@bp.post("/bureau/flags/<int:flag_id>/clear")
@roles_required(*BUREAU_ROLES)
def bureau_flag_clear(flag_id: int):
    return _decide(flag_id, "clear", _clear, None)


def _reject(flag, *, reason, actor) -> None:
    """Rejecting a flag reverses its redemption, which commits and asks the gateway for the
    card refund: asked before, once the reason is given (the service's own refusal first)."""
    redemption = db.session.get(Redemption, flag.redemption_id)
    if flag.status == "open" and redemption.status == "redeemed":
        text = flags.clean_reason(reason)
        back = url_for(".bureau_flags") + f"#flag-{flag.id}"
        question = reversal_question(redemption, text, back)
        if flags.is_settled(redemption):
            question.consequences.insert(
                0,
                _(
                    "This redemption is already settled (in an approved statement): rejecting "
                    "claws the subsidy of %(subsidy)s back from the provider.",
                    subsidy=yuan(redemption.subsidy_fen),
                ),
            )
        others = flags.still_holding(flag)
        if others:
            question.consequences.append(
                ngettext(
                    "The %(num)s other open flag on this redemption is closed as rejected with it.",
                    "The %(num)s other open flags on this redemption are closed as rejected "
                    "with it.",
                    others,
                )
            )
        confirmation.require(question)
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


from vouchers.integrity import views_rules  # noqa: E402  (its routes, on the same blueprint)

DESTINATIONS += views_rules.DESTINATIONS
