"""Errors of the vouchers domain; each maps to HTTP through eldercare.errors."""

from flask_babel import lazy_gettext as _l

from eldercare.errors import Conflict, DomainError, PermissionDenied


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
