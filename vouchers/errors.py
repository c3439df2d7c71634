"""Errors of the vouchers domain; each maps to HTTP through eldercare.errors."""

from flask_babel import lazy_gettext as _l

from eldercare.errors import Conflict


class InsufficientFunds(Conflict):
    code = "insufficient_funds"
    default_message = _l("There is not enough money in the account for this movement.")
