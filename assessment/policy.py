"""Which eligibility policy held on a date."""

from __future__ import annotations

import calendar
from datetime import date

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from assessment.models import EligibilityPolicy
from eldercare.db import db
from eldercare.errors import NotFound


def add_months(day: date, months: int) -> date:
    """Same day-of-month ``months`` later, clamped to the month's end (31 Jan + 1 = 28/29 Feb)."""
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def policy_on(day: date) -> EligibilityPolicy:
    policy = db.session.scalar(
        sa.select(EligibilityPolicy)
        .where(
            EligibilityPolicy.effective_from <= day,
            sa.or_(EligibilityPolicy.effective_to.is_(None), EligibilityPolicy.effective_to > day),
        )
        .order_by(EligibilityPolicy.effective_from.desc())
        .limit(1)
    )
    if policy is None:
        raise NotFound(_l("No eligibility policy is in force on %(day)s.", day=day.isoformat()))
    return policy


def rules_for_assessment(day: date) -> EligibilityPolicy:
    """The rules a result made on ``day`` is recorded and approved under (its validity, the
    fee refund, the conflict look-back): the version in force that day or, for a result made
    before the programme began (the pilot inherited the first half of 2025's assessments),
    the programme's first version. Recording needs no policy in force; deciding
    eligibility on a date does (``policy_on``)."""
    first = db.session.scalar(
        sa.select(EligibilityPolicy).order_by(EligibilityPolicy.effective_from).limit(1)
    )
    if first is not None and day < first.effective_from:
        return first
    return policy_on(day)
