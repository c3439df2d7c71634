"""What the vouchers domain tells the other two through the ports they expose.

``assessment`` and ``marketplace`` may not import this package; each asks its questions
through a registered function instead:

- marketplace: which categories a voucher pays for on a day (the voucher policies in force);
- marketplace: fraud flags against a provider (redemptions the bureau reversed: a claim that
  did not stand up when checked);
- assessment: when a provider last served an elder (a redemption, or a completed booking),
  for the conflict-of-interest rule on agencies that are also providers.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import sqlalchemy as sa
from flask import g

from assessment.conflicts import register_service_history
from eldercare.accounts import UserRole
from eldercare.db import db
from eldercare.timeutil import SHANGHAI, local_today
from marketplace.bookings import last_completed
from marketplace.credit import register_fraud_flag_source
from marketplace.providers import provider_by_credit_code
from marketplace.voucher_scope import register_voucher_scope
from vouchers.models import VOUCHER_KINDS, Redemption, VoucherPolicy

BUREAU_ROLES = ("bureau_officer", "bureau_approver")


def _start_of(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=SHANGHAI).astimezone(UTC)


def in_scope_on(category_code: str, day: date) -> bool:
    """Does a voucher of any kind pay for this category on ``day``?"""
    # One query per request and day, however many categories a search result shows. A new
    # policy version starts tomorrow at the earliest, so a request never sees it change.
    cache = g.setdefault("vouchers_scope_by_day", {})
    if day not in cache:
        policies = db.session.scalars(
            sa.select(VoucherPolicy).where(
                VoucherPolicy.kind.in_(VOUCHER_KINDS),
                VoucherPolicy.effective_from <= day,
                sa.or_(VoucherPolicy.effective_to.is_(None), VoucherPolicy.effective_to > day),
            )
        )
        cache[day] = frozenset().union(*(p.category_set for p in policies))
    return category_code in cache[day]


def bureau_reversals(provider_id: int, since: date) -> int:
    bureau_user = sa.select(UserRole.user_id).where(UserRole.role.in_(BUREAU_ROLES))
    return db.session.scalar(
        sa.select(sa.func.count())
        .select_from(Redemption)
        .where(
            Redemption.provider_id == provider_id,
            Redemption.status == "reversed",
            Redemption.reversed_at >= _start_of(since),
            Redemption.reversed_by_user_id.in_(bureau_user),
        )
    )


def last_served(credit_code: str, resident_id: int, since: date) -> date | None:
    provider = provider_by_credit_code(credit_code)
    if provider is None:
        return None
    redeemed = db.session.scalar(
        sa.select(sa.func.max(Redemption.checked_in_at)).where(
            Redemption.provider_id == provider.id,
            Redemption.resident_id == resident_id,
            Redemption.status.in_(("redeemed", "reversed")),
            Redemption.checked_in_at >= _start_of(since),
        )
    )
    dates = [d for d in (last_completed(provider.id, resident_id, since),) if d is not None]
    if redeemed is not None:
        dates.append(local_today(redeemed))
    return max(dates, default=None)


def register_ports(app) -> None:
    register_voucher_scope(app, in_scope_on)
    register_fraud_flag_source(app, bureau_reversals)
    register_service_history(app, last_served)
