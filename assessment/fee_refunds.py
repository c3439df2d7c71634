"""Assessment fees the pool owes back (POLICY: up to the cap, for a result of moderate or
worse). The approval writes who is owed what (``owe_for``); the bureau lists them by month
and district (``refunds_query``). Paying them is settlement's job: it reads these rows and
marks them paid."""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from assessment.models import Assessment, FeeRefund
from eldercare.db import db
from eldercare.errors import InvalidInput
from eldercare.residents import District, Resident
from eldercare.timeutil import in_date_range


def owe_for(case: Assessment, *, on: date) -> FeeRefund | None:
    """The refund an approved result earns, in the approval's transaction (None when its
    refundable part is nothing). A unique assessment id keeps anyone from being owed twice."""
    if case.refundable_fee_fen <= 0:
        return None
    refund = FeeRefund(
        assessment_id=case.id,
        resident_id=case.resident_id,
        district_id=case.resident.district_id,
        amount_fen=case.refundable_fee_fen,
        owed_on=on,
        status="owed",
    )
    db.session.add(refund)
    return refund


def month_bounds(month: date) -> tuple[date, date]:
    after = date(month.year + (month.month == 12), month.month % 12 + 1, 1)
    return month, after


def _filtered(statement, month: date | None, district_id: int | None):
    if month is not None:
        start, end = month_bounds(month)
        statement = statement.where(FeeRefund.owed_on >= start, FeeRefund.owed_on < end)
    if district_id is not None:
        statement = statement.where(FeeRefund.district_id == district_id)
    return statement


def refunds_query(*, month: date | None = None, district_id: int | None = None):
    """Refunds with their elder, district and assessment, filtered; the caller scopes to
    the user's district (``FeeRefund.district_id``) and orders by ``REFUND_ORDER``."""
    statement = (
        sa.select(FeeRefund, Resident, District, Assessment)
        .join(Resident, Resident.id == FeeRefund.resident_id)
        .join(District, District.id == FeeRefund.district_id)
        .join(Assessment, Assessment.id == FeeRefund.assessment_id)
    )
    return _filtered(statement, month, district_id)


def totals_query(*, month: date | None = None, district_id: int | None = None):
    """How many refunds match and their sum in fen (same filters, same scoping)."""
    statement = sa.select(
        sa.func.count(FeeRefund.id), sa.func.coalesce(sa.func.sum(FeeRefund.amount_fen), 0)
    )
    return _filtered(statement, month, district_id)


REFUND_ORDER = (FeeRefund.owed_on, FeeRefund.id)


def parse_month(text: str | None) -> date | None:
    """A ``YYYY-MM`` filter as the month's first day; blank is no filter; anything else is
    refused with a reason."""
    value = (text or "").strip()
    if not value:
        return None
    try:
        year, month = value.split("-")
        if len(year) != 4 or len(month) != 2:
            raise ValueError
        first = date(int(year), int(month), 1)
        if not in_date_range(first):  # 9999-12 has no month after it to end the filter
            raise ValueError
        return first
    except ValueError:
        raise InvalidInput(
            details={"month": _l("Enter the month as year-month, for example 2025-07.")}
        ) from None


def district_by_code(code: str | None) -> District | None:
    """The ``district`` filter: blank is no filter; an unknown code is refused."""
    value = (code or "").strip()
    if not value:
        return None
    district = db.session.scalar(sa.select(District).where(District.code == value))
    if district is None:
        raise InvalidInput(details={"district": _l("No district has this code.")})
    return district
