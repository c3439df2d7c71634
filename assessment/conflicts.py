"""The conflict-of-interest rule: an agency that is also a service provider may not assess
an elder it served within the policy's look-back period.

Who served whom is known to the marketplace (bookings) and the vouchers (redemptions), which
this package must not import. They register a *service-history source* instead:
``source(provider_credit_code, resident_id, since) -> last service date or None``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, timedelta

from flask import current_app

from assessment.errors import ConflictOfInterest
from assessment.models import Agency
from assessment.policy import add_months, rules_for_assessment

ServiceHistorySource = Callable[[str, int, date], date | None]
_EXTENSION = "assessment.service_history_sources"


def register_service_history(app, source: ServiceHistorySource) -> None:
    app.extensions.setdefault(_EXTENSION, []).append(source)


def last_served(credit_code: str, resident_id: int, since: date) -> date | None:
    dates = [
        served
        for source in current_app.extensions.get(_EXTENSION, [])
        if (served := source(credit_code, resident_id, since)) is not None
    ]
    return max(dates, default=None)


def check_conflict_of_interest(agency: Agency, resident_id: int, on: date) -> None:
    if not agency.credit_code:
        return  # not also a provider: nothing to conflict with
    months = rules_for_assessment(on).conflict_lookback_months
    since = add_months(on, -months) + timedelta(days=1)
    served = last_served(agency.credit_code, resident_id, since)
    if served is not None:
        raise ConflictOfInterest(details={"last_served_on": served.isoformat()})
