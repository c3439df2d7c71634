"""Reading the assessment pages' form fields, and the words the pages show for codes.

Only the shape of the input is checked here (is it a date, a number, an amount of money);
every business rule stays in the service modules, which the views call.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time
from decimal import Decimal

from flask_babel import lazy_gettext as _l

from eldercare.errors import DomainError
from eldercare.timeutil import SHANGHAI

TYPE_LABELS = {
    "first": _l("First assessment"),
    "routine": _l("Routine re-assessment (validity ending)"),
    "immediate": _l("Immediate re-assessment (condition changed)"),
    "reassessment": _l("Re-assessment on dispute (by another agency)"),
    "other": _l("Other"),
}
STATUS_LABELS = {
    "applied": _l("Applied, waiting for an agency"),
    "assigned": _l("Assigned to an agency, visit not yet arranged"),
    "scheduled": _l("Visit arranged"),
    "recorded": _l("Recorded, waiting for the bureau's review"),
    "approved": _l("Approved"),
    "returned": _l("Returned to the agency for correction"),
    "cancelled": _l("Cancelled"),
}
VIA_LABELS = {
    "self": _l("The elder"),
    "family_agent": _l("A family agent"),
    "bureau": _l("The bureau, on the elder's behalf"),
    "agency_import": _l("Imported from the agency"),
}
ADJUSTMENT_LABELS = {
    "coma": _l("In a coma: the level is complete loss"),
    "psychiatric_diagnosis": _l("Psychiatric diagnosis (ICD-10 F00–F99): one level higher"),
    "care_risk_events": _l("Two or more care-risk events in 30 days: one level higher"),
}
AGENCY_STATUS_LABELS = {
    "active": _l("Active"),
    "suspended": _l("Suspended"),
    "revoked": _l("Revoked"),
}
# What the bureau may decide about an agency in each status (the service has the last word).
AGENCY_ACTIONS = {
    "active": (("suspended", _l("Suspend")), ("revoked", _l("Revoke"))),
    "suspended": (("active", _l("Reinstate")), ("revoked", _l("Revoke"))),
    "revoked": (),
}

_AMOUNT = re.compile(r"^\d{1,7}(\.\d{1,2})?$")


class FormErrors(dict):
    """Field name -> message, for a form whose input could not even be read."""

    def add(self, field: str, message) -> None:
        self.setdefault(field, str(message))


def parse_date(value: str | None, field: str, errors: FormErrors, *, required=True) -> date | None:
    text = (value or "").strip()
    if not text:
        if required:
            errors.add(field, _l("Enter a date."))
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        errors.add(field, _l("Enter a date as year-month-day, for example 2025-07-01."))
        return None


def parse_local_datetime(day_text: str | None, time_text: str | None, errors: FormErrors):
    """A date and a clock time typed in Shenyang, as an aware datetime."""
    day = parse_date(day_text, "date", errors)
    text = (time_text or "").strip()
    try:
        clock = time.fromisoformat(text) if text else None
    except ValueError:
        clock = None
    if clock is None:
        errors.add("time", _l("Enter a time such as 09:30."))
    if day is None or clock is None:
        return None
    return datetime.combine(day, clock.replace(tzinfo=None), tzinfo=SHANGHAI)


def parse_yuan(value: str | None, field: str, errors: FormErrors) -> int | None:
    """An amount typed in yuan ("80", "80.5", "80.50") as integer fen; anything else is refused.

    Decimal, not float: 0.1 + 0.2 yuan must be exactly 30 fen.
    """
    text = (value or "").strip().replace(",", "").replace("，", "")
    if text.startswith(("¥", "￥")):
        text = text[1:].strip()
    if not text:
        errors.add(field, _l("Enter the amount in yuan, for example 80 or 80.50."))
        return None
    if not _AMOUNT.match(text):
        errors.add(field, _l("Enter the amount in yuan with at most two decimals, e.g. 80.50."))
        return None
    return int(Decimal(text) * 100)  # exact: the pattern allows at most two decimals


def whole_number_or_raw(value: str | None):
    """An integer when the text is one, otherwise the text itself: the scoring service then
    names the field and its allowed range in its own words."""
    text = (value or "").strip()
    if re.fullmatch(r"-?\d{1,6}", text):
        return int(text)
    return text or None


def split_codes(value: str | None) -> list[str]:
    """ICD-10 codes typed with spaces, commas or semicolons between them."""
    return [code for code in re.split(r"[\s,;，；、]+", value or "") if code]


def field_errors(error: DomainError, fields, *, message_fields=()) -> dict[str, str]:
    """Place a service error's details next to the form's fields.

    ``details`` mostly maps a field to what is wrong with it; for some fields (a diagnosis
    code, an assessor's name) it holds the offending value and the error's message says
    what is wrong, so those fields show the message.
    """
    placed: dict[str, str] = {}
    for key, value in (error.details or {}).items():
        if key in message_fields:
            placed[key] = str(error.message)
        elif key in fields:
            placed[key] = str(value)
    return placed


def yuan(fen: int | None) -> str:
    """Integer fen shown as yuan with two decimals: 8000 -> ¥80.00."""
    if fen is None:
        return "—"
    return f"¥{Decimal(fen) / 100:,.2f}"
