"""Errors of the vouchers domain; each maps to HTTP through eldercare.errors."""

from flask_babel import lazy_gettext as _l

from eldercare.errors import Conflict, DomainError, InvalidInput, PermissionDenied


class InsufficientFunds(Conflict):
    code = "insufficient_funds"
    default_message = _l("There is not enough money in the account for this movement.")


# -- redemption refusals: each says why, so staff can tell the elder what to do


class VoucherNotUsable(Conflict):
    code = "voucher_not_usable"
    default_message = _l("This voucher cannot be used.")


class ElderNotEligible(Conflict):
    code = "elder_not_eligible"
    default_message = _l("The elder is not eligible for the subsidy today.")


class OutOfScope(Conflict):
    code = "out_of_scope"
    default_message = _l("The voucher does not pay for this service.")


class StaffNotQualified(PermissionDenied):
    code = "staff_not_qualified"
    default_message = _l(
        "This service needs a valid caregiver certificate, and your account has none on record."
    )


class TooFarAway(Conflict):
    code = "check_in_too_far"
    default_message = _l("The check-in is too far from where the service is delivered.")


class InsufficientBalance(Conflict):
    code = "insufficient_balance"
    default_message = _l("The voucher has less left than this subsidy; check the amount again.")


class RedemptionStateError(Conflict):
    code = "redemption_state"
    default_message = _l("This redemption cannot do that in its present state.")


class ReversalWindowClosed(Conflict):
    code = "reversal_window_closed"
    default_message = _l("The time allowed for reversing this redemption has passed.")


# -- the card payment gateway (vouchers/gateway.py, vouchers/webhooks.py)


class GatewayError(DomainError):
    """The gateway refused a request we should not have sent (bad key, unknown intent...)."""

    status = 502
    code = "payment_gateway_error"
    default_message = _l("The payment service refused the request; nothing more was charged.")


class GatewayUnavailable(GatewayError):
    """Network down, timeouts or 5xx after the retries: the outcome of the last call is unknown
    only to us; the idempotency key lets the same call be sent again safely later."""

    status = 503
    code = "payment_gateway_unavailable"
    default_message = _l(
        "The payment service cannot be reached; nothing was charged yet. Try again or take cash."
    )


class GatewayRefused(GatewayError):
    """A 4xx answer other than "busy" (409 ``idempotency_key_in_use``, 429): the gateway
    refused the request itself and did nothing under its idempotency key, so sending it
    again would be refused again. A refused create means no payment intent exists."""


class PaymentNotCreated(GatewayRefused):
    """The gateway refused to create the payment intent: no intent exists, and the subsidy
    held for it has been given back."""

    code = "payment_not_created"
    default_message = _l(
        "The payment service refused to start this card payment; nothing was charged and the "
        "voucher amount was given back. Try again, or take cash."
    )


class CardDeclined(GatewayError):
    status = 402
    code = "card_declined"
    default_message = _l("The card was declined.")

    def __init__(self, reason, *, decline_code: str | None = None, details: dict | None = None):
        super().__init__(_l("The card was declined: %(reason)s", reason=reason), details=details)
        self.decline_code = decline_code


class BadSignature(DomainError):
    """A webhook whose Stripe-Signature does not prove it came from the gateway, recently."""

    status = 400
    code = "bad_signature"
    default_message = _l("The notification's signature is not valid.")


# -- QR codes and printed cards (vouchers/qr_tokens.py, vouchers/cards.py): each refusal tells
# the provider what to ask the elder for


class TokenForged(InvalidInput):
    code = "qr_code_invalid"
    default_message = _l("This code is not valid. Ask the elder to show the code again.")


class TokenExpired(InvalidInput):
    code = "qr_code_expired"
    default_message = _l("This code has expired. Ask the elder to refresh the code on the phone.")


class TokenReplayed(Conflict):
    code = "qr_code_used"
    default_message = _l("This code has already been used. Ask the elder for a new code.")


class VoucherRevoked(Conflict):
    code = "voucher_revoked"
    default_message = _l(
        "This voucher has been cancelled and cannot be used. The family can ask the civil "
        "affairs bureau why."
    )


class VoucherExpired(Conflict):
    code = "voucher_expired"
    default_message = _l(
        "This voucher was for another month and cannot be used now. A voucher is valid only "
        "in its own month."
    )


class NoVoucherThisMonth(Conflict):
    code = "no_voucher_this_month"
    default_message = _l("The elder has no voucher for this month.")


class CardNotValid(InvalidInput):
    code = "card_not_valid"
    default_message = _l(
        "This card is not valid. It may have been replaced by a new card; ask the family."
    )


class CardLocked(PermissionDenied):
    code = "card_locked"
    default_message = _l(
        "This card is locked for today after 5 wrong PINs. It works again tomorrow, or the "
        "family can reset the PIN."
    )


class WrongPin(InvalidInput):
    code = "wrong_pin"

    def __init__(self, attempts_left: int):
        message = _l("The PIN is not right. Tries left today: %(left)d.", left=attempts_left)
        super().__init__(message, details={"pin": message})
        self.attempts_left = attempts_left
