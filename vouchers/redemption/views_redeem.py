"""The provider staff's phone-first scan-and-redeem pages, and the short ``/r/<code>`` links.

The flow, one page per step, every step through the service modules:

1. ``/r/<code>`` (``short_bp``): what the elder's QR (or the staff phone's own camera app)
   opens. A rotating token is used once for the signed-in staff member
   (``qr_tokens.consume_token``) and leads to that use's page; a printed card's code asks
   for the elder's PIN first (``cards.use_card``). Anyone else is told the code is for the
   provider's staff, and nothing is used up.
2. ``/vouchers/scan``: the three other ways to read a code: the in-page camera (frames
   posted to ``/vouchers/scan/frame`` and decoded on the server with zxing-cpp, see
   ``static/scan.js``), a photo upload, or the short code typed in.
3. ``/vouchers/scan/<use_id>``: the elder (masked), the voucher's remaining amount, today's
   bookings and the services the voucher pays for, each with a check-in button carrying the
   phone's location.
4. ``/vouchers/redemptions/<id>``: check-out, the price, the split, cash / card / done, the
   receipt and, within the policy window, the reversal.
5. ``/vouchers/redemptions``: the provider's redemptions, newest first.

A refusal from a service rolls the unit of work back and shows the same page again with the
service's message (4xx), so nothing changes. The card payment steps are the exception:
``vouchers.redemption.payments`` commits between its gateway calls, and a declined card or an
unreachable gateway has already left the redemption in the state the page then shows.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import sqlalchemy as sa
from flask import (
    abort,
    current_app,
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

from eldercare import confirmation
from eldercare.auth import ensure_in_district, login_manager, roles_required
from eldercare.confirmation import Question
from eldercare.db import db
from eldercare.errors import DomainError, NotFound
from eldercare.forms import (
    FormErrors,
    input_problem,
    parse_yuan,
    problem_from,
    whole_number_or_raw,
    yuan,
    yuan_input,
)
from eldercare.navigation import Destination
from eldercare.paging import page_number
from eldercare.residents import Resident
from eldercare.timeutil import format_local, local_today, now_utc
from marketplace import bookings, catalogue
from marketplace.forms import DELIVERY_PLACE_LABELS
from marketplace.providers import staff_record
from vouchers.errors import CardDeclined, CardLocked, GatewayUnavailable, WrongPin
from vouchers.models import Redemption, TokenUse, Voucher
from vouchers.redemption import cards, origin, payments, qr_tokens
from vouchers.redemption import steps as redemptions
from vouchers.redemption.gateway import card_payments_enabled
from vouchers.views import bp, short_bp

STAFF_ROLES = ("provider_admin", "provider_staff")
BUREAU_ROLES = ("bureau_officer", "bureau_approver")
PAGE_SIZE = 20
# Set by vouchers.integrity.views (which this package may not import): the redemption's
# flags as the bureau's page lists them (rule, evidence in words, status), for bureau staff.
flag_listing: Callable[[Redemption], list[dict]] | None = None
# A phone photo is a few MB; a camera frame from scan.js a few dozen KB.
PHOTO_MAX_BYTES = 8 * 1024 * 1024
FRAME_MAX_BYTES = 1024 * 1024

STATUS_LABELS = {
    "checked_in": _l("Checked in"),
    "pending_payment": _l("Payment in progress"),
    "redeemed": _l("Redeemed"),
    "failed": _l("Payment failed"),
    "cancelled": _l("Cancelled"),
    "reversed": _l("Reversed"),
}
KIND_LABELS = {
    "home_community": _l("Home and community care"),
    "institutional": _l("Institutional care"),
}
METHOD_LABELS = {
    "cash": _l("Cash"),
    "card": _l("Card"),
    "none": _l("Nothing to pay"),
}

DESTINATIONS = [
    Destination(
        "vouchers.scan",
        _l("Scan a voucher"),
        description=_l(
            "Scan the elder's voucher code, check in, and take the payment for a service."
        ),
    ),
    Destination("vouchers.redemptions", _l("Redemptions")),
]


def page_words() -> dict:
    return {
        "yuan": yuan,
        "format_local": format_local,
        "STATUS_LABELS": STATUS_LABELS,
        "KIND_LABELS": KIND_LABELS,
        "METHOD_LABELS": METHOD_LABELS,
        "DELIVERY_PLACE_LABELS": DELIVERY_PLACE_LABELS,
    }


def _is_staff(user) -> bool:
    return user.has_role(*STAFF_ROLES) and staff_record(user) is not None


# --------------------------------------------------------------------------- /r/<code>


def _refused(error: DomainError):
    """A code that cannot be used: the error's own message says what to ask the elder for."""
    db.session.rollback()
    return render_template(
        "vouchers/redeem_refused.html", message=str(error.message), code=error.code
    ), error.status


def _is_card_code(code: str) -> bool:
    return len(code) == cards.CARD_CODE_LENGTH + 1 and code.startswith(cards.CARD_PREFIX)


def _use_page(digest: str):
    use = db.session.scalar(sa.select(TokenUse).where(TokenUse.token_digest == digest))
    return redirect(url_for("vouchers.scan_use", use_id=use.id))


@short_bp.route("/r/<code>", methods=["GET", "POST"])
def short(code: str):
    if not current_user.is_authenticated:
        # The phone's own camera app opens this link in a browser that may not be signed
        # in: sign in, then come straight back here.
        return login_manager.unauthorized()
    if not _is_staff(current_user):
        # Most likely the family opening their own QR: say what the code is for, and leave
        # it unused so the provider can still scan it.
        return render_template("vouchers/redeem_not_staff.html"), 403
    normal = qr_tokens.normalise_code(code)
    if normal is not None and _is_card_code(normal):
        return _card_pin(normal)
    if request.method == "POST":
        abort(405)
    try:
        _voucher, use, _fresh = qr_tokens.consume_token(code, user=current_user)
    except DomainError as error:
        return _refused(error)
    return redirect(url_for("vouchers.scan_use", use_id=use.id))


def _card_pin(code: str):
    """The printed card's PIN page (GET) and its check (POST)."""
    problem = None
    status = 200
    if request.method == "POST":
        try:
            _voucher, digest = cards.use_card(code, request.form.get("pin", ""), user=current_user)
        except CardLocked as error:
            return _refused(error)
        except WrongPin as error:
            # Not rolled back: the wrong PIN must count (cards.py), and the request commits.
            problem = problem_from(error, fields=("pin",))
            status = error.status
        except DomainError as error:
            db.session.rollback()
            if "pin" not in (error.details or {}):
                return _refused(error)
            problem = problem_from(error, fields=("pin",))
            status = error.status
        else:
            return _use_page(digest)
    return render_template(
        "vouchers/redeem_pin.html",
        code=code,
        card_ending=code[-4:],
        problem=problem,
    ), status


# --------------------------------------------------------------------------- reading a code


def _decoder():
    from vouchers.redemption import qr_decode

    return qr_decode


def _code_in(text: str | None) -> str | None:
    """The code a decoded QR or a typed text holds, canonical, else None."""
    if not text:
        return None
    code = _decoder().token_from_text(text)
    if not code:
        return None
    code = qr_tokens.normalise_code(code)
    if code and len(code) == cards.CARD_CODE_LENGTH:
        code = cards.CARD_PREFIX + code  # a card number typed from under its QR
    return code


def _render_scan(problem=None, status=200, values=None):
    return render_template(
        "vouchers/redeem_scan.html", problem=problem, values=values or {}, **page_words()
    ), status


@bp.get("/scan")
@roles_required(*STAFF_ROLES)
def scan():
    return _render_scan()


@bp.post("/scan/frame")
@roles_required(*STAFF_ROLES)
def scan_frame():
    """One camera frame from scan.js: {"next": "/r/..."} when it shows a code of ours."""
    upload = request.files.get("frame")
    data = upload.read(FRAME_MAX_BYTES + 1) if upload else b""
    if not data or len(data) > FRAME_MAX_BYTES:
        return jsonify({"found": False, "error": "no frame"}), 400
    code = _code_in(_decoder().decode_qr(data))
    if code is None:
        return jsonify({"found": False})
    return jsonify({"found": True, "next": url_for("vouchers_short.short", code=code)})


@bp.post("/scan/photo")
@roles_required(*STAFF_ROLES)
def scan_photo():
    upload = request.files.get("photo")
    data = upload.read(PHOTO_MAX_BYTES + 1) if upload else b""
    errors = FormErrors()
    if not data:
        errors.add("photo", _l("Choose a photo of the elder's code."))
    elif len(data) > PHOTO_MAX_BYTES:
        errors.add("photo", _l("The photo is too large; take it again closer to the code."))
    else:
        code = _code_in(_decoder().decode_qr(data))
        if code is not None:
            return redirect(url_for("vouchers_short.short", code=code))
        errors.add(
            "photo",
            _l(
                "No voucher code could be read in this photo. Hold the phone steady, fill "
                "the picture with the code, or type the code printed under it."
            ),
        )
    return _render_scan(input_problem(errors), 422)


@bp.post("/scan/code")
@roles_required(*STAFF_ROLES)
def scan_code():
    typed = request.form.get("code", "")
    code = _code_in(typed.strip()[:200])
    if code is not None:
        return redirect(url_for("vouchers_short.short", code=code))
    errors = FormErrors()
    errors.add(
        "code",
        _l("Type the code under the elder's QR, for example 0ABC-DEF1-… (letters and digits)."),
    )
    return _render_scan(input_problem(errors), 422, {"code": typed})


# --------------------------------------------------------------------------- the scanned voucher


def _my_use(use_id: int) -> TokenUse:
    use = db.session.get(TokenUse, use_id)
    if use is None or use.used_by_user_id != current_user.id:
        raise NotFound()
    return use


def _scope_services(provider_id: int, voucher: Voucher) -> list:
    from marketplace.models import Provider

    provider = db.session.get(Provider, provider_id)
    return redemptions.services_paid_for(provider, voucher, local_today())


def _render_use(use: TokenUse, problem=None, status=200, values=None):
    voucher = db.session.get(Voucher, use.voucher_id)
    resident = db.session.get(Resident, voucher.resident_id)
    staff = staff_record(current_user)
    today = local_today()
    existing = db.session.scalar(
        sa.select(Redemption).where(Redemption.scan_digest == use.token_digest)
    )
    services = _scope_services(staff.provider_id, voucher) if staff else []
    return render_template(
        "vouchers/redeem_use.html",
        use=use,
        voucher=voucher,
        resident=resident,
        usable_problem=redemptions.usable_problem(voucher, today),
        booked=bookings.bookings_to_serve(staff.provider_id, resident.id, today) if staff else [],
        services=services,
        existing=existing,
        problem=problem,
        values=values or {},
        **page_words(),
    ), status


@bp.get("/scan/<int:use_id>")
@roles_required(*STAFF_ROLES)
def scan_use(use_id: int):
    return _render_use(_my_use(use_id))


def _coordinate(value: str | None) -> float | None:
    """A coordinate the page's script filled in; blank or unreadable counts as none (the
    service then says a home service needs the location)."""
    try:
        number = float((value or "").strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _form_id(value: str | None) -> int | None:
    text = (value or "").strip()
    return int(text) if text.isdigit() and len(text) < 10 else None


@bp.post("/scan/<int:use_id>/check-in")
@roles_required(*STAFF_ROLES)
def check_in(use_id: int):
    use = _my_use(use_id)
    form = request.form
    try:
        r = redemptions.check_in(
            db.session.get(Voucher, use.voucher_id),
            scan_digest=use.token_digest,
            staff_user=current_user,
            service_id=_form_id(form.get("service_id")),
            booking_id=_form_id(form.get("booking_id")),
            latitude=_coordinate(form.get("latitude")),
            longitude=_coordinate(form.get("longitude")),
            **origin.of_page(current_user),
        )
    except DomainError as error:
        db.session.rollback()
        problem = problem_from(error, fields=("service", "booking", "location"))
        return _render_use(_my_use(use_id), problem, error.status, form)
    return redirect(url_for(".redemption_page", redemption_id=r.id))


# --------------------------------------------------------------------------- one redemption


def _redemption(redemption_id: int) -> Redemption:
    """The provider's own redemption, or (for the bureau) one in its district."""
    r = db.session.get(Redemption, redemption_id)
    if r is None:
        raise NotFound()
    if current_user.has_role(*BUREAU_ROLES):
        # The district whose allocation paid for it, as the bureau's lists show it (the
        # elder may have moved since).
        ensure_in_district(r.voucher.district_id)
        return r
    staff = staff_record(current_user)
    if staff is None or staff.provider_id != r.provider_id:
        raise NotFound()
    return r


def _listed_price(r: Redemption) -> int | None:
    try:
        if r.booking_id is not None:
            return bookings.booking_of(r.provider_id, r.booking_id).price_fen
        return catalogue.price_on(r.service_id, now_utc())
    except DomainError:
        return None


def _render_redemption(r: Redemption, problem=None, status=200, values=None, notice=None):
    now = now_utc()
    deadline = redemptions.reversal_deadline(r)
    may_reverse = (
        r.status == "redeemed"
        and deadline is not None
        and local_today(now) <= deadline
        and redemptions.may_reverse(current_user, r)
    )
    listed = _listed_price(r)
    values = values or {}
    if "price" not in values:
        values = {
            "price": yuan_input(r.price_fen if r.price_fen is not None else listed),
            "insurance": yuan_input(r.insurance_fen or 0),
            "quantity": str(r.quantity or 1),
            **values,
        }
    from eldercare.accounts import User

    return render_template(
        "vouchers/redeem_redemption.html",
        r=r,
        voucher=r.voucher,
        resident=db.session.get(Resident, r.resident_id),
        service=catalogue.service_by_id(r.service_id),
        staff_user=db.session.get(User, r.staff_user_id),
        reversed_by=db.session.get(User, r.reversed_by_user_id) if r.reversed_by_user_id else None,
        is_staff=_is_staff(current_user),
        listed=listed,
        cards_on=card_payments_enabled(current_app),
        deadline=deadline,
        may_reverse=may_reverse,
        problem=problem,
        notice=notice,
        values=values,
        flag_rows=(
            flag_listing(r)
            if flag_listing is not None and current_user.has_role(*BUREAU_ROLES)
            else []
        ),
        **page_words(),
    ), status


@bp.get("/redemptions/<int:redemption_id>")
@roles_required(*STAFF_ROLES, *BUREAU_ROLES)
def redemption_page(redemption_id: int):
    return _render_redemption(_redemption(redemption_id))


def _step(redemption_id: int, action, fields=(), done_message=None):
    """Run one service step on the provider's redemption; a refusal shows the page again."""
    r = _redemption(redemption_id)
    try:
        action(r)
    except DomainError as error:
        db.session.rollback()
        problem = problem_from(error, fields=fields)
        return _render_redemption(_redemption(redemption_id), problem, error.status, request.form)
    if done_message:
        flash(done_message, "success")
    return redirect(url_for(".redemption_page", redemption_id=r.id))


@bp.post("/redemptions/<int:redemption_id>/check-out")
@roles_required(*STAFF_ROLES)
def check_out(redemption_id: int):
    return _step(
        redemption_id,
        lambda r: redemptions.check_out(r, staff_user=current_user),
        done_message=_l("Checked out."),
    )


@bp.post("/redemptions/<int:redemption_id>/price")
@roles_required(*STAFF_ROLES)
def set_price(redemption_id: int):
    r = _redemption(redemption_id)
    errors = FormErrors()
    price = parse_yuan(request.form.get("price"), "price", errors)
    insurance_text = request.form.get("insurance", "")
    insurance = parse_yuan(insurance_text, "insurance", errors) if insurance_text.strip() else 0
    # Blank is one unit; anything but a whole number goes on to the service, which names
    # the field and the allowed range.
    quantity = whole_number_or_raw(request.form.get("quantity"), digits=6)
    quantity = 1 if quantity is None else quantity
    if errors:
        return _render_redemption(r, input_problem(errors), 422, request.form)
    return _step(
        redemption_id,
        lambda r: redemptions.set_price(
            r, price_fen=price, insurance_fen=insurance, quantity=quantity, staff_user=current_user
        ),
        fields=("price", "insurance", "quantity"),
    )


@bp.post("/redemptions/<int:redemption_id>/cash")
@roles_required(*STAFF_ROLES)
def pay_cash(redemption_id: int):
    return _step(
        redemption_id,
        lambda r: redemptions.pay_cash(r, staff_user=current_user),
        done_message=_l("Redeemed. The family has been told."),
    )


@bp.post("/redemptions/<int:redemption_id>/cancel")
@roles_required(*STAFF_ROLES)
def cancel(redemption_id: int):
    r = _redemption(redemption_id)
    try:
        redemptions.cancel(r, staff_user=current_user)
    except DomainError as error:
        db.session.rollback()
        problem = problem_from(error)
        return _render_redemption(_redemption(redemption_id), problem, error.status)
    flash(_("The check-in was cancelled; nothing was paid."), "info")
    return redirect(url_for(".scan"))


@bp.post("/redemptions/<int:redemption_id>/card")
@roles_required(*STAFF_ROLES)
def pay_card(redemption_id: int):
    r = _redemption(redemption_id)
    if not card_payments_enabled(current_app):
        raise NotFound()
    form = request.form
    # The card number and CVC are never shown back; only the expiry, to save retyping.
    kept = {"card_expiry": form.get("card_expiry", "")}
    try:
        card = payments.Card.from_form(
            form.get("card_number"), form.get("card_expiry"), form.get("card_cvc")
        )
    except DomainError as error:
        db.session.rollback()
        problem = problem_from(error, fields=("card_number", "card_expiry", "card_cvc"))
        return _render_redemption(r, problem, error.status, kept)
    try:
        result = payments.pay_by_card(
            r,
            card=card,
            staff_user=current_user,
            return_url=url_for(".payment_return", redemption_id=r.id, _external=True),
        )
    except CardDeclined as error:
        # pay_by_card has given the hold back and committed: another card, or cash.
        return _render_redemption(_redemption(redemption_id), problem_from(error), error.status)
    except GatewayUnavailable:
        return _render_redemption(
            _redemption(redemption_id), {"message": str(UNREACHABLE), "fields": {}}, 503
        )
    except DomainError as error:
        db.session.rollback()
        return _render_redemption(_redemption(redemption_id), problem_from(error), error.status)
    return _after_payment(r, result)


UNREACHABLE = _l(
    "The payment service cannot be reached. The voucher amount stays reserved and the "
    "payment is settled automatically within 15 minutes; if the card was not charged you can "
    "then take cash. You can also check again in a moment."
)


def _after_payment(r: Redemption, result: str):
    if result == "succeeded":
        flash(_("Paid and redeemed. The family has been told."), "success")
        return redirect(url_for(".redemption_page", redemption_id=r.id))
    if result == "requires_action":
        url = payments.next_action_for(r)
        if url:
            return redirect(url)
    if result in ("requires_action", "processing"):
        return redirect(url_for(".payment_status", redemption_id=r.id))
    flash(_("The payment did not go through. Try another card or take cash."), "error")
    return redirect(url_for(".redemption_page", redemption_id=r.id))


def _settled(r: Redemption, *, release_on_failure: bool) -> tuple[str, bool]:
    """Ask the gateway (the outcome, and whether it could not be reached)."""
    try:
        return payments.settle_from_gateway(r, release_on_failure=release_on_failure), False
    except GatewayUnavailable:
        return "processing", True


def _ended(r: Redemption):
    """The payment is over: back to the redemption, saying how it ended."""
    return _after_payment(r, "succeeded" if r.status == "redeemed" else "failed")


@bp.get("/redemptions/<int:redemption_id>/payment")
@roles_required(*STAFF_ROLES)
def payment_status(redemption_id: int):
    """The page that waits for a payment still running (it reloads itself every 3 seconds).
    It only asks: it never gives the hold back, because the request confirming the card (a
    double tap, another tab) may still be in flight while the intent reads "failed"."""
    r = _redemption(redemption_id)
    was_waiting = r.status == "pending_payment"
    _result, unreachable = _settled(r, release_on_failure=False)
    if r.status != "pending_payment":
        if was_waiting:
            return _ended(r)
        return redirect(url_for(".redemption_page", redemption_id=r.id))
    next_action = None
    if not unreachable:
        try:
            next_action = payments.next_action_for(r)
        except GatewayUnavailable:
            unreachable = True
    return render_template(
        "vouchers/redeem_payment.html",
        r=r,
        next_action=next_action,
        unreachable=UNREACHABLE if unreachable else None,
        **page_words(),
    )


@bp.get("/redemptions/<int:redemption_id>/payment/return")
@roles_required(*STAFF_ROLES)
def payment_return(redemption_id: int):
    """Where the bank's 3-D Secure page sends the payer back (``?payment_intent=``): the
    authentication is over, so a failed one gives the hold back, and staff can try another
    card or cash. Once per confirm that sent the payer there (``payments.settle_return``):
    a reload, or a return for anything but the live intent, is a plain look."""
    r = _redemption(redemption_id)
    try:
        payments.settle_return(r, request.args.get("payment_intent", ""))
    except GatewayUnavailable:
        pass  # as the status page: it says so, and the job settles
    if r.status != "pending_payment":
        return _ended(r)
    return redirect(url_for(".payment_status", redemption_id=r.id))


def reversal_question(r: Redemption, reason: str, back: str) -> Question:
    """What reversing ``r`` does, asked before the reversal (here and on the bureau's flag
    rejection, which reverses)."""
    consequences = [
        _(
            "The subsidy of %(subsidy)s goes back: onto the elder's voucher if it is still "
            "this month's, otherwise to the district's allocation.",
            subsidy=yuan(r.subsidy_fen),
        )
    ]
    if r.payment_method == "card" and r.copay_fen:
        consequences.append(
            _(
                "The co-payment of %(copay)s is refunded to the elder's card.",
                copay=yuan(r.copay_fen),
            )
        )
    consequences.append(
        _(
            "If the provider has already been settled for it, the subsidy is taken back from "
            "the provider instead. A reversal cannot be undone. Reason: %(reason)s",
            reason=reason.strip(),
        )
    )
    return Question(
        title=_("Reverse the redemption of %(price)s?", price=yuan(r.price_fen)),
        consequences=consequences,
        facts=[
            (_("Price"), yuan(r.price_fen)),
            (_("Subsidy"), yuan(r.subsidy_fen)),
            (_("Co-payment"), yuan(r.copay_fen)),
        ],
        button=_("Yes, reverse %(price)s", price=yuan(r.price_fen)),
        back=back,
    )


@bp.post("/redemptions/<int:redemption_id>/reverse")
@roles_required(*STAFF_ROLES, *BUREAU_ROLES)
def reverse(redemption_id: int):
    r = _redemption(redemption_id)
    reason = request.form.get("reason", "")
    try:
        # Asked before the service, not after: a reversal commits and then asks the gateway
        # for the card refund, which no rollback could undo. Its refusals come first.
        redemptions.check_reversal(r, actor=current_user, reason=reason, now=now_utc())
        back = url_for(".redemption_page", redemption_id=r.id)
        confirmation.require(reversal_question(r, reason, back))
        payments.reverse(r, actor=current_user, reason=reason)
    except DomainError as error:
        db.session.rollback()
        problem = problem_from(error, fields=("reason",))
        return _render_redemption(_redemption(redemption_id), problem, error.status, request.form)
    flash(_("The redemption was reversed; the voucher amount went back."), "success")
    return redirect(url_for(".redemption_page", redemption_id=r.id))


# --------------------------------------------------------------------------- the list


@bp.get("/redemptions", endpoint="redemptions")
@roles_required(*STAFF_ROLES)
def redemptions_list():
    staff = staff_record(current_user)
    if staff is None:
        raise NotFound()
    page = page_number(request.args.get("page"))
    rows = db.session.scalars(
        sa.select(Redemption)
        .where(Redemption.provider_id == staff.provider_id)
        .order_by(Redemption.checked_in_at.desc(), Redemption.id.desc())
        .offset((page - 1) * PAGE_SIZE)
        .limit(PAGE_SIZE + 1)
    ).all()
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    today = local_today()
    residents = {
        r.id: r
        for r in db.session.scalars(
            sa.select(Resident).where(Resident.id.in_({x.resident_id for x in rows}))
        )
    }
    return render_template(
        "vouchers/redeem_list.html",
        rows=rows,
        residents=residents,
        services={x.service_id: catalogue.service_by_id(x.service_id) for x in rows},
        is_today=lambda when: local_today(when) == today,
        page=page,
        more=more,
        **page_words(),
    )
