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
