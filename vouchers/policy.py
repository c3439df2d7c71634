"""Which voucher policy held on a date, and adding a version (no code change for a new rule)."""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from eldercare import audit
from eldercare.accounts import User
from eldercare.db import db
from eldercare.errors import Conflict, InvalidInput, NotFound
from eldercare.timeutil import local_today
from vouchers.models import VOUCHER_KINDS, VoucherPolicy


def policy_on(kind: str, day: date) -> VoucherPolicy:
    policy = db.session.scalar(
        sa.select(VoucherPolicy)
        .where(
            VoucherPolicy.kind == kind,
            VoucherPolicy.effective_from <= day,
            sa.or_(VoucherPolicy.effective_to.is_(None), VoucherPolicy.effective_to > day),
        )
        .order_by(VoucherPolicy.effective_from.desc())
        .limit(1)
    )
    if policy is None:
        raise NotFound(_l("No voucher policy is in force on %(day)s.", day=day.isoformat()))
    return policy


def add_version(
    kind: str,
    *,
    effective_from: date,
    monthly_cap_fen: int,
    ratio_bp: int,
    in_scope_categories: list[str],
    eligible_levels: list[str],
    evv_max_distance_m: int,
    reversal_window_days: int,
    note: str,
    actor: User,
    known_categories: set[str],
    today: date | None = None,
) -> VoucherPolicy:
    """A bureau approver's new rule from a future date; the version before it ends there."""
    today = today or local_today()
    errors = {}
    if kind not in VOUCHER_KINDS:
        errors["kind"] = _l("Choose the kind of voucher.")
    if effective_from <= today:
        errors["effective_from"] = _l("A new rule starts tomorrow at the earliest.")
    if not _whole(monthly_cap_fen) or not 0 < monthly_cap_fen <= 10_000_000:
        errors["monthly_cap_fen"] = _l("The monthly cap must be more than 0 yuan.")
    if not _whole(ratio_bp) or not 0 < ratio_bp <= 10_000:
        errors["ratio_bp"] = _l("The ratio must be above 0% and at most 100%.")
    unknown = sorted(set(in_scope_categories) - known_categories)
    if unknown or not in_scope_categories:
        errors["in_scope_categories"] = _l("Choose the service categories the voucher covers.")
    if not set(eligible_levels) or not set(eligible_levels) <= {
        "mild",
        "moderate",
        "severe",
        "complete",
    }:
        errors["eligible_levels"] = _l("Choose the assessed levels that receive the voucher.")
    if not _whole(evv_max_distance_m) or not 0 < evv_max_distance_m <= 10_000:
        errors["evv_max_distance_m"] = _l("The visit distance must be 1 to 10,000 metres.")
    if not _whole(reversal_window_days) or not 0 <= reversal_window_days <= 90:
        errors["reversal_window_days"] = _l("The reversal window is 0 to 90 days.")
    if not (note or "").strip():
        errors["note"] = _l("Name the document that sets this rule.")
    if errors:
        raise InvalidInput(details=errors)
    later = db.session.scalar(
        sa.select(VoucherPolicy.id).where(
            VoucherPolicy.kind == kind, VoucherPolicy.effective_from >= effective_from
        )
    )
    if later is not None:
        raise Conflict(_l("A version starting on or after that date already exists."))
    current = db.session.scalar(
        sa.select(VoucherPolicy)
        .where(VoucherPolicy.kind == kind)
        .order_by(VoucherPolicy.effective_from.desc())
        .limit(1)
    )
    if current is not None and (
        current.effective_to is None or current.effective_to > effective_from
    ):
        current.effective_to = effective_from
    version = VoucherPolicy(
        kind=kind,
        effective_from=effective_from,
        monthly_cap_fen=monthly_cap_fen,
        ratio_bp=ratio_bp,
        in_scope_categories=" ".join(sorted(set(in_scope_categories))),
        eligible_levels=" ".join(sorted(set(eligible_levels))),
        evv_max_distance_m=evv_max_distance_m,
        reversal_window_days=reversal_window_days,
        note=note.strip(),
        created_by_user_id=actor.id,
    )
    db.session.add(version)
    audit.record(
        "voucher_policy.add",
        version,
        after={
            "kind": kind,
            "from": effective_from.isoformat(),
            "cap_fen": monthly_cap_fen,
            "ratio_bp": ratio_bp,
        },
    )
    return version


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
