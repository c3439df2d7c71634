"""Card co-payments through the gateway, settled exactly once.

Unlike the service functions elsewhere, this module commits between its steps. The hold must
be durable before the gateway is asked to charge, and the payment intent's id must be durable
before the card is confirmed: otherwise a crash between the two could leave an elder charged
with no record here to redeem or release. After each commit the next step is an idempotent
gateway call (its ``Idempotency-Key`` comes from the redemption), so any step can be repeated
by the page, a webhook, polling or the reconciling job without charging twice.

Who settles a payment:
- the page, with the gateway's answer to the confirm call (most payments);
- the 3-D Secure return page, by retrieving the intent;
- the gateway's webhook (signature verified), by retrieving the intent;
- ``settle_stale_holds``, every minute, for holds older than 15 minutes: a succeeded intent is
  captured, any other is cancelled at the gateway first and only then released, so a payment
  can never succeed after its hold was given back. When the gateway cannot be reached the hold
  stays until it can: releasing it blind could leave a charged elder without the service
  paid for.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from flask import current_app
from flask_babel import lazy_gettext as _l

from eldercare import audit
from eldercare.accounts import User
from eldercare.db import db
from eldercare.errors import DomainError, InvalidInput
from eldercare.scheduler import ScheduledJob
from eldercare.timeutil import now_utc
from vouchers import redemption as redemptions
from vouchers.errors import (
    CardDeclined,
    GatewayError,
    GatewayUnavailable,
    RedemptionStateError,
)
from vouchers.gateway import gateway, next_action_url, outcome, payment_error_code
from vouchers.models import GatewayEvent, Redemption
from vouchers.webhooks import verify_signature

log = logging.getLogger(__name__)
SETTLING_EVENTS = (
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
    "payment_intent.requires_action",
)


@dataclass(frozen=True)
class Card:
    number: str = field(repr=False)  # never in a log or an error report
    exp_month: int
    exp_year: int
    cvc: str = field(repr=False)

    @classmethod
    def from_form(cls, number, expiry, cvc) -> Card:
        """Card details as typed: "4242 4242 4242 4242", "12/28", "123"."""
        digits = "".join(ch for ch in str(number or "") if ch.isdigit())
        errors = {}
        if not 12 <= len(digits) <= 19:
            errors["card_number"] = _l("Enter the card number (12 to 19 digits).")
        month = year = 0
        parts = str(expiry or "").replace(" ", "").split("/")
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            month, year = int(parts[0]), int(parts[1])
            year += 2000 if year < 100 else 0
        if not 1 <= month <= 12 or not 2000 <= year <= 2100:
            errors["card_expiry"] = _l("Enter the expiry date as MM/YY, e.g. 12/28.")
        cvc = str(cvc or "").strip()
        if not (cvc.isdigit() and 3 <= len(cvc) <= 4):
            errors["card_cvc"] = _l("Enter the 3 or 4 digits on the back of the card.")
        if errors:
            raise InvalidInput(details=errors)
        return cls(digits, month, year, cvc)


def _key(redemption: Redemption, step: str) -> str:
    return f"{redemptions.new_idempotency_key(redemption)}-{step}"


def _ensure_intent(redemption: Redemption, gw) -> dict:
    """The redemption's payment intent, created once (a retried create returns the first)."""
    if redemption.payment_intent_id:
        return gw.retrieve_payment_intent(redemption.payment_intent_id)
    intent = gw.create_payment_intent(
        redemption.copay_fen,
        idempotency_key=_key(redemption, "create"),
        description=f"co-payment, redemption {redemption.id}",
        metadata={"redemption": redemption.id},
    )
    redemption.payment_intent_id = intent["id"]
    db.session.commit()
    return intent


def pay_by_card(redemption: Redemption, *, card: Card, staff_user: User, return_url: str) -> str:
    """Charge the co-payment to a card; the outcome ("succeeded", "requires_action",
    "processing"). A declined card raises CardDeclined after the hold is given back, so staff
    can try another card or cash."""

    def payment_method(gw) -> str:
        # Tokenized only once the hold and the intent are durable (see the module docstring).
        return gw.create_card_payment_method(card.number, card.exp_month, card.exp_year, card.cvc)[
            "id"
        ]

    return _charge(redemption, payment_method, staff_user=staff_user, return_url=return_url)


def pay_with_payment_method(
    redemption: Redemption, payment_method_id: str, staff_user: User, return_url: str
) -> str:
    """Charge the co-payment to a card the scanner's payment terminal has already tokenized
    (the API's way: card numbers never pass through the platform). Same outcomes, and the
    same refusals, as ``pay_by_card``."""
    return _charge(
        redemption, lambda gw: payment_method_id, staff_user=staff_user, return_url=return_url
    )


def _charge(redemption: Redemption, payment_method, *, staff_user: User, return_url: str) -> str:
    """The body both ways of paying share; ``payment_method(gw)`` gives the method's id."""
    redemptions._require_own(redemption, staff_user)
    if redemption.status == "redeemed":
        return "succeeded"  # the same form submitted twice
    if redemption.status == "pending_payment":
        return settle_from_gateway(redemption)  # still running: ask, never charge again
    if not redemption.copay_fen:
        raise RedemptionStateError(_l("There is nothing for the elder to pay; record it as done."))
    gw = gateway()
    redemptions.hold(redemption, method="card")
    _key(redemption, "hold")
    db.session.commit()
    try:
        intent = _ensure_intent(redemption, gw)
        if outcome(intent) == "succeeded":
            return apply_intent(redemption, intent)
        method_id = payment_method(gw)
        intent = gw.confirm_payment_intent(
            redemption.payment_intent_id,
            payment_method=method_id,
            idempotency_key=_key(redemption, f"confirm-{method_id}"),
            return_url=return_url,
        )
    except CardDeclined as declined:
        redemptions.release(
            redemption, reason=f"card declined: {declined.decline_code or 'declined'}", retry=True
        )
        db.session.commit()
        raise
    return apply_intent(redemption, intent)


def apply_intent(redemption: Redemption, intent: dict, *, release_on_failure: bool = True) -> str:
    """Settle the redemption from the intent's state; commits. Returns the outcome.

    A failed attempt gives the hold back only when ``release_on_failure``: the request that
    made the attempt, and the payer's return from 3-D Secure, know the attempt is over; a
    webhook or a poll may be looking at the moment between a new hold and its confirmation,
    when the intent still reads "requires a payment method" from the last attempt."""
    if intent.get("id") != redemption.payment_intent_id:
        raise GatewayError()
    result = outcome(intent)
    if result == "succeeded":
        if intent.get("amount") != redemption.copay_fen or intent.get("currency") != "cny":
            # A payment of another amount (a price changed under it): never redeem against
            # it; give the money back and let staff charge the right amount.
            log.error("intent %s does not match redemption %s", intent.get("id"), redemption.id)
            _refund_orphan(redemption, intent, reason="amount mismatch")
            result = "failed"
        elif not redemptions.capture(redemption):
            result = _succeeded_after_release(redemption, intent)
    elif result == "failed" and release_on_failure:
        code = payment_error_code(intent) or "failed"
        redemptions.release(redemption, reason=f"payment failed: {code}", retry=True)
    elif result == "failed":
        result = "processing"
    elif result == "canceled":
        redemptions.release(redemption, reason="payment cancelled", retry=False)
    db.session.commit()
    return result


def _succeeded_after_release(redemption: Redemption, intent: dict) -> str:
    """The card was charged but the redemption is no longer waiting for it (a poll released
    the hold a moment too early, or staff took cash meanwhile). The charge must not be lost:
    redeem it again if the redemption still can be, otherwise refund it."""
    db.session.refresh(redemption)
    if redemption.status == "redeemed" and redemption.payment_method == "card":
        return "succeeded"  # captured by someone else: nothing to do
    if redemption.status == "checked_in":
        try:
            with db.session.begin_nested():
                redemptions.hold(redemption, method="card")
                redemptions.capture(redemption)
            return "succeeded"
        except DomainError:
            db.session.refresh(redemption)
    log.warning("redemption %s: card charged after it ended; refunding", redemption.id)
    _refund_orphan(redemption, intent, reason="charged after the redemption ended")
    return "refunded"


def _refund_orphan(redemption: Redemption, intent: dict, *, reason: str) -> None:
    """Give back a charge no redemption can stand on, and leave the redemption ready for a
    fresh intent at the right amount."""
    refund = gateway().create_refund(
        intent["id"], intent["amount"], idempotency_key=_key(redemption, f"orphan-{intent['id']}")
    )
    if redemption.status == "pending_payment":
        redemptions.release(redemption, reason=f"refunded: {reason}", retry=True)
    if redemption.payment_intent_id == intent["id"] and redemption.status != "redeemed":
        redemption.payment_intent_id = None
        redemption.idempotency_key = None
    audit.record(
        "redemption.refund_orphan",
        redemption,
        after={"intent": intent["id"], "refund": refund.get("id"), "reason": reason},
    )


def settle_from_gateway(redemption: Redemption, *, release_on_failure: bool = False) -> str:
    """Ask the gateway where the payment stands and settle accordingly (3-D Secure return,
    polling, webhooks). Without an intent yet there is nothing to ask about."""
    if redemption.status != "pending_payment":
        return {"redeemed": "succeeded", "checked_in": "failed"}.get(redemption.status, "failed")
    if not redemption.payment_intent_id:
        return "processing"
    intent = gateway().retrieve_payment_intent(redemption.payment_intent_id)
    return apply_intent(redemption, intent, release_on_failure=release_on_failure)


def next_action_for(redemption: Redemption) -> str | None:
    """Where the payer authenticates (3-D Secure) for a payment that waits for it."""
    if redemption.status != "pending_payment" or not redemption.payment_intent_id:
        return None
    return next_action_url(gateway().retrieve_payment_intent(redemption.payment_intent_id))


def settle_stale_holds(now: datetime | None = None) -> dict:
    """The every-minute job: holds older than 15 minutes are captured or released."""
    report = {"captured": 0, "released": 0, "waiting": 0, "unreachable": 0}
    report["errors"] = 0
    for redemption_id in [r.id for r in redemptions.stale_holds(now)]:
        redemption = db.session.get(Redemption, redemption_id)
        try:
            result = _settle_stale(redemption)
        except GatewayUnavailable:
            db.session.rollback()
            report["unreachable"] += 1
            continue
        except Exception:
            # One redemption the job cannot settle must not keep every later hold held.
            db.session.rollback()
            log.exception("could not settle the hold of redemption %s", redemption_id)
            report["errors"] += 1
            continue
        report[result] += 1
    return report


def _settle_stale(redemption: Redemption) -> str:
    if redemption.payment_method != "card":
        # Cash holds capture in the transaction that makes them; one left here is a bug,
        # and giving the subsidy back is the safe way out of it.
        redemptions.release(redemption, reason="stale hold", retry=False)
        db.session.commit()
        return "released"
    gw = gateway()
    intent = _ensure_intent(redemption, gw)
    if outcome(intent) not in ("succeeded", "canceled"):
        try:
            intent = gw.cancel_payment_intent(
                intent["id"], idempotency_key=_key(redemption, "cancel")
            )
        except GatewayUnavailable:
            raise
        except GatewayError:
            # It could not be cancelled: it may have succeeded in the meantime. Ask again.
            intent = gw.retrieve_payment_intent(intent["id"])
    result = outcome(intent)
    if result == "succeeded":
        return "captured" if apply_intent(redemption, intent) == "succeeded" else "released"
    if result == "canceled":
        redemptions.release(redemption, reason="payment timed out", retry=False)
        db.session.commit()
        return "released"
    return "waiting"


def reverse(redemption: Redemption, *, actor: User, reason: str, now: datetime | None = None):
    """Reverse within the window: refund the card co-payment first, then give the subsidy
    back. A refund is idempotent by its key, so a reversal interrupted after the refund is
    finished by asking again, without refunding twice."""
    now = now or now_utc()
    redemptions.check_reversal(redemption, actor=actor, reason=reason, now=now)
    refund_id = None
    if redemption.payment_method == "card" and redemption.copay_fen:
        refund = gateway().create_refund(
            redemption.payment_intent_id,
            redemption.copay_fen,
            idempotency_key=_key(redemption, "refund"),
        )
        refund_id = refund["id"]
    redemptions.reverse(redemption, actor=actor, reason=reason, refund_id=refund_id, now=now)


def handle_webhook(payload: bytes, signature_header: str | None) -> str:
    """A gateway event: verified, recorded once, then settled from the intent's current state
    (retrieved, not read from the event, so events arriving out of order cannot undo a later
    attempt). Returns what was done."""
    event = verify_signature(
        payload, signature_header or "", current_app.config.get("PAYMENT_WEBHOOK_SECRET") or ""
    )
    event_id, event_type = str(event.get("id") or ""), str(event.get("type") or "")
    obj = (event.get("data") or {}).get("object") or {}
    if not event_id:
        raise InvalidInput(details={"id": "missing"})
    if db.session.scalar(sa.select(GatewayEvent.id).where(GatewayEvent.event_id == event_id)):
        return "duplicate"
    result = "ignored"
    if event_type in SETTLING_EVENTS and obj.get("id"):
        redemption = _redemption_of(obj)
        # Settling is idempotent, so a resent event does no harm; it is recorded only after
        # settling, so an event that failed half-way (gateway down) is handled when resent.
        result = settle_from_gateway(redemption) if redemption else "unknown"
    try:
        with db.session.begin_nested():
            db.session.add(
                GatewayEvent(event_id=event_id[:80], type=event_type[:60], object_id=obj.get("id"))
            )
    except sa.exc.IntegrityError:
        return "duplicate"
    db.session.commit()
    return result


def _redemption_of(intent: dict) -> Redemption | None:
    found = db.session.scalar(
        sa.select(Redemption).where(Redemption.payment_intent_id == intent["id"])
    )
    if found is not None:
        return found
    # Created, but its id not yet recorded here (a crash in between): the metadata names it.
    named = str((intent.get("metadata") or {}).get("redemption") or "")
    if named.isdigit():
        candidate = db.session.get(Redemption, int(named))
        if candidate is not None and candidate.payment_intent_id is None:
            candidate.payment_intent_id = intent["id"]
            db.session.commit()
            return candidate
    return None


def _settle_stale_job() -> dict:
    from vouchers.gateway import card_payments_enabled

    if not card_payments_enabled(current_app):
        return {"skipped": "card payments are off"}
    return settle_stale_holds()


JOBS = [
    ScheduledJob(
        id="vouchers-settle-stale-holds",
        func=_settle_stale_job,
        trigger="interval",
        trigger_args={"minutes": 1},
        description="Capture or release card co-payment holds older than 15 minutes",
    )
]
