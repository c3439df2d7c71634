"""What the vouchers domain tells the other two through the ports they expose.

``assessment`` and ``marketplace`` may not import this package; each asks its questions
through a registered function instead:

- marketplace: which categories a voucher of each kind pays for on a day (``policy.scope_on``,
  the rule check-in enforces), which kind an elder pays with, and the kinds' names;
- marketplace: fraud flags against a provider (redemptions the bureau reversed: a claim that
  did not stand up when checked);
- assessment: when a provider last served an elder (a redemption, or a completed booking),
  for the conflict-of-interest rule on agencies that are also providers.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import sqlalchemy as sa

from assessment.conflicts import register_service_history
from eldercare.accounts import UserRole
from eldercare.db import db
from eldercare.timeutil import SHANGHAI, local_today
from marketplace.bookings import last_completed
from marketplace.credit import register_fraud_flag_source
from marketplace.providers import provider_by_credit_code
from marketplace.voucher_scope import VoucherScopeSource, register_voucher_scope
from vouchers.models import Redemption
from vouchers.pool import kinds, policy

BUREAU_ROLES = ("bureau_officer", "bureau_approver")


def _start_of(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=SHANGHAI).astimezone(UTC)


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
    register_voucher_scope(
        app,
        VoucherScopeSource(
            scope_on=policy.scope_on,
            kind_held=kinds.kind_held_on,
            label=lambda kind: str(kinds.KIND_LABELS.get(kind, kind)),
        ),
    )
    register_fraud_flag_source(app, bureau_reversals)
    register_service_history(app, last_served)
