"""Why a payment did not go through, stored as a code and said in the reader's language.

A redemption's ``failure_reason`` (and its release's journal memo) is written by whichever
path gave the hold back (a declined card, a refused create, a timeout, the bureau) and read
later by provider staff, the bureau and the API, in their own languages: it stores a code of
``eldercare.stored_text`` with its parameters (the gateway's decline code, the bureau's typed
reason). Gateway decline codes (Stripe's ``decline_code``) have words in both languages;
any other code reads "declined by the card's bank (<code>)".
"""

from __future__ import annotations

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from eldercare import stored_text

REASON_LENGTH = 200  # redemptions.failure_reason

# Stripe's decline codes a card holder can act on, in words the staff can say to the elder.
DECLINE_REASONS = {
    "insufficient_funds": _l("there is not enough money on the card"),
    "expired_card": _l("the card has expired"),
    "incorrect_cvc": _l("the security code is wrong"),
    "processing_error": _l("the bank could not process it; please try again"),
    "card_declined": _l("the bank refused the payment"),
    "generic_decline": _l("the bank refused the payment"),
    "do_not_honor": _l("the bank refused the payment"),
    "lost_card": _l("the card was reported lost; the bank refused it"),
    "stolen_card": _l("the card was reported stolen; the bank refused it"),
    "incorrect_number": _l("the card number is wrong"),
    "invalid_expiry_year": _l("the expiry date is wrong"),
    "invalid_expiry_month": _l("the expiry date is wrong"),
    "card_not_supported": _l("this card cannot pay here"),
    "currency_not_supported": _l("this card cannot pay here"),
    "card_velocity_exceeded": _l("the card's limit has been reached"),
    "authentication_required": _l("the bank asks the card holder to confirm the payment"),
    "try_again_later": _l("the bank could not process it; please try again"),
}
GENERIC_DECLINE = _l("the bank refused the payment")


def decline_reason(code: str | None):
    """The words for a gateway decline code (lazy, in the reader's language)."""
    if not code or code in ("declined", "failed"):
        return GENERIC_DECLINE
    if code in DECLINE_REASONS:
        return DECLINE_REASONS[code]
    return _l("declined by the card's bank (%(code)s)", code=code)


def _declined(params) -> str:
    return _("card declined: %(reason)s", reason=str(decline_reason(params.get("decline"))))


def _failed(params) -> str:
    return _("payment failed: %(reason)s", reason=str(decline_reason(params.get("decline"))))


stored_text.message("payment.card_declined", _declined)
stored_text.message("payment.failed", _failed)
stored_text.message(
    "payment.not_created", _l("the payment service refused to start the payment (%(problem)s)")
)
stored_text.message("payment.cancelled", _l("payment cancelled"))
stored_text.message("payment.timed_out", _l("payment timed out"))
stored_text.message("payment.stale_hold", _l("the hold was left unpaid and given back"))
stored_text.message("payment.refunded", _l("charge refunded: %(reason)s"))
stored_text.message("payment.resolved", _l("resolved by the bureau: %(reason)s"))
# Why a charge could not pay its redemption and is refunded (inside payment.refunded).
stored_text.message("refund.dropped_attempt", _l("an earlier attempt was charged"))
stored_text.message("refund.currency", _l("charged in another currency"))
stored_text.message("refund.amount", _l("charged a different amount"))
stored_text.message("refund.partly_refunded", _l("partly refunded at the payment service"))
stored_text.message("refund.after_end", _l("charged after the redemption ended"))


def was_declined(stored: str | None) -> bool:
    """Whether a stored failure reason says the card was refused (the elder's history tells a
    declined card from other payments that did not go through). Rows written before reasons
    were codes start with the English words."""
    decoded = stored_text.decode(stored)
    if decoded is not None:
        return decoded[0] == "payment.card_declined"
    return bool(stored) and stored.startswith("card declined")


def reason(code: str, **params) -> str:
    """The stored failure reason of ``code``, fitted to the column."""
    return stored_text.encode(code, limit=REASON_LENGTH, **params)
