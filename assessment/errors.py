"""Errors of the assessment domain; each maps to HTTP through eldercare.errors."""

from flask_babel import lazy_gettext as _l

from eldercare.errors import Conflict, DomainError, InvalidInput, PermissionDenied


class InvalidScores(InvalidInput):
    code = "invalid_scores"
    default_message = _l("Some item scores are missing or out of range.")


class AssessorNotQualified(PermissionDenied):
    code = "assessor_not_qualified"
    default_message = _l("This assessor may not record assessments.")


class AgencyNotActive(PermissionDenied):
    code = "agency_not_active"
    default_message = _l("The assessment agency is not certified and active.")


class ConflictOfInterest(PermissionDenied):
    code = "conflict_of_interest"
    default_message = _l(
        "This agency served the elder in the last 12 months and may not assess them."
    )


class InvalidTransition(Conflict):
    code = "invalid_transition"
    default_message = _l("The assessment is not in a state that allows this step.")


class ImportRejected(InvalidInput):
    code = "import_rejected"
    default_message = _l("The file has errors; nothing was imported.")


__all__ = [
    "AgencyNotActive",
    "AssessorNotQualified",
    "ConflictOfInterest",
    "DomainError",
    "ImportRejected",
    "InvalidScores",
    "InvalidTransition",
]
