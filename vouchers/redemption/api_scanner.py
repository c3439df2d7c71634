"""/api/v1 for a provider's scanner: a phone or terminal of one of its staff.

A token of the staff member ("providers:write" or "vouchers:redeem"; the reads also with
"read"). The flow, one request per step:

1. ``POST /scans`` with what the camera read (or the staff typed): a rotating token, a
   printed card's code with the elder's PIN, or the link either QR encodes. The answer names
   the scan, the elder (masked), what is left, the services the voucher pays for and the
   elder's bookings today. The same token sent again by the same scanner is the same scan;
   by another scanner it is refused (``qr_code_used``).
2. ``POST /scans/{id}/check-in``: every refusal that does not depend on the price.
3. ``POST /redemptions/{id}/price``, then ``/cash`` or ``/card``; ``/check-out`` any time;
   ``/cancel`` abandons a check-in before any money moved.

Another provider's scan or redemption answers 404, as a missing one does.
"""

from __future__ import annotations

import functools
import logging
import re

import sqlalchemy as sa
from flask import g
from sqlalchemy.orm import joinedload

from eldercare import stored_text
from eldercare.api import BEARER, error_responses, local_time, page_of, rename_details
from eldercare.db import db
from eldercare.errors import InvalidInput, NotFound
from eldercare.residents import Resident
from eldercare.timeutil import local_today
from eldercare.tokens import token_required
from marketplace import bookings
from marketplace.models import Service
from marketplace.providers import provider_of, staff_record
from marketplace.staff import staff_may_deliver
from vouchers.api import blp, month_text, shape_redemption, shape_service
from vouchers.errors import GatewayError, GatewayUnavailable, TokenForged
from vouchers.models import Redemption, TokenUse, Voucher
from vouchers.pool.policy import shown_rules
from vouchers.redemption import cards, origin, payments, qr_tokens
from vouchers.redemption import steps as redemptions
from vouchers.schemas import (
    VouchersCardRequestSchema,
    VouchersCardResultSchema,
    VouchersCheckInRequestSchema,
    VouchersPriceRequestSchema,
    VouchersProviderRedemptionSchema,
    VouchersRedemptionPageSchema,
    VouchersRedemptionQuerySchema,
    VouchersReverseRequestSchema,
    VouchersScanRequestSchema,
    VouchersScanSchema,
)

log = logging.getLogger(__name__)
_WRITE = ("providers:write", "vouchers:redeem")
_READ = (*_WRITE, "read")
# The service functions name their problems after their parameters; the API after its fields.
_CHECK_IN_FIELDS = {
    "booking": "booking_id",
    "service": "service_id",
    "location": ("latitude", "longitude"),
}
_PRICE_FIELDS = {"price": "price_fen", "insurance": "insurance_fen", "quantity": "quantity"}
# The path of the links the QR codes encode: /r/<token> and /r/c<card code>.
_LINK = re.compile(r"/r/([^/?#\s]+)")


def _for_staff(view):
    """Only a provider's active staff (checked before the body): anyone else is 403."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        provider_of(g.api_user)
        return view(*args, **kwargs)

    return wrapper


def _scanned_code(text: str) -> tuple[str, bool]:
    """The code in what was scanned or typed, and whether it is a printed card's."""
    link = _LINK.search(text)
    code = link.group(1) if link else text.strip()
    if qr_tokens.is_token(qr_tokens.normalise_code(code)):
        return code, False
    if cards.normalise_card_code(code) is not None:
        return code, True
    raise TokenForged()


def _own_scan(scan_id: int) -> tuple[TokenUse, Voucher]:
    """A scan this scanner made, and its voucher (with its policy); anyone else's scan looks
    missing. One statement."""
    row = db.session.execute(
        sa.select(TokenUse, Voucher)
        .join(Voucher, Voucher.id == TokenUse.voucher_id)
        .where(TokenUse.id == scan_id)
        .options(joinedload(Voucher.policy))
    ).first()
    if row is None or row[0].used_by_user_id != g.api_user.id:
        raise NotFound()
    return row[0], row[1]


def _own_redemption(redemption_id: int) -> Redemption:
    """One of the provider's redemptions, loaded in one statement with the rows every step
    and its answer read: the voucher (and its policy), the service and the elder (and
    district). They are held in ``g`` for the request, since the session holds them only
    weakly."""
    provider = provider_of(g.api_user)
    row = db.session.execute(
        sa.select(Redemption, Voucher, Service, Resident)
        .join(Voucher, Voucher.id == Redemption.voucher_id)
        .join(Service, Service.id == Redemption.service_id)
        .join(Resident, Resident.id == Redemption.resident_id)
        .where(Redemption.id == redemption_id)
        .options(joinedload(Voucher.policy))
    ).first()
    if row is None or row[0].provider_id != provider.id:
        raise NotFound()  # another provider's redemption looks exactly like a missing one
    g.redemption_rows = tuple(row)
    return row[0]


def _answered(answer):
    """Commit the step before its answer is serialised: the transaction's row locks are not
    held while the answer is turned into JSON. The answer is built
    from what is loaded, before the commit expires it."""
    db.session.commit()
    return answer


def _masked_elder(resident_id: int) -> dict:
    resident = db.session.get(Resident, resident_id)
    return {"masked_name": resident.masked_name, "district": resident.district.code}


def _provider_redemption(redemption: Redemption, *, next_action_url: str | None = None) -> dict:
    voucher = db.session.get(Voucher, redemption.voucher_id)
    return shape_redemption(redemption) | {
        "elder": _masked_elder(redemption.resident_id),
        "staff_user_id": redemption.staff_user_id,
        "check_in_distance_m": redemption.check_in_distance_m,
        "ratio_bp": redemption.ratio_bp,
        "remaining_fen": voucher.balance_fen,
        "failure_reason": stored_text.render(redemption.failure_reason) or None,
        "reversal_deadline": redemptions.reversal_deadline(redemption)
        if redemption.status == "redeemed"
        else None,
        "next_action_url": next_action_url,
    }


def _scan(voucher: Voucher, use: TokenUse, repeated: bool) -> dict:
    provider = provider_of(g.api_user)
    staff = staff_record(g.api_user)
    today = local_today()
    services = redemptions.services_paid_for(provider, voucher, today)
    rules = shown_rules(voucher, today)  # the version in force today
    return {
        "scan_id": use.id,
        "repeated": repeated,
        "scanned_at": local_time(use.used_at),
        "voucher_id": voucher.id,
        "month": month_text(voucher.month),
        "kind": voucher.kind,
        "elder": _masked_elder(voucher.resident_id),
        "remaining_fen": voucher.balance_fen,
        "ratio_bp": rules.ratio_bp,
        "services": [
            shape_service(s)
            | {
                "price_fen": s.price_fen,
                "home_service": s.is_home_visit,
                "you_may_deliver": staff_may_deliver(staff, s.category, today),
            }
            for s in services
        ],
        "bookings_today": [
            {
                "id": b.id,
                "service": shape_service(b.service),
                "slot_start": local_time(b.slot_start),
                "slot_end": local_time(b.slot_end),
                "price_fen": b.price_fen,
            }
            for b in bookings.bookings_to_serve(provider.id, voucher.resident_id, today)
        ],
    }


# --- endpoints ------------------------------------------------------------------------------


@blp.post("/scans")
@token_required(*_WRITE, any_of=True)
@_for_staff
@blp.doc(security=BEARER)
@blp.arguments(VouchersScanRequestSchema)
@blp.response(201, VouchersScanSchema)
@blp.alt_response(200, schema=VouchersScanSchema, description="The same code sent again")
@error_responses(blp, 401, 403, 409, 422)
def scan(body):
    """Read an elder's code: a rotating token (single use), or a printed card's code with the
    elder's PIN (``pin``).

    Refusals: ``qr_code_invalid`` and ``qr_code_expired`` (422: ask for the code again),
    ``qr_code_used`` (409: another scanner used it), ``voucher_revoked``,
    ``voucher_expired``, ``no_voucher_this_month`` (409); for a card ``card_not_valid``,
    ``wrong_pin`` (422, with the tries left), ``card_locked`` (403, until tomorrow).
    """
    code, is_card = _scanned_code(body["code"])
    if is_card:
        voucher, digest = cards.use_card(code, body["pin"], user=g.api_user)
        use = db.session.scalar(sa.select(TokenUse).where(TokenUse.token_digest == digest))
        fresh = True
    else:
        voucher, use, fresh = qr_tokens.consume_token(code, user=g.api_user)
    return _answered(_scan(voucher, use, not fresh)), 201 if fresh else 200


@blp.post("/scans/<int:scan_id>/check-in")
@token_required(*_WRITE, any_of=True)
@_for_staff
@blp.doc(security=BEARER)
@blp.arguments(VouchersCheckInRequestSchema)
@blp.response(201, VouchersProviderRedemptionSchema)
@error_responses(blp, 401, 403, 404, 409, 422)
def check_in(body, scan_id):
    """Start the redemption of a scan, for a service (``service_id``) or a booking of the
    elder today (``booking_id``); a home service needs the phone's ``latitude`` and
    ``longitude``. The same scan checked in again is the same redemption.

    Refusals: ``out_of_scope``, ``voucher_not_usable``, ``elder_not_eligible`` (only a
    death: any other loss of eligibility stops vouchers from the next month),
    ``check_in_too_far`` (409), ``staff_not_qualified``, ``provider_not_certified`` (403),
    ``invalid_input`` naming the field (422), ``redemption_state`` (409: this scan was
    checked in on another phone).
    """
    use, voucher = _own_scan(scan_id)
    try:
        redemption = redemptions.check_in(
            voucher,
            scan_digest=use.token_digest,
            staff_user=g.api_user,
            service_id=body["service_id"],
            booking_id=body["booking_id"],
            latitude=body["latitude"],
            longitude=body["longitude"],
            **origin.of_token(g.api_token),
        )
    except InvalidInput as error:
        raise rename_details(error, _CHECK_IN_FIELDS) from None
    return _answered(_provider_redemption(redemption))


@blp.post("/redemptions/<int:redemption_id>/check-out")
@token_required(*_WRITE, any_of=True)
@_for_staff
@blp.doc(security=BEARER)
@blp.response(200, VouchersProviderRedemptionSchema)
@error_responses(blp, 401, 403, 404)
def check_out(redemption_id):
    """The service is over: the proof of service gets its end time (the first one stays)."""
    redemption = _own_redemption(redemption_id)
    redemptions.check_out(redemption, staff_user=g.api_user)
    return _provider_redemption(redemption)


# What a provider's redemption looks like, for the OpenAPI document's examples.
REDEMPTION_EXAMPLE = {
    "id": 812,
    "voucher_id": 4021,
    "status": "checked_in",
    "service": {"id": 31, "title": "助餐 午餐", "category": "meal_assistance", "unit": "meal"},
    "booking_id": None,
    "checked_in_at": "2026-03-09T11:42:05+08:00",
    "checked_out_at": None,
    "quantity": 10,
    "price_fen": 15000,
    "insurance_fen": 0,
    "subsidy_fen": 6000,
    "copay_fen": 9000,
    "payment_method": None,
    "redeemed_at": None,
    "reversed_at": None,
    "reversal_reason": None,
    "elder": {"masked_name": "王*兰", "district": "210102"},
    "staff_user_id": 57,
    "check_in_distance_m": None,
    "ratio_bp": 4000,
    "remaining_fen": 44000,
    "failure_reason": None,
    "reversal_deadline": None,
    "next_action_url": None,
}


@blp.post("/redemptions/<int:redemption_id>/cancel")
@token_required(*_WRITE, any_of=True)
@_for_staff
@blp.doc(security=BEARER)
@blp.response(
    200,
    VouchersProviderRedemptionSchema,
    example=REDEMPTION_EXAMPLE | {"status": "cancelled", "price_fen": None, "quantity": None},
)
@error_responses(blp, 401, 403, 404, 409)
def cancel(redemption_id):
    """Abandon a check-in before any money moved (the elder left, the wrong elder was
    scanned, the service was not delivered): the redemption ends ``cancelled``, audited, and
    the voucher is untouched. Allowed while it is checked in, priced or not; once a payment
    has started or it is redeemed, ``redemption_state`` (409): a redeemed one is reversed
    instead. Sent again, it is a 409 and changes nothing."""
    redemption = _own_redemption(redemption_id)
    redemptions.cancel(redemption, staff_user=g.api_user)
    return _provider_redemption(redemption)


@blp.post("/redemptions/<int:redemption_id>/price")
@token_required(*_WRITE, any_of=True)
@_for_staff
@blp.doc(security=BEARER)
@blp.arguments(
    VouchersPriceRequestSchema, example={"price_fen": 15000, "insurance_fen": 0, "quantity": 10}
)
@blp.response(200, VouchersProviderRedemptionSchema, example=REDEMPTION_EXAMPLE)
@error_responses(blp, 401, 403, 404, 409, 422)
def set_price(body, redemption_id):
    """The price of ``quantity`` units of the service (default 1; ten meals, three hours),
    at most the quantity times the listed or booked unit price, and any long-term-care
    insurance part; the answer carries the split of the total: insurance first, then the
    voucher's share of the rest up to its balance, and the elder's co-payment. A bad
    ``quantity`` or ``price_fen`` is a 422 naming the field, and nothing is recorded."""
    redemption = _own_redemption(redemption_id)
    try:
        redemptions.set_price(
            redemption,
            price_fen=body["price_fen"],
            insurance_fen=body["insurance_fen"],
            quantity=body["quantity"],
            staff_user=g.api_user,
        )
    except InvalidInput as error:
        raise rename_details(error, _PRICE_FIELDS) from None
    return _answered(_provider_redemption(redemption))


@blp.post("/redemptions/<int:redemption_id>/cash")
@token_required(*_WRITE, any_of=True)
@_for_staff
@blp.doc(security=BEARER)
@blp.response(200, VouchersProviderRedemptionSchema)
@error_responses(blp, 401, 403, 404, 409)
def pay_cash(redemption_id):
    """The elder paid the co-payment in cash (or had nothing to pay): redeemed at once, and
    the family told. Sent again, it answers the redeemed redemption without paying twice.
    ``insufficient_balance`` (409) when the voucher was spent elsewhere meanwhile: price
    again."""
    redemption = _own_redemption(redemption_id)
    redemptions.pay_cash(redemption, staff_user=g.api_user)
    return _answered(_provider_redemption(redemption))


@blp.post("/redemptions/<int:redemption_id>/card")
@token_required(*_WRITE, any_of=True)
@_for_staff
@blp.doc(security=BEARER)
@blp.arguments(VouchersCardRequestSchema)
@blp.response(200, VouchersCardResultSchema)
@error_responses(blp, 401, 403, 404, 409, 422, 402, 502, 503)
def pay_card(body, redemption_id):
    """Charge the co-payment to a card the scanner's terminal tokenized
    (``payment_method_id``). ``outcome`` ``succeeded``: redeemed; ``requires_action``: send
    the payer to ``next_action_url`` (3-D Secure), then GET the redemption; ``processing``:
    GET it later. A declined card is a 402 ``card_declined`` with the subsidy given back: try
    another card or cash. 502 ``payment_not_created``: the gateway refused to start the
    payment; nothing was charged and the subsidy was given back. 503
    ``payment_gateway_unavailable``: the subsidy stays held until the gateway answers; GET
    the redemption, never pay again with another method first. Sent again while the first
    is still running, it starts no second payment: it answers how the first stands.
    """
    redemption = _own_redemption(redemption_id)
    result = payments.pay_with_payment_method(
        redemption,
        body["payment_method_id"],
        g.api_user,
        body["return_url"] or f"{qr_tokens.public_base_url()}/",
    )
    url = payments.next_action_for(redemption) if result == "requires_action" else None
    return {
        "outcome": result,
        "next_action_url": url,
        "redemption": _provider_redemption(redemption, next_action_url=url),
    }


@blp.get("/redemptions/<int:redemption_id>")
@token_required(*_READ, any_of=True)
@_for_staff
@blp.doc(security=BEARER)
@blp.response(200, VouchersProviderRedemptionSchema)
@error_responses(blp, 401, 403, 404)
def get_redemption(redemption_id):
    """One of the provider's redemptions. While a card attempt is still open on it (not
    recorded as the payment, not closed) it is first settled from the gateway (after 3-D
    Secure, or while polling): a charge that went through is redeemed, or refunded if the
    redemption meanwhile ended another way. Polling never gives a hold back (the confirming
    request may still be running); a failed attempt is released by the request that made it
    or by the every-minute job. A read never fails because of the gateway: when it cannot be
    reached, or refuses, the redemption is answered as recorded."""
    redemption = _own_redemption(redemption_id)
    url = None
    if payments.awaits_settling(redemption):
        try:
            payments.settle_from_gateway(redemption)
            url = payments.next_action_for(redemption)
        except GatewayError as problem:
            # Nothing was settled: the webhook or the every-minute job will.
            db.session.rollback()
            if not isinstance(problem, GatewayUnavailable):
                log.warning("redemption %s read as recorded: %r", redemption_id, problem)
    return _provider_redemption(redemption, next_action_url=url)


@blp.post("/redemptions/<int:redemption_id>/reverse")
@token_required(*_WRITE, any_of=True)
@_for_staff
@blp.doc(security=BEARER)
@blp.arguments(VouchersReverseRequestSchema)
@blp.response(200, VouchersProviderRedemptionSchema)
@error_responses(blp, 401, 403, 404, 409, 422, 502, 503)
def reverse(body, redemption_id):
    """Undo a redemption within the policy's window (``reason`` required): a card
    co-payment is refunded, the subsidy goes back to the voucher (this month) or to the
    district. ``reversal_window_closed``, ``redemption_state`` (409)."""
    redemption = _own_redemption(redemption_id)
    payments.reverse(redemption, actor=g.api_user, reason=body["reason"])
    return _provider_redemption(redemption)


@blp.get("/redemptions")
@token_required(*_READ, any_of=True)
@_for_staff
@blp.doc(security=BEARER)
@blp.arguments(VouchersRedemptionQuerySchema, location="query")
@blp.response(200, VouchersRedemptionPageSchema)
@error_responses(blp, 401, 403, 422)
def list_redemptions(query):
    """The provider's redemptions, newest check-in first."""
    provider = provider_of(g.api_user)
    statement = sa.select(Redemption).where(Redemption.provider_id == provider.id)
    if "status" in query:
        statement = statement.where(Redemption.status == query["status"])
    page = page_of(statement, (Redemption.checked_in_at.desc(), Redemption.id.desc()), query)
    return page | {"items": [_provider_redemption(r) for r in page["items"]]}
