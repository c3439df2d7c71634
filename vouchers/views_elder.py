"""The elder's voucher page, for the elder and the family agents who act for them.

- ``elder_home`` (GET /vouchers/): the elders the account acts for, or straight to the only one.
- ``elder_voucher`` (GET /vouchers/elder/<id>): this month's amount left in very big type, the
  rotating QR as large as the phone allows with its typed code under it, why there is no
  voucher when there is none, the history, the choice of kind and (for family agents) the
  printed card.
- ``elder_qr_svg`` / ``elder_qr_png`` / ``elder_qr_json``: the current QR; the page's script
  (static/elder_qr.js) asks the JSON endpoint for a new one every minute.
- ``elder_kind`` (POST): the kind from next month on.
- ``elder_card`` (POST, action issue / pin / revoke) and ``elder_card_image`` (GET, png/svg):
  the printed card; the bureau's page (views_bureau.bureau_card) uses the same helpers.

An elder the account does not act for answers 404, like a missing one. Nothing here that
shows a live code may be cached: every response carrying a token says ``no-store``.
"""

from __future__ import annotations

from datetime import date, timedelta

import sqlalchemy as sa
from flask import (
    Response,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from markupsafe import Markup

from assessment.eligibility import eligibility_on
from eldercare import confirmation
from eldercare.accounts import ELDER_ROLES, elders_acted_for
from eldercare.auth import roles_required
from eldercare.confirmation import Question
from eldercare.db import db
from eldercare.errors import DomainError, InvalidInput, NotFound
from eldercare.forms import problem_from, yuan
from eldercare.i18n import current_locale
from eldercare.navigation import Destination
from eldercare.residents import Resident
from eldercare.timeutil import format_local, local_today, now_utc
from marketplace.models import Provider, Service, ServiceCategory
from vouchers.errors import NoVoucherThisMonth
from vouchers.models import (
    LIVE_FIRST,
    VOUCHER_KINDS,
    Redemption,
    Shortfall,
    Voucher,
    VoucherCard,
)
from vouchers.pool import kinds
from vouchers.pool.kinds import KIND_LABELS
from vouchers.pool.policy import policy_on, scope_on
from vouchers.redemption import cards, failures, qr_tokens
from vouchers.views import bp, no_store

# How the elder and the family read a redemption's state.
REDEMPTION_LABELS = {
    "checked_in": _l("Service started"),
    "pending_payment": _l("Paying"),
    "redeemed": _l("Paid"),
    "failed": _l("Payment failed, nothing taken"),
    "cancelled": _l("Cancelled, nothing taken"),
    "reversed": _l("Reversed, money returned"),
    # Back at check-in after a refused payment (see history_state), never paid or cancelled.
    "declined": _l("Card declined, nothing charged"),
    "unpaid": _l("Payment did not go through, nothing charged"),
}
# Shown states in which no money moved: the amounts read ¥0.00, not an empty "—".
NOTHING_TAKEN = ("declined", "unpaid", "failed", "cancelled")
VOUCHER_STATUS_LABELS = {
    "active": _l("In use"),
    "expired": _l("Ended; the rest went back to the fund"),
    "revoked": _l("Cancelled; the rest went back to the fund"),
}
HISTORY_LIMIT = 200
CARD_ACTIONS = ("issue", "pin", "revoke")

DESTINATIONS = [
    Destination(
        "vouchers.elder_home",
        _l("My voucher"),
        description=_l(
            "This month's subsidy left, the code to show the provider, and what was paid."
        ),
    )
]


# --------------------------------------------------------------------------- shared


def acted_for(resident_id: int) -> Resident:
    """An elder the signed-in account acts for; any other looks missing."""
    for elder in elders_acted_for(current_user):
        if elder.id == resident_id:
            return elder
    raise NotFound()


def month_of(day: date) -> date:
    return day.replace(day=1)


def next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def last_day(month: date) -> date:
    return next_month(month) - timedelta(days=1)


def voucher_in(resident_id: int, month: date) -> Voucher | None:
    return db.session.scalar(
        sa.select(Voucher)
        .where(Voucher.resident_id == resident_id, Voucher.month == month)
        .order_by(*LIVE_FIRST)  # a month may hold a revoked voucher and its re-issue
        .limit(1)
    )


def usable_voucher(resident_id: int) -> Voucher:
    """This month's voucher when a provider could take it now, else NoVoucherThisMonth."""
    today = local_today()
    voucher = voucher_in(resident_id, month_of(today))
    if voucher is None:
        raise NoVoucherThisMonth()
    qr_tokens.check_voucher_usable(voucher, today)
    return voucher


def seconds_left(now=None) -> int:
    """Until the current token's minute ends (the page then fetches the next one)."""
    now = now or now_utc()
    return qr_tokens.WINDOW_SECONDS - int(now.timestamp()) % qr_tokens.WINDOW_SECONDS


def qr_state(voucher: Voucher, resident_id: int, token: str | None = None) -> dict:
    """What the page and the JSON endpoint show of the current code."""
    token = token or qr_tokens.fresh_token(voucher.id)
    return {
        "token": token,
        "url": qr_tokens.qr_url(token),
        "code": qr_tokens.group(token),
        # Absolute endpoint: the home page (another blueprint) shows the code too.
        "image": url_for("vouchers.elder_qr_svg", resident_id=resident_id, token=token),
        "seconds_left": seconds_left(),
    }


def pays_for_text(categories: frozenset[str]) -> str:
    """The services a kind pays for, in words: the names of the categories its policy
    version lists, in the marketplace's order (never hand-written, so it cannot say more
    or less than check-in accepts)."""
    if not categories:
        return _("No rule is in force for this kind of voucher then; it pays for nothing.")
    locale = current_locale()
    names = [
        c.display_name(locale)
        for c in db.session.scalars(
            sa.select(ServiceCategory)
            .where(ServiceCategory.code.in_(sorted(categories)))
            .order_by(ServiceCategory.sort_order, ServiceCategory.code)
        )
    ]
    separator = "、" if locale.startswith("zh") else ", "
    return _("Pays part of: %(services)s.", services=separator.join(names))


def kind_options(month: date) -> list[dict]:
    """Each kind with what it pays for and its cap from the policy in force in ``month``;
    what it pays for is ``scope_on``, the answer check-in and the scan page use."""
    scope = scope_on(month)
    options = []
    for kind in VOUCHER_KINDS:
        try:
            policy = policy_on(kind, month)
        except NotFound:
            policy = None
        options.append(
            {
                "kind": kind,
                "label": KIND_LABELS[kind],
                "pays_for": pays_for_text(scope.get(kind, frozenset())),
                "cap_fen": policy.monthly_cap_fen if policy else None,
                "ratio_percent": policy.ratio_bp / 100 if policy else None,
            }
        )
    return options


def card_of(resident_id: int) -> VoucherCard | None:
    return db.session.scalar(sa.select(VoucherCard).where(VoucherCard.resident_id == resident_id))


def _card_question(action: str, card: VoucherCard | None, back: str) -> Question | None:
    """What stopping, replacing or re-PINning a working card would do; None for a first
    card, which takes nothing away."""
    if card is None or card.status != "active":
        return None
    ending = card.card_code[-4:]
    if action == "revoke":
        return Question(
            title=_("Stop the printed card?"),
            consequences=[
                _(
                    "The card ending %(end)s stops working at once: a provider who scans it "
                    "is refused.",
                    end=ending,
                ),
                _("The voucher keeps its money. To use a card again, print a new one."),
            ],
            button=_("Yes, stop the card"),
            back=back,
        )
    if action == "issue":
        return Question(
            title=_("Print a new card?"),
            consequences=[
                _(
                    "The card ending %(end)s stops working at once: a provider who scans it "
                    "is refused. Only the new card and its new PIN work.",
                    end=ending,
                ),
            ],
            button=_("Yes, issue a new card"),
            back=back,
            secrets=_pin_fields(),
        )
    return Question(
        title=_("Set a new PIN?"),
        consequences=[
            _(
                "The old PIN stops working at once; the card ending %(end)s takes only the "
                "new one. Tell the elder the new PIN in person.",
                end=ending,
            )
        ],
        button=_("Yes, set the new PIN"),
        back=back,
        secrets=_pin_fields(),
    )


def _pin_fields() -> list:
    """The PIN fields, never written into a confirmation page: typed again there."""
    return [("pin", _("New PIN")), ("pin_again", _("The same PIN again"))]


def card_post(resident: Resident, action: str, form, back: str) -> str:
    """Issue a card, set its PIN or revoke it, from a posted form; returns the message to
    flash. Raises InvalidInput (field ``pin`` or ``pin_again``) for a refused PIN, and
    ConfirmationNeeded (the page at ``back`` has the forms) when a working card would be
    stopped, replaced or re-PINned without confirm=1."""
    if action not in CARD_ACTIONS:
        raise NotFound()
    question = _card_question(action, card_of(resident.id), back)
    if action == "revoke":
        if question:
            confirmation.require(question)
        cards.revoke_card(resident.id, actor=current_user)
        return _("The card no longer works. Issue a new card when you want one.")
    pin, again = (form.get("pin") or "").strip(), (form.get("pin_again") or "").strip()
    problem = cards.pin_problem(pin, resident)
    if problem:
        raise InvalidInput(details={"pin": problem})
    if pin != again:
        raise InvalidInput(details={"pin_again": _l("The two PINs are not the same.")})
    if question:
        confirmation.require(question)
    if action == "issue":
        cards.issue_card(resident.id, pin, actor=current_user)
        return _(
            "The card is ready. Print it and give it to the elder; any older card no longer "
            "works. Tell the elder the PIN in person, never write it on the card."
        )
    cards.set_pin(resident.id, pin, actor=current_user)
    return _("The new PIN works now.")


def card_image(resident: Resident, fmt: str) -> Response:
    """The printable A6 card as a PNG or SVG download."""
    card = card_of(resident.id)
    if card is None or card.status != "active" or fmt not in ("png", "svg"):
        raise NotFound()
    from vouchers.redemption import qr_images

    make = qr_images.card_png if fmt == "png" else qr_images.card_svg
    body = make(cards.card_url(card), cards.card_number(card), resident.name)
    if isinstance(body, str):
        body = body.encode("utf-8")
    mimetype = "image/png" if fmt == "png" else "image/svg+xml"
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = (
        f'attachment; filename="voucher-card-{card.card_code[-4:]}.{fmt}"'
    )
    return no_store(response)


def card_facts(card: VoucherCard | None) -> dict | None:
    if card is None:
        return None
    return {
        "status": card.status,
        "number_ending": card.card_code[-4:],
        "issued_at": format_local(card.issued_at, "%Y-%m-%d"),
        "locked_today": card.failed_pin_day == local_today()
        and card.failed_pin_count >= cards.MAX_WRONG_PINS,
    }


# --------------------------------------------------------------------------- history


def history_state(r: Redemption) -> str:
    """How the elder's history reads a redemption. A refused card payment puts it back at
    check-in (the provider may try another card or cash) with the reason recorded; left there,
    it is what the elder saw at the counter, a declined card, not a service still starting."""
    if r.status == "checked_in" and r.failure_reason:
        return "declined" if failures.was_declined(r.failure_reason) else "unpaid"
    return r.status


def _paid(r: Redemption, state: str, amount: int | None) -> int | None:
    if r.status in ("redeemed", "reversed"):
        return amount
    return 0 if state in NOTHING_TAKEN else None


def history_of(resident_id: int) -> dict:
    """The elder's redemptions (newest first) and earlier months' vouchers with what each
    paid and what went back to the fund."""
    rows = db.session.execute(
        sa.select(Redemption, Provider.name, Service.title)
        .join(Provider, Provider.id == Redemption.provider_id)
        .outerjoin(Service, Service.id == Redemption.service_id)
        .where(Redemption.resident_id == resident_id)
        .order_by(Redemption.checked_in_at.desc(), Redemption.id.desc())
        .limit(HISTORY_LIMIT)
    ).all()
    redemptions = [
        {
            "id": r.id,
            "status": state,
            "when": format_local(r.redeemed_at or r.checked_in_at, "%Y-%m-%d %H:%M"),
            "month": r.voucher.month,
            "provider": provider_name,
            "service": title or "—",
            "voucher_paid": _paid(r, state, r.subsidy_fen),
            "elder_paid": _paid(r, state, r.copay_fen),
            "status_label": REDEMPTION_LABELS.get(state, state),
            "reason": r.reversal_reason if r.status == "reversed" else None,
        }
        for r, provider_name, title in rows
        for state in (history_state(r),)
    ]
    used = dict(
        db.session.execute(
            sa.select(Redemption.voucher_id, sa.func.sum(Redemption.subsidy_fen))
            .where(Redemption.resident_id == resident_id, Redemption.status == "redeemed")
            .group_by(Redemption.voucher_id)
        ).all()
    )
    vouchers = db.session.scalars(
        sa.select(Voucher)
        .where(Voucher.resident_id == resident_id)
        .order_by(Voucher.month.desc())
        .limit(36)
    ).all()
    current = month_of(local_today())
    earlier = [
        {
            "month": v.month.strftime("%Y-%m"),
            "kind": KIND_LABELS.get(v.kind, v.kind),
            "face": v.face_value_fen,
            "used": used.get(v.id) or 0,
            # What was not spent went back to the district when the voucher closed.
            "returned": (
                v.face_value_fen - (used.get(v.id) or 0) if v.status != "active" else None
            ),
            "status_label": VOUCHER_STATUS_LABELS.get(v.status, v.status),
        }
        for v in vouchers
        if v.month != current
    ]
    return {"redemptions": redemptions, "earlier": earlier}


def missing_reasons(resident_id: int, today: date) -> dict:
    """Why there is no voucher this month: not eligible (with the assessment's reasons),
    left out because the district's money ran out, or simply not issued yet."""
    eligibility = eligibility_on(resident_id, today)
    if not eligibility.eligible:
        return {"why": "not_eligible", "reasons": [r.message for r in eligibility.reasons]}
    shortfall = db.session.scalar(
        sa.select(Shortfall).where(
            Shortfall.resident_id == resident_id,
            Shortfall.month == month_of(today),
            Shortfall.resolved_at.is_(None),
        )
    )
    if shortfall is not None:
        return {"why": "shortfall", "reasons": []}
    return {"why": "not_issued", "reasons": []}


# --------------------------------------------------------------------------- pages


@bp.get("/")
@roles_required(*ELDER_ROLES)
def elder_home():
    elders = elders_acted_for(current_user)
    if len(elders) == 1:
        return redirect(url_for(".elder_voucher", resident_id=elders[0].id))
    return render_template("vouchers/elder_list.html", elders=elders)


def voucher_now(resident: Resident) -> dict:
    """This month's voucher as _voucher_now.html shows it: its state ("active" with a fresh
    QR, "used_up", "revoked"/"expired", or "none" with the reasons), for the elder's page and
    the home page alike."""
    today = local_today()
    month = month_of(today)
    voucher = voucher_in(resident.id, month)
    state = "none"
    qr = missing = None
    if voucher is not None:
        if voucher.status != "active":
            state = voucher.status  # revoked this month
        elif voucher.balance_fen == 0 and voucher.held_fen == 0:
            state = "used_up"
        else:
            state = "active"
            qr = qr_state(voucher, resident.id)
    else:
        missing = missing_reasons(resident.id, today)
    return {
        "resident": resident,
        "voucher": voucher,
        "state": state,
        "qr": qr,
        "missing": missing,
        "valid_until": last_day(month),
        "yuan": yuan,
    }


def own_account_of(user, resident: Resident) -> bool:
    """True on the elder's own account ("You paid"); a family agent reads the elder's name."""
    own = user.resident if user.has_role("elder") else None
    return own is not None and own.id == resident.id


def home_panel(user) -> Markup | None:
    """The top of an elder's or a family agent's home page: this month's voucher and its
    code, no tap away (issue 14 item 10). Several elders: each with what is left, one tap to
    its code (the page's script keeps one code fresh)."""
    if not user.has_role(*ELDER_ROLES):
        return None
    elders = elders_acted_for(user)
    if len(elders) == 1:
        context = {"own_account": own_account_of(user, elders[0]), **voucher_now(elders[0])}
    else:
        context = {"elders": [voucher_now(elder) for elder in elders], "yuan": yuan}
    # The template autoescapes what it shows; its output is HTML for the home page.
    return Markup(render_template("vouchers/home_voucher.html", **context))  # noqa: S704


def _render_voucher(resident: Resident, status=200, problem=None, problem_form=None):
    month = month_of(local_today())
    now = voucher_now(resident)
    chosen = kinds.kind_for(resident.id)
    is_agent = current_user.has_role("family_agent")
    response = render_template(
        "vouchers/elder_voucher.html",
        several=len(elders_acted_for(current_user)) > 1,
        own_account=own_account_of(current_user, resident),
        **now,
        history=history_of(resident.id),
        kinds=kind_options(next_month(month)),
        chosen_kind=chosen,
        kind_labels=KIND_LABELS,
        next_month=next_month(month),
        card=card_facts(card_of(resident.id)) if is_agent else None,
        show_card=is_agent,
        card_action=lambda action: url_for(".elder_card", resident_id=resident.id, action=action),
        card_download=lambda fmt: url_for(".elder_card_image", resident_id=resident.id, fmt=fmt),
        problem=problem,
        problem_form=problem_form,
    )
    return no_store(Response(response, status=status))


@bp.get("/elder/<int:resident_id>")
@roles_required(*ELDER_ROLES)
def elder_voucher(resident_id: int):
    return _render_voucher(acted_for(resident_id))


def _qr_token(resident_id: int) -> tuple[Voucher, str]:
    """The current token, or the one the page asked for (``?token=``) when it is still this
    voucher's and still accepted, so the image and the typed code under it always match."""
    voucher = usable_voucher(acted_for(resident_id).id)
    asked = request.args.get("token")
    if asked:
        try:
            claim = qr_tokens.read_token(asked)
        except DomainError:
            claim = None
        if claim is not None and claim.voucher_id == voucher.id:
            return voucher, qr_tokens.normalise_code(asked)
    return voucher, qr_tokens.fresh_token(voucher.id)


@bp.get("/elder/<int:resident_id>/qr.svg")
@roles_required(*ELDER_ROLES)
def elder_qr_svg(resident_id: int):
    _voucher, token = _qr_token(resident_id)
    from vouchers.redemption import qr_images

    body = qr_images.qr_svg(qr_tokens.qr_url(token))
    return no_store(Response(body, mimetype="image/svg+xml"))


@bp.get("/elder/<int:resident_id>/qr.png")
@roles_required(*ELDER_ROLES)
def elder_qr_png(resident_id: int):
    _voucher, token = _qr_token(resident_id)
    from vouchers.redemption import qr_images

    return no_store(Response(qr_images.qr_png(qr_tokens.qr_url(token)), mimetype="image/png"))


@bp.get("/elder/<int:resident_id>/qr.json")
@roles_required(*ELDER_ROLES)
def elder_qr_json(resident_id: int):
    resident = acted_for(resident_id)
    voucher = usable_voucher(resident.id)
    state = qr_state(voucher, resident.id)
    state["left"] = yuan(voucher.balance_fen)
    return no_store(jsonify(state))


@bp.post("/elder/<int:resident_id>/kind")
@roles_required(*ELDER_ROLES)
def elder_kind(resident_id: int):
    resident = acted_for(resident_id)
    try:
        kinds.choose_kind(resident, request.form.get("kind", ""), actor=current_user)
    except DomainError as error:
        db.session.rollback()
        problem = problem_from(error, fields=("kind",))
        return _render_voucher(acted_for(resident_id), 422, problem, "kind")
    flash(
        _(
            "Saved. From %(month)s the voucher is for: %(kind)s.",
            month=next_month(month_of(local_today())).strftime("%Y-%m"),
            kind=KIND_LABELS[request.form["kind"]],
        ),
        "success",
    )
    return redirect(url_for(".elder_voucher", resident_id=resident_id) + "#kind")


@bp.post("/elder/<int:resident_id>/card/<action>")
@roles_required("family_agent")
def elder_card(resident_id: int, action: str):
    resident = acted_for(resident_id)
    try:
        back = url_for(".elder_voucher", resident_id=resident_id) + "#card"
        message = card_post(resident, action, request.form, back)
    except InvalidInput as error:
        db.session.rollback()
        problem = problem_from(error, fields=("pin", "pin_again"))
        return _render_voucher(acted_for(resident_id), 422, problem, f"card-{action}")
    flash(message, "success")
    return redirect(url_for(".elder_voucher", resident_id=resident_id) + "#card")


@bp.get("/elder/<int:resident_id>/card.<fmt>")
@roles_required("family_agent")
def elder_card_image(resident_id: int, fmt: str):
    return card_image(acted_for(resident_id), fmt)
