"""The words the marketplace pages show for codes, and reading the form fields only they have.

Only the shape of the input is checked here (is it a number, a position, a time of day); every
business rule stays in the service modules (``providers``, ``documents``, ``staff``), whose
messages the pages show next to the fields they concern. Dates, whole numbers, money and
showing a service's refusal are ``eldercare.forms``, which every domain's pages share.
"""

from __future__ import annotations

import re

from flask_babel import lazy_gettext as _l

from eldercare.db import db
from eldercare.forms import FormErrors, row_id, whole_number
from eldercare.residents import District
from marketplace.providers import WEEKDAYS

PROVIDER_TYPE_LABELS = {
    "care_institution": _l("Care institution"),
    "community_station": _l("Community eldercare station"),
    "home_service": _l("Home-service company"),
}
PROVIDER_STATUS_LABELS = {
    "applied": _l("Applied, waiting for the bureau"),
    "active": _l("Certified"),
    "rejected": _l("Application rejected"),
    "suspended": _l("Suspended"),
    "revoked": _l("Certification revoked"),
}
DOCUMENT_KIND_LABELS = {
    "business_licence": _l("Business licence or registration certificate"),
    "institution_registration": _l("Care institution filing certificate"),
    "fire_safety": _l("Fire safety inspection"),
    "other": _l("Other document"),
}
UNIT_LABELS = {
    "visit": _l("per visit"),
    "hour": _l("per hour"),
    "day": _l("per day"),
    "month": _l("per month"),
    "meal": _l("per meal"),
}
WEEKDAY_LABELS = {
    "mon": _l("Monday"),
    "tue": _l("Tuesday"),
    "wed": _l("Wednesday"),
    "thu": _l("Thursday"),
    "fri": _l("Friday"),
    "sat": _l("Saturday"),
    "sun": _l("Sunday"),
}

_DECIMAL = re.compile(r"^-?\d{1,3}(\.\d{1,10})?$")
_CLOCK = re.compile(r"^\d{2}:\d{2}(:\d{2})?$")


def parse_int(value: str | None, field: str, errors: FormErrors, message) -> int | None:
    """A whole number ("1,200" too), or None when blank; anything else adds ``message``."""
    text = (value or "").strip().replace(",", "")
    if not text:
        return None
    number = whole_number(text)
    if number is None:
        errors.add(field, message)
    return number


def parse_coordinate(value: str | None, field: str, errors: FormErrors) -> float | None:
    """A latitude or longitude in decimal degrees, or None when blank (the service then
    asks for it); the range is the service's to judge."""
    text = (value or "").strip().replace("，", ".").replace(",", ".")
    if not text:
        return None
    if not _DECIMAL.match(text):
        errors.add(field, _l("Enter the position in decimal degrees, for example 41.7741."))
        return None
    return float(text)


def parse_opening_hours(form, errors: FormErrors) -> dict[str, list[list[str]]]:
    """One from-to pair per weekday (``hours_mon_from``/``hours_mon_to``); both blank means
    closed that day. The service checks the times themselves."""
    hours: dict[str, list[list[str]]] = {}
    for day in WEEKDAYS:
        start = (form.get(f"hours_{day}_from") or "").strip()
        end = (form.get(f"hours_{day}_to") or "").strip()
        if not start and not end:
            continue
        if not start or not end:
            errors.add(
                f"hours_{day}",
                _l("Give both the opening and the closing time, or neither for a closed day."),
            )
            continue
        # <input type=time> may send seconds; opening hours are kept to the minute.
        hours[day] = [[t[:5] if _CLOCK.match(t) else t for t in (start, end)]]
    return hours


def opening_hours_values(hours: dict[str, list[list[str]]]) -> dict[str, str]:
    """A provider's opening hours as the form's field values (first interval of each day)."""
    values = {}
    for day, intervals in (hours or {}).items():
        if intervals:
            values[f"hours_{day}_from"], values[f"hours_{day}_to"] = intervals[0]
    return values


def district_by_id(value) -> District | None:
    try:
        district_id = row_id(value)
    except ValueError:
        return None
    return db.session.get(District, district_id)


def districts_by_ids(values) -> list[District]:
    """The districts whose ids were ticked; unknown ids are left out (the service then asks
    for at least one if none is left)."""
    found = []
    for value in values:
        district = district_by_id(value)
        if district is not None and district not in found:
            found.append(district)
    return found
