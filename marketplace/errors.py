"""Errors of the marketplace; each maps to HTTP through eldercare.errors."""

from flask_babel import lazy_gettext as _l

from eldercare.errors import Conflict, PermissionDenied


class ProviderNotCertified(PermissionDenied):
    code = "provider_not_certified"
    default_message = _l("This provider is not certified and active, so it can accept nothing.")


class InvalidTransition(Conflict):
    code = "invalid_transition"
    default_message = _l("This is not possible in the current state; reload and try again.")


class CapacityFull(Conflict):
    code = "capacity_full"
    default_message = _l("This time is fully booked; please choose another time.")
