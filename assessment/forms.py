"""The words the assessment pages show for codes, and reading the form fields only they have.

Only the shape of the input is checked here (is it a date and a time, a list of codes); every
business rule stays in the service modules, which the views call. Dates, whole numbers, money
and showing a service's refusal are ``eldercare.forms``, which every domain's pages share.
"""

from __future__ import annotations

import re
from datetime import datetime, time

from flask_babel import lazy_gettext as _l

from eldercare.forms import FormErrors, parse_date
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


def split_codes(value: str | None) -> list[str]:
    """ICD-10 codes typed with spaces, commas or semicolons between them."""
    return [code for code in re.split(r"[\s,;，；、]+", value or "") if code]
