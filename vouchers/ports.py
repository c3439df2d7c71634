"""What the vouchers domain tells the other two through the ports they expose.

``assessment`` and ``marketplace`` may not import this package; each asks its questions
through a registered function instead:

- marketplace: which categories a voucher of each kind pays for on a day (``policy.scope_on``,
  the rule check-in enforces), which kind an elder pays with, and the kinds' names;
- marketplace: fraud flags against a provider (``confirmed_findings``): its redemptions a
  bureau check found were not delivered as claimed, each counted once. A redemption counts
  when a flag on it was rejected by a bureau officer (``vouchers.integrity.flags.reject``:
  a confirmed finding of an anomaly rule or of an officer's hold), from the day of the
  decision; or when bureau staff reversed it without a flag (a claim that did not stand up
  when checked some other way), from the day of the reversal. A rejected flag reverses its
  redemption as the bureau, and rejecting one flag closes the redemption's other open flags
  as rejected too: the redemption is still one case, counted once, whatever the number of
  its rejected flags. Cleared flags, open flags and the provider's own reversals count
  nothing.
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
from vouchers.integrity.models import RedemptionFlag
from vouchers.models import Redemption
from vouchers.pool import kinds, policy

BUREAU_ROLES = ("bureau_officer", "bureau_approver")


def _start_of(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=SHANGHAI).astimezone(UTC)


def confirmed_findings(provider_id: int, since: date) -> int:
    """The provider's redemptions found on or after ``since`` not to have been delivered as
    claimed, each once (see the module's docstring); one query."""
    start = _start_of(since)
    bureau_user = sa.select(UserRole.user_id).where(UserRole.role.in_(BUREAU_ROLES))
    rejected = sa.select(RedemptionFlag.id).where(
        RedemptionFlag.redemption_id == Redemption.id, RedemptionFlag.status == "rejected"
    )
    return db.session.scalar(
        sa.select(sa.func.count())
        .select_from(Redemption)
        .where(
            Redemption.provider_id == provider_id,
            sa.or_(
                rejected.where(RedemptionFlag.decided_at >= start).exists(),
                sa.and_(
                    Redemption.status == "reversed",
                    Redemption.reversed_at >= start,
                    Redemption.reversed_by_user_id.in_(bureau_user),
                    ~rejected.exists(),
                ),
            ),
        )
    )


# The earlier name: bureau reversals were the only confirmed findings before the flags.
bureau_reversals = confirmed_findings


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
    register_fraud_flag_source(app, confirmed_findings)
    register_service_history(app, last_served)
