"""Card co-payments through the gateway, settled exactly once.

Unlike the service functions elsewhere, this module commits between its steps. The hold must
be durable before the gateway is asked to charge, and the payment attempt (its idempotency
key, then the intent's id) must be durable before the card is confirmed: otherwise a crash
between the two could leave an elder charged with no record here to redeem or release. After
each commit the next step is an idempotent gateway call, so any step can be repeated by the
page, a webhook, polling or the reconciling job without charging twice.

Every intent created for a redemption is a ``PaymentAttempt``: ``current`` (the one a charge
goes on with), ``succeeded`` (it paid), ``superseded`` (dropped on purpose: a new price, a
refused create, cancelled, no longer waited for; never paid against), ``refunding`` (its
charge cannot pay the redemption and its refund is decided, not yet made) or ``refunded``.

The gateway and the locks. No path here holds a lock across a call to the gateway. Each
path asks the gateway first, with no lock; then locks the redemption's row (then its
attempts', in the one lock order written in ``vouchers.pool.ledger``), reads the attempt and the
redemption again, and records what still applies. A refund is decided under the lock and
recorded (``refunding``, with the amount, audited, committed with the release it goes with),
then asked for after the commit under a key naming the intent and the amount, and its id
recorded, locked again. A refund call that does not get through leaves the attempt
``refunding``: the every-minute job asks again.

Who settles a payment:
- the request that confirms the card, with the gateway's answer (most payments);
- the 3-D Secure return (its own endpoint), by retrieving the intent; it gives a hold back
  once per confirm that sent the payer there (``settle_return``);
- the gateway's webhook (signature verified), by retrieving the intent, and only for an
  intent whose id one of the platform's attempts recorded (never linked by metadata);
- the status page and the scanner API's poll, by retrieving the intent;
- ``settle_stale_holds``, every minute: refunds left ``refunding``; holds older than 15
  minutes (a succeeded intent is captured, any other is cancelled at the gateway first and
  only then released, so a payment can never succeed after its hold was given back; while
  the gateway cannot be reached the hold stays); and live attempts older than 15 minutes on
  redemptions no longer waiting (the redemption first stops pointing at the intent, so no
  new confirm goes on it while it is cancelled);
- a bureau operator's "resolve stuck payment" (audited), which does what the job would do,
  now.

A ``succeeded`` intent reaching any of them goes through redeem-or-refund, whatever the
redemption's status: the charge ends as the redemption's one card payment, or refunded. A
failed attempt gives the hold back only from the confirming request, the 3-D Secure return,
the job or the bureau: a poll, the status page or a webhook may be looking while a confirm is
still in flight, when the intent still reads "requires a payment method". A read (the
scanner API's GET) asks only while an attempt is still open, and answers the redemption as
recorded when the gateway cannot help.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa
from flask import current_app
from flask_babel import lazy_gettext as _l

from eldercare import audit, stored_text
from eldercare.accounts import User
from eldercare.db import db
from eldercare.errors import DomainError, InvalidInput
from eldercare.scheduler import ScheduledJob
from eldercare.timeutil import now_utc
from vouchers.errors import (
    CardDeclined,
    GatewayError,
    GatewayRefused,
    GatewayUnavailable,
    PaymentNotCreated,
    RedemptionStateError,
)
from vouchers.models import GatewayEvent, PaymentAttempt, Redemption
from vouchers.redemption import failures
from vouchers.redemption import steps as redemptions
from vouchers.redemption.gateway import (
    amount_received,
    amount_refunded,
    gateway,
    next_action_url,
    outcome,
    payment_error_code,
)
from vouchers.redemption.webhooks import verify_signature

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


# --------------------------------------------------------------------------- attempts

# Where an attempt may go from each state; anything else is a bug, refused loudly.
ATTEMPT_MOVES = {
    "current": frozenset({"superseded", "succeeded", "refunding", "refunded"}),
    "superseded": frozenset({"refunding", "refunded"}),
    "succeeded": frozenset({"refunding", "refunded"}),  # reversed, its card refunded
    "refunding": frozenset({"refunded"}),  # the refund decided; the gateway asked after
    "refunded": frozenset(),
}


def move_attempt(attempt: PaymentAttempt, state: str, note: str | None = None) -> None:
    if state == attempt.state:
        return
    if state not in ATTEMPT_MOVES[attempt.state]:
        raise RuntimeError(f"payment attempt {attempt.id}: {attempt.state} -> {state}")
    attempt.state = state
    if note:
        attempt.note = note[:200]


def _attempt_of_intent(intent_id: str | None) -> PaymentAttempt | None:
    if not intent_id:
        return None
    return db.session.scalar(sa.select(PaymentAttempt).where(PaymentAttempt.intent_id == intent_id))


def _current_attempt(redemption: Redemption) -> PaymentAttempt | None:
    return db.session.scalar(
        sa.select(PaymentAttempt).where(
            PaymentAttempt.redemption_id == redemption.id, PaymentAttempt.state == "current"
        )
    )


def _paid_by(redemption: Redemption, intent_id: str) -> bool:
    """Whether this intent is recorded as the redemption's card payment."""
    return (
        redemption.payment_intent_id == intent_id
        and redemption.payment_method == "card"
        and redemption.status in ("redeemed", "reversed")
    )


def _drop_intent(redemption: Redemption, intent_id: str | None) -> None:
    """The redemption stops pointing at an intent it will not be paid by: the next charge
    creates a new one under a new key."""
    if redemption.payment_intent_id == intent_id and not _paid_by(redemption, intent_id or ""):
        redemption.payment_intent_id = None
        redemption.idempotency_key = None


def _lock(redemption: Redemption) -> None:
    """A locked read of the redemption (PostgreSQL: FOR UPDATE), so that two paths settling
    the same charge decide one after the other, each seeing what the other recorded. The
    row is locked before anything pending in the session is written (its attempts come
    after it in the lock order of ``vouchers.pool.ledger``), then read again."""
    redemptions.lock_row(redemption)
    db.session.execute(
        sa.select(Redemption)
        .where(Redemption.id == redemption.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one()


def _live_attempt(redemption: Redemption, gw) -> PaymentAttempt | None:
    """The attempt a charge may go on with, after dropping the one that no longer fits (its
    intent was let go at a new price or after a refund, or its amount is not the co-payment).
    A dropped intent is cancelled at the gateway, so it can never charge later; if it already
    did, the charge is refunded."""
    attempt = _current_attempt(redemption)
    if attempt is None:
        return None
    fits = (
        attempt.intent_id is None
        and attempt.amount_fen == redemption.copay_fen
        and attempt.idempotency_key == _key(redemption, "create")
    )
    if fits:
        return attempt
    if attempt.intent_id:
        # Closed at the gateway before it is marked dropped: if the gateway cannot be
        # reached, nothing is marked and the next try closes it.
        intent = _close_at_gateway(gw, attempt.intent_id)
        if outcome(intent) == "succeeded":
            apply_intent(redemption, intent)  # no longer the redemption's: refunded
            return None
    move_attempt(attempt, "superseded", "dropped before a new attempt")
    db.session.commit()
    return None


def _close_at_gateway(gw, intent_id: str) -> dict:
    """Cancel an intent so it can never charge; the intent as it then stands (a refused
    cancel means it is already final: succeeded or cancelled)."""
    intent = gw.retrieve_payment_intent(intent_id)
    if outcome(intent) in ("succeeded", "canceled"):
        return intent
    try:
        return gw.cancel_payment_intent(intent_id, idempotency_key=f"cancel-{intent_id}")
    except GatewayRefused:
        return gw.retrieve_payment_intent(intent_id)


def _ensure_intent(redemption: Redemption, gw) -> dict:
    """The redemption's payment intent, created once (a retried create returns the first).

    The attempt is recorded before the gateway is asked, so an intent whose id never reached
    us (a crash in between) is still known by its key. A refused create means no intent
    exists under that key: the hold is given back (not committed: the caller commits) and
    PaymentNotCreated raised."""
    if redemption.payment_intent_id:
        return gw.retrieve_payment_intent(redemption.payment_intent_id)
    attempt = _live_attempt(redemption, gw)
    if attempt is None:
        attempt = PaymentAttempt(
            redemption_id=redemption.id,
            idempotency_key=_key(redemption, "create"),
            amount_fen=redemption.copay_fen,
        )
        db.session.add(attempt)
        db.session.commit()
    try:
        intent = gw.create_payment_intent(
            attempt.amount_fen,
            idempotency_key=attempt.idempotency_key,
            description=f"co-payment, redemption {redemption.id}",
            metadata={"redemption": redemption.id, "attempt": attempt.idempotency_key},
        )
    except GatewayRefused as refused:
        problem = refused.details.get("code") or refused.details.get("gateway") or "refused"
        move_attempt(attempt, "superseded", f"refused at creation: {problem}")
        redemption.idempotency_key = None  # the next attempt gets a key of its own
        if redemption.status == "pending_payment":
            why = failures.reason("payment.not_created", problem=problem)
            redemptions.release(redemption, reason=why, retry=True)
        raise PaymentNotCreated(details=refused.details) from refused
    attempt.intent_id = intent["id"]
    redemption.payment_intent_id = intent["id"]
    db.session.commit()
    return intent


# --------------------------------------------------------------------------- charging


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
    """The body both ways of paying share; ``payment_method(gw)`` gives the method's id.

    Only one attempt runs at a time: the hold moves the redemption to ``pending_payment``
    with a conditional UPDATE, and a second submit of the form (a double tap) that finds it
    there, or loses that race, only asks how the first is going; it never releases."""
    redemptions._require_own(redemption, staff_user)
    if redemption.status == "redeemed":
        return "succeeded"  # the same form submitted twice
    if redemption.status == "pending_payment":
        return settle_from_gateway(redemption)  # still running: ask, never charge again
    if not redemption.copay_fen:
        raise RedemptionStateError(_l("There is nothing for the elder to pay; record it as done."))
    gw = gateway()
    try:
        redemptions.hold(redemption, method="card")
    except RedemptionStateError:
        db.session.rollback()
        db.session.refresh(redemption)
        if redemption.status in ("pending_payment", "redeemed"):
            return settle_from_gateway(redemption)  # the first submit won: wait for it
        raise
    _key(redemption, "hold")
    attempt = _current_attempt(redemption)
    if attempt is not None:
        # A new confirm may go on this intent: a return from an earlier 3-D Secure page (a
        # reload, a second tab) must not give this hold back.
        attempt.authenticating_method = None
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
        if outcome(intent) == "requires_action":
            # The payer goes to 3-D Secure: the one return that may release (see
            # settle_return), recorded with this confirm's answer by apply_intent's commit.
            _attempt_for(redemption, intent).authenticating_method = method_id[:80]
    except PaymentNotCreated:
        db.session.commit()  # the hold given back with its reason
        raise
    except CardDeclined as declined:
        redemptions.release(
            redemption,
            reason=failures.reason("payment.card_declined", decline=declined.decline_code),
            retry=True,
        )
        db.session.commit()
        raise
    return apply_intent(redemption, intent)


# --------------------------------------------------------------------------- settling


def _status_outcome(redemption: Redemption) -> str:
    if redemption.status == "pending_payment":
        return "processing"
    return "succeeded" if redemption.status == "redeemed" else "failed"


def _attempt_for(redemption: Redemption, intent: dict) -> PaymentAttempt:
    attempt = _attempt_of_intent(intent.get("id"))
    if attempt is None and intent.get("id") and intent.get("id") == redemption.payment_intent_id:
        # Recorded on the redemption by a path older than the attempts table.
        attempt = PaymentAttempt(
            redemption_id=redemption.id,
            idempotency_key=f"{redemption.idempotency_key or redemption.id}-{intent['id']}",
            intent_id=intent["id"],
            amount_fen=redemption.copay_fen or intent.get("amount") or 1,
        )
        db.session.add(attempt)
        db.session.flush()
    if attempt is None or attempt.redemption_id != redemption.id:
        raise GatewayError()
    return attempt


def apply_intent(redemption: Redemption, intent: dict, *, release_on_failure: bool = True) -> str:
    """Settle the redemption from one of its intents, as the gateway reports it; commits.
    Returns the outcome.

    A ``succeeded`` intent always goes through redeem-or-refund, whatever the redemption's
    status: a charge must end redeemed or refunded. A failed attempt gives the hold back only
    when ``release_on_failure``: the request that made the attempt, the payer's return from
    3-D Secure and the job know the attempt is over; a webhook or a poll may be looking while
    the confirming request is still in flight, when the intent still reads "requires a
    payment method".

    The gateway is asked what it must be asked before the redemption's row is locked, and a
    refund decided under the lock is asked for after the commit (``_send_refund``)."""
    refunded = _refunded_so_far(intent)
    result = _record_intent(redemption, intent, refunded, release_on_failure=release_on_failure)
    db.session.commit()
    _send_decided_refund(intent)
    return result


def _refunded_so_far(intent: dict) -> int | None:
    """For a succeeded intent, what the gateway has already given back of its charge (asked
    before any lock); None for any other. A charge whose refunds cannot be told is asked
    about again later: GatewayUnavailable, never a guess that could refund a good payment."""
    if outcome(intent) != "succeeded":
        return None
    refunded = amount_refunded(intent, gateway())
    if refunded is None:
        log.warning("intent %s: the gateway did not say what was refunded", intent.get("id"))
        raise GatewayUnavailable(details={"gateway": "refunds of the charge not reported"})
    return refunded


def _record_intent(
    redemption: Redemption, intent: dict, refunded: int | None, *, release_on_failure: bool
) -> str:
    """What ``apply_intent`` records, in the caller's transaction (not committed); no call
    to the gateway from here on."""
    attempt = _attempt_for(redemption, intent)
    result = outcome(intent)
    live = attempt.state == "current" and redemption.payment_intent_id == intent["id"]
    if result == "succeeded":
        result = _settle_succeeded(redemption, attempt, intent, refunded)
    elif not live or redemption.status != "pending_payment":
        if result == "canceled" and live:
            # Cancelled while the redemption was not waiting for it: it will never pay.
            move_attempt(attempt, "superseded", "cancelled")
            _drop_intent(redemption, intent["id"])
        result = _status_outcome(redemption)
    elif result == "failed" and release_on_failure:
        code = payment_error_code(intent) or "failed"
        redemptions.release(
            redemption, reason=failures.reason("payment.failed", decline=code), retry=True
        )
    elif result == "failed":
        result = "processing"
    elif result == "canceled":
        move_attempt(attempt, "superseded", "cancelled")
        redemptions.release(redemption, reason=failures.reason("payment.cancelled"), retry=False)
    return result


def _unpaid_reason(
    redemption: Redemption, attempt: PaymentAttempt, intent: dict, refunded: int
) -> str | None:
    """Why a succeeded intent does not pay this redemption, or None when it does: it is the
    redemption's live attempt, it took exactly the co-payment, and nothing was given back
    (``refunded``, asked of the gateway before any lock is taken)."""
    if attempt.state != "current" or redemption.payment_intent_id != intent["id"]:
        return "dropped attempt charged"
    if intent.get("currency") != "cny":
        return "currency mismatch"
    received = amount_received(intent)
    if received != attempt.amount_fen or received != redemption.copay_fen:
        return "amount mismatch"
    if refunded != 0:
        return "partly refunded at the gateway"
    return None


def _settle_succeeded(
    redemption: Redemption, attempt: PaymentAttempt, intent: dict, refunded: int
) -> str:
    """The card was charged: redeem (capturing the hold, or holding again if it was given
    back early) or, when this charge cannot pay the redemption, decide its refund.
    ``refunded`` was asked of the gateway before the lock: no lock is held across a call
    to the gateway."""
    _lock(redemption)
    db.session.refresh(attempt)
    if _paid_by(redemption, intent["id"]):
        if attempt.state == "current":
            move_attempt(attempt, "succeeded")
        return "succeeded"
    if attempt.state in ("refunding", "refunded"):
        return "refunded"
    reason = _unpaid_reason(redemption, attempt, intent, refunded)
    if reason is None:
        if _capture_or_hold_again(redemption):
            move_attempt(attempt, "succeeded")
            return "succeeded"
        # The hold could not be taken again (cash taken meanwhile, voucher spent or closed).
        # Before refunding, look again, locked: another path may have just recorded this
        # very charge as the payment.
        _lock(redemption)
        if _paid_by(redemption, intent["id"]):
            move_attempt(attempt, "succeeded")
            return "succeeded"
        reason = "charged after the redemption ended"
    log.warning("redemption %s: intent %s refunded: %s", redemption.id, intent["id"], reason)
    _decide_refund(redemption, attempt, intent, refunded, reason=reason)
    return "refunded"


def _capture_or_hold_again(redemption: Redemption) -> bool:
    if redemption.status == "pending_payment":
        return redemptions.capture(redemption)
    if redemption.status != "checked_in":
        return False
    try:
        with db.session.begin_nested():
            redemptions.hold(redemption, method="card")
            if not redemptions.capture(redemption):
                raise RedemptionStateError()
        return True
    except DomainError:
        db.session.refresh(redemption)
        return False


# --------------------------------------------------------------------------- refunds


# ``_unpaid_reason``'s words (kept in English in the attempt's note, the log and the audit
# trail) as the codes of the redemption's failure reason, which people read.
_REFUND_REASONS = {
    "dropped attempt charged": "refund.dropped_attempt",
    "currency mismatch": "refund.currency",
    "amount mismatch": "refund.amount",
    "partly refunded at the gateway": "refund.partly_refunded",
    "charged after the redemption ended": "refund.after_end",
}


def _refund_reason(reason: str) -> str:
    code = _REFUND_REASONS.get(reason)
    return failures.reason(
        "payment.refunded", reason=stored_text.nested(stored_text.encode(code)) if code else reason
    )


def _decide_refund(
    redemption: Redemption, attempt: PaymentAttempt, intent: dict, refunded: int, *, reason: str
) -> None:
    """Under the lock: a charge no redemption can stand on is to be given back (what is left
    of it). The decision is recorded and audited (attempt ``refunding``, with the amount) and
    the redemption left ready for a fresh attempt at the right amount; the refund itself is
    asked for after the commit, with no lock held (``_send_refund``)."""
    received = amount_received(intent)
    received = intent.get("amount", 0) if received is None else received
    left = max(received - refunded, 0)
    if left:
        move_attempt(attempt, "refunding", reason)
        attempt.refund_fen = left
    else:
        move_attempt(attempt, "refunded", reason)  # given back in full at the gateway
    if redemption.status == "pending_payment" and redemption.payment_intent_id == intent["id"]:
        redemptions.release(redemption, reason=_refund_reason(reason), retry=True)
    _drop_intent(redemption, intent["id"])
    audit.record(
        "redemption.refund_orphan",
        redemption,
        after={"intent": intent["id"], "amount_fen": left, "reason": reason},
    )


def _send_decided_refund(intent: dict) -> None:
    """After a commit that may have decided a refund of this intent: ask for it now. When
    the gateway does not take it, the decision stays recorded and the every-minute job asks
    again; the path that got here has settled what it came for."""
    attempt = _attempt_of_intent(intent.get("id"))
    if attempt is None or attempt.state != "refunding":
        return
    try:
        _send_refund(attempt)
    except GatewayError:
        db.session.rollback()
        log.warning("refund of intent %s left for the every-minute job", intent.get("id"))


def _send_refund(attempt: PaymentAttempt) -> bool:
    """Ask the gateway for a decided refund (no lock held: called after a commit), then
    record its id, locked. The key names the intent and the amount, so asking again after
    an interrupted call never refunds twice. True when this call recorded it; False when
    another path had meanwhile."""
    intent_id, amount = attempt.intent_id, attempt.refund_fen
    gw = gateway()
    try:
        refund_id = gw.create_refund(
            intent_id, amount, idempotency_key=f"orphan-{intent_id}-{amount}"
        ).get("id")
    except GatewayRefused:
        # Refused: given back in full meanwhile by other means (the gateway's dashboard)?
        intent = gw.retrieve_payment_intent(intent_id)
        if amount_refunded(intent, gw) != amount_received(intent):
            raise
        refund_id = None
    redemption = db.session.get(Redemption, attempt.redemption_id)
    _lock(redemption)
    db.session.refresh(attempt)
    if attempt.state != "refunding":
        db.session.rollback()
        return False
    move_attempt(attempt, "refunded")
    attempt.refund_id = refund_id
    if (
        redemption.status == "reversed"
        and redemption.payment_intent_id == intent_id
        and redemption.refund_id is None
    ):
        redemption.refund_id = refund_id  # a reversal's refund
    audit.record(
        "redemption.refund_sent",
        redemption,
        after={"intent": intent_id, "refund": refund_id, "amount_fen": amount},
    )
    db.session.commit()
    return True


# --------------------------------------------------------------------------- looking


def awaits_settling(redemption: Redemption) -> bool:
    """Whether the gateway could change what is recorded: the redemption points at an intent
    that is not its recorded payment and whose attempt is still open."""
    intent_id = redemption.payment_intent_id
    if not intent_id or _paid_by(redemption, intent_id):
        return False
    attempt = _attempt_of_intent(intent_id)
    return attempt is None or attempt.state == "current"


def settle_from_gateway(redemption: Redemption, *, release_on_failure: bool = False) -> str:
    """Ask the gateway where the redemption's intent stands and settle accordingly (the
    status page, polling). Without an open intent there is nothing to ask about: the
    outcome as recorded."""
    if not awaits_settling(redemption):
        return _status_outcome(redemption)
    intent = gateway().retrieve_payment_intent(redemption.payment_intent_id)
    return apply_intent(redemption, intent, release_on_failure=release_on_failure)


def settle_return(redemption: Redemption, intent_id: str | None) -> str:
    """The payer's return from the 3-D Secure page (``?payment_intent=``): a failed
    authentication gives the hold back, once per confirm that sent the payer there. That
    confirm recorded its payment method on the attempt (``authenticating_method``); the first
    return finding the intent failed consumes it, locked. A reload of the return, or one
    arriving while a later confirm on the same intent is on its way (a new hold clears the
    marker), only looks, as the status page does."""
    if not intent_id or intent_id != redemption.payment_intent_id:
        return settle_from_gateway(redemption)
    if not awaits_settling(redemption):
        return _status_outcome(redemption)
    intent = gateway().retrieve_payment_intent(intent_id)  # asked before any lock
    if outcome(intent) != "failed":
        return apply_intent(redemption, intent, release_on_failure=False)
    _lock(redemption)
    attempt = _attempt_of_intent(intent_id)
    if attempt is not None:
        db.session.refresh(attempt)
    ours = (
        attempt is not None
        and attempt.state == "current"
        and attempt.authenticating_method is not None
        and redemption.payment_intent_id == intent_id
    )
    if ours:
        attempt.authenticating_method = None  # spent: the next return only looks
    return apply_intent(redemption, intent, release_on_failure=ours)


def next_action_for(redemption: Redemption) -> str | None:
    """Where the payer authenticates (3-D Secure) for a payment that waits for it."""
    if redemption.status != "pending_payment" or not redemption.payment_intent_id:
        return None
    return next_action_url(gateway().retrieve_payment_intent(redemption.payment_intent_id))


# --------------------------------------------------------------------------- the job


def settle_stale_holds(now: datetime | None = None) -> dict:
    """The every-minute job: refunds decided but not yet taken by the gateway are asked for
    again (attempts in ``refunding``, whatever their age), holds older than 15 minutes are
    captured or released, and attempts left open on redemptions no longer waiting (a charge
    may still land on them) are closed: redeemed or refunded if they charged, cancelled
    otherwise. No step holds a lock while it waits for the gateway."""
    report = dict.fromkeys(
        ("captured", "released", "waiting", "unreachable", "refunded", "closed", "errors"), 0
    )
    work = [(_finish_refund, PaymentAttempt, i) for i in _refunding_attempts()]
    work += [(_settle_stale, Redemption, i) for i in [r.id for r in redemptions.stale_holds(now)]]
    work += [(_close_open_attempt, PaymentAttempt, i) for i in _open_attempts(now)]
    for settle, model, row_id in work:
        row = db.session.get(model, row_id)
        try:
            result = settle(row)
        except GatewayUnavailable:
            db.session.rollback()
            report["unreachable"] += 1
            continue
        except Exception:
            # One payment the job cannot settle must not keep every later one waiting.
            db.session.rollback()
            log.exception("could not settle %s %s", model.__tablename__, row_id)
            report["errors"] += 1
            continue
        report[result] += 1
    return report


def _settle_stale(redemption: Redemption) -> str:
    if redemption.payment_method != "card":
        # Cash holds capture in the transaction that makes them; one left here is a bug,
        # and giving the subsidy back is the safe way out of it.
        redemptions.release(redemption, reason=failures.reason("payment.stale_hold"), retry=False)
        db.session.commit()
        return "released"
    gw = gateway()
    try:
        intent = _ensure_intent(redemption, gw)
    except PaymentNotCreated:
        db.session.commit()  # released with its reason: nothing exists to wait for
        return "released"
    if outcome(intent) not in ("succeeded", "canceled"):
        intent = _close_at_gateway(gw, intent["id"])
    result = outcome(intent)
    if result == "succeeded":
        return "captured" if apply_intent(redemption, intent) == "succeeded" else "released"
    if result == "canceled":
        move_attempt(_attempt_for(redemption, intent), "superseded", "timed out")
        redemptions.release(redemption, reason=failures.reason("payment.timed_out"), retry=False)
        db.session.commit()
        return "released"
    return "waiting"


def _open_attempts(now: datetime | None = None) -> list[int]:
    """Live attempts older than the hold timeout on redemptions no longer waiting for them."""
    cutoff = (now or now_utc()) - redemptions.HOLD_TIMEOUT
    return list(
        db.session.scalars(
            sa.select(PaymentAttempt.id)
            .join(Redemption, Redemption.id == PaymentAttempt.redemption_id)
            .where(
                PaymentAttempt.state == "current",
                PaymentAttempt.intent_id.is_not(None),
                PaymentAttempt.created_at < cutoff,
                Redemption.status != "pending_payment",
            )
            .order_by(PaymentAttempt.id)
        )
    )


def _close_open_attempt(attempt: PaymentAttempt) -> str:
    """Close an attempt left open on a redemption no longer waiting for it. The gateway is
    asked first, with no lock (a gateway that does not answer takes 30 s a call); then,
    locked, the attempt and the redemption are read again and what the gateway said is
    recorded only if it still applies."""
    redemption = db.session.get(Redemption, attempt.redemption_id)
    if _paid_by(redemption, attempt.intent_id):
        return _record_closed(redemption, attempt, None)
    gw = gateway()
    intent = gw.retrieve_payment_intent(attempt.intent_id)
    if outcome(intent) in ("failed", "requires_action"):
        if not _let_go(redemption, attempt):
            return "waiting"
        intent = _close_at_gateway(gw, attempt.intent_id)
    if outcome(intent) == "succeeded":
        return "captured" if apply_intent(redemption, intent) == "succeeded" else "refunded"
    if outcome(intent) != "canceled":
        db.session.rollback()
        return "waiting"  # processing: asked again next minute
    return _record_closed(redemption, attempt, intent)


def _let_go(redemption: Redemption, attempt: PaymentAttempt) -> bool:
    """Before an open attempt's intent is cancelled: the redemption stops pointing at it
    (committed, locked, a short transaction with no gateway call), so a charge starting now
    makes a new intent instead of confirming this one as it is being cancelled. False when
    a charge is running on the redemption again: the stale-holds part of the job settles it."""
    _lock(redemption)
    db.session.refresh(attempt)
    if redemption.status == "pending_payment" or attempt.state != "current":
        db.session.rollback()
        return False
    _drop_intent(redemption, attempt.intent_id)
    db.session.commit()
    return True


def _record_closed(redemption: Redemption, attempt: PaymentAttempt, intent: dict | None) -> str:
    """Locked: the attempt paid the redemption (``intent`` None: recorded as its payment)
    or its intent was cancelled and will never charge."""
    _lock(redemption)
    db.session.refresh(attempt)
    if attempt.state != "current":
        db.session.rollback()
        return "closed"  # another path closed it meanwhile
    if _paid_by(redemption, attempt.intent_id):
        move_attempt(attempt, "succeeded")
    elif intent is None or (
        redemption.status == "pending_payment" and redemption.payment_intent_id == intent["id"]
    ):
        db.session.rollback()
        return "waiting"  # a charge is running on it again
    else:
        move_attempt(attempt, "superseded", "closed: no longer waited for")
        _drop_intent(redemption, attempt.intent_id)
    db.session.commit()
    return "closed"


def _refunding_attempts() -> list[int]:
    return list(
        db.session.scalars(
            sa.select(PaymentAttempt.id)
            .where(PaymentAttempt.state == "refunding")
            .order_by(PaymentAttempt.id)
        )
    )


def _finish_refund(attempt: PaymentAttempt) -> str:
    """A refund decided earlier whose call to the gateway did not get through."""
    if attempt.state != "refunding":
        return "closed"
    return "refunded" if _send_refund(attempt) else "closed"


# --------------------------------------------------------------------------- the bureau


def resolve_stuck_payment(redemption: Redemption, *, actor: User, reason: str) -> str:
    """A bureau operator ends a card payment left waiting: the gateway is asked first and
    the redemption settled from its intent (redeemed if the card was charged), otherwise the
    intent is cancelled and the hold given back, so the provider can take cash. All the
    gateway's work comes first, with no lock; then, locked, the settlement and its audit row
    (with the reason) are recorded in one transaction. A refund that settlement decides is
    asked for after the commit. Returns the redemption's new status."""
    reason = (reason or "").strip() if isinstance(reason, str) else ""
    if not reason:
        raise InvalidInput(details={"reason": _l("Say why the payment is resolved by hand.")})
    if redemption.status != "pending_payment":
        raise RedemptionStateError(_NOTHING_TO_RESOLVE)
    intent = None
    if redemption.payment_method == "card":
        gw = gateway()
        try:
            intent = _ensure_intent(redemption, gw)
        except PaymentNotCreated:
            intent = None  # released with the gateway's refusal as its reason
        else:
            intent = _close_at_gateway(gw, intent["id"])
            if outcome(intent) not in ("succeeded", "canceled", "failed"):
                db.session.rollback()
                raise RedemptionStateError(
                    _l(
                        "The payment service is still processing this payment. "
                        "Try again in a few minutes."
                    )
                )
    refunded = _refunded_so_far(intent) if intent is not None else None
    _lock(redemption)  # the gateway's work is done: from here on, only the database
    if intent is not None and outcome(intent) == "succeeded":
        _record_intent(redemption, intent, refunded, release_on_failure=True)
    elif redemption.status == "pending_payment":
        if intent is not None:
            move_attempt(_attempt_for(redemption, intent), "superseded", "resolved by the bureau")
            _drop_intent(redemption, intent["id"])
        redemptions.release(
            redemption, reason=failures.reason("payment.resolved", reason=reason), retry=True
        )
    elif intent is not None:
        db.session.rollback()  # settled meanwhile by another path
        raise RedemptionStateError(_NOTHING_TO_RESOLVE)
    audit.record(
        "redemption.resolve_stuck_payment",
        redemption,
        district_id=redemption.voucher.district_id,
        before={"status": "pending_payment"},
        after={
            "reason": reason,
            "intent": intent["id"] if intent else None,
            "intent_status": intent.get("status") if intent else None,
        },
        actor=actor,
    )
    db.session.commit()
    if intent is not None:
        _send_decided_refund(intent)
    return redemption.status


_NOTHING_TO_RESOLVE = _l("This redemption has no payment waiting, so there is nothing to resolve.")


def reverse(redemption: Redemption, *, actor: User, reason: str, now: datetime | None = None):
    """Reverse a redemption; commits. Everything is decided and recorded first, under the
    locks settlement decides with (``steps.reverse``: the redemption's row, the month FOR
    SHARE, the statement row): settled (its statement approved: a clawback of the subsidy,
    and the provider, who was paid the card co-payment, refunds the elder directly) or not
    (its line leaves an unapproved statement, the subsidy goes back, and the card
    co-payment's refund is decided: the attempt ``refunding``, booked). That is committed,
    and only then is the gateway asked for the refund (``_send_refund``, no lock held, under
    a key naming the intent and the amount). So an approval of the statement either
    committed first (settled: no refund) or finds the line gone: the co-payment is never
    both refunded and owed to the provider. A refund call that does not get through leaves
    the attempt ``refunding``: the every-minute job asks again, under the same key."""
    now = now or now_utc()
    decided = []

    def decide_refund():
        attempt = _attempt_of_intent(redemption.payment_intent_id)
        if attempt is not None:
            move_attempt(attempt, "refunding", "reversed")
            attempt.refund_fen = redemption.copay_fen
            db.session.flush()  # its row now, before the voucher's and the ledger's
        decided.append(attempt)

    refunding = redemptions.reverse(
        redemption, actor=actor, reason=reason, refund_card=decide_refund, now=now
    )
    attempt = decided[0] if decided else None
    db.session.commit()
    if attempt is not None:
        try:
            _send_refund(attempt)
        except GatewayError:
            db.session.rollback()
            log.warning("refund of reversed redemption %s left for the job", redemption.id)
    elif refunding:
        # A card payment recorded with no attempt (none is made today): refunded directly.
        refund = gateway().create_refund(
            redemption.payment_intent_id,
            redemption.copay_fen,
            idempotency_key=_key(redemption, "refund"),
        )
        _lock(redemption)
        redemption.refund_id = refund["id"]
        db.session.commit()


def handle_webhook(payload: bytes, signature_header: str | None) -> str:
    """A gateway event: verified, recorded once, then settled from the intent's current state
    (retrieved, not read from the event, so events arriving out of order cannot undo a later
    attempt). Returns what was done.

    The event only names an intent. Nothing else in it (status, amount, metadata) is read:
    a signature proves the gateway sent the event, not that the platform made the intent,
    and anyone holding the gateway account's key can create an intent with any metadata.
    An intent none of the platform's payment attempts recorded is acknowledged ("not_ours"),
    audited and left alone."""
    event = verify_signature(
        payload, signature_header or "", current_app.config.get("PAYMENT_WEBHOOK_SECRET") or ""
    )
    event_id, event_type = str(event.get("id") or ""), str(event.get("type") or "")
    obj = (event.get("data") or {}).get("object") or {}
    obj_id = obj.get("id") if isinstance(obj, dict) and isinstance(obj.get("id"), str) else None
    if not event_id:
        raise InvalidInput(details={"id": "missing"})
    if db.session.scalar(sa.select(GatewayEvent.id).where(GatewayEvent.event_id == event_id)):
        return "duplicate"
    result = "ignored"
    foreign = None
    if event_type in SETTLING_EVENTS and obj_id:
        # Settling is idempotent, so a resent event does no harm; it is recorded only after
        # settling, so an event that failed half-way (gateway down) is handled when resent.
        result, foreign = _settle_event_intent(obj_id)
    try:
        with db.session.begin_nested():
            db.session.add(
                GatewayEvent(event_id=event_id[:80], type=event_type[:60], object_id=obj_id)
            )
            if foreign is not None:
                _audit_foreign_intent(event_id, event_type, foreign)
    except sa.exc.IntegrityError:
        return "duplicate"
    db.session.commit()
    return result


def _settle_event_intent(intent_id: str) -> tuple[str, dict | None]:
    """Settle the redemption an event's intent belongs to, from the intent retrieved now;
    (what was done, the intent when it is not the platform's).

    The intent belongs to a redemption only through a payment attempt that recorded its id
    when the platform created it (dropped attempts too, so a late event for one of those
    reaches redeem-or-refund and is never attached again). An intent whose id the platform
    never recorded (a crash between the gateway's answer and our commit) is found again by
    the every-minute job, which repeats the create under the attempt's idempotency key;
    never by the metadata, which whoever creates an intent chooses."""
    attempt = _attempt_of_intent(intent_id)
    try:
        intent = gateway().retrieve_payment_intent(intent_id)
    except GatewayRefused:
        # Unknown to the gateway: nothing to settle, and nothing of ours if no attempt.
        return "unknown", None if attempt is not None else {"id": intent_id}
    if attempt is None or intent.get("id") != intent_id:
        log.warning("webhook for intent %s, which no payment attempt made", intent_id)
        return "not_ours", intent
    redemption = db.session.get(Redemption, attempt.redemption_id)
    return apply_intent(redemption, intent, release_on_failure=False), None


def _audit_foreign_intent(event_id: str, event_type: str, intent: dict) -> None:
    """A signed event about an intent the platform did not create: worth a look (a key
    leaked, or someone charging through the account), so it is on the audit trail with what
    the gateway says of the intent."""
    metadata = intent.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    # Chosen by whoever made the intent: kept short.
    metadata = {str(k)[:40]: str(v)[:100] for k, v in list(metadata.items())[:10]}
    audit.record(
        "payment.webhook_foreign_intent",
        object_type="gateway_event",
        object_id=event_id[:80],
        after={
            "event": event_id[:80],
            "type": event_type[:60],
            "intent": str(intent.get("id") or "")[:80],
            "status": intent.get("status"),
            "amount_fen": intent.get("amount"),
            "metadata": metadata,
        },
    )


def _settle_stale_job() -> dict:
    from vouchers.redemption.gateway import card_payments_enabled

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
