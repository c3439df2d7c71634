"""Which eligibility policy held on a date."""

from __future__ import annotations

import calendar
from datetime import date

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from assessment.models import EligibilityPolicy
from eldercare import audit, stored_text
from eldercare.accounts import User
from eldercare.db import db
from eldercare.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from eldercare.timeutil import local_today

# The basis the migrations seeded the first version with (free text then); rows are kept as
# they are and shown in the reader's language (eldercare.stored_text).
stored_text.message("policy.pilot_defaults", _l("Shenyang pilot defaults (POLICY.md)"))
stored_text.legacy("Shenyang pilot defaults (POLICY.md)", "policy.pilot_defaults")


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


POLICY_LEVELS = ("mild", "moderate", "severe", "complete")  # "intact" never qualifies
LIMITS = {  # field -> (lowest, highest, message): a rule outside these is a typo
    "min_age": (50, 100, _l("The minimum age must be 50 to 100.")),
    "assessment_validity_months": (
        1,
        60,
        _l("An assessment stays valid 1 to 60 months."),
    ),
    "fee_refund_cap_fen": (0, 100_000, _l("The fee refund cap must be 0 to 1,000 yuan.")),
    "conflict_lookback_months": (0, 60, _l("The conflict look-back must be 0 to 60 months.")),
    "expiry_reminder_days": (0, 180, _l("The expiry reminder must be 0 to 180 days ahead.")),
}


def versions() -> list[EligibilityPolicy]:
    """Every version, newest first."""
    return list(
        db.session.scalars(
            sa.select(EligibilityPolicy).order_by(EligibilityPolicy.effective_from.desc())
        )
    )


def add_version(
    *,
    effective_from: date,
    min_age: int,
    eligible_levels: list[str],
    assessment_validity_months: int,
    fee_refund_cap_fen: int,
    conflict_lookback_months: int,
    expiry_reminder_days: int,
    note: str,
    actor: User,
    today: date | None = None,
) -> EligibilityPolicy:
    """A city approver's new eligibility rule from a future date; the version in force then
    ends there. A version starting on or after that date already exists: refused, since the
    two would overlap (PostgreSQL's exclusion constraint refuses it as well)."""
    today = today or local_today()
    if not actor.has_role("bureau_approver") or actor.district_id is not None:
        raise PermissionDenied(_l("Only the city's approvers change the eligibility policy."))
    values = {
        "min_age": min_age,
        "assessment_validity_months": assessment_validity_months,
        "fee_refund_cap_fen": fee_refund_cap_fen,
        "conflict_lookback_months": conflict_lookback_months,
        "expiry_reminder_days": expiry_reminder_days,
    }
    errors = {}
    if not isinstance(effective_from, date) or effective_from <= today:
        errors["effective_from"] = _l("A new rule starts tomorrow at the earliest.")
    for name, value in values.items():
        low, high, message = LIMITS[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            errors[name] = message
    levels = set(eligible_levels or ())
    if not levels or not levels <= set(POLICY_LEVELS):
        errors["eligible_levels"] = _l("Choose the assessed levels that qualify.")
    if not (note or "").strip():
        errors["note"] = _l("Name the document that sets this rule.")
    if errors:
        raise InvalidInput(details=errors)
    # Adding versions one at a time: lock every version (a handful of rows), then look.
    db.session.execute(sa.select(EligibilityPolicy.id).with_for_update())
    later = db.session.scalar(
        sa.select(EligibilityPolicy.effective_from)
        .where(EligibilityPolicy.effective_from >= effective_from)
        .order_by(EligibilityPolicy.effective_from)
        .limit(1)
    )
    if later is not None:
        raise Conflict(
            _l(
                "A version starting on %(day)s already exists; a new one must start after it.",
                day=later.isoformat(),
            ),
            details={"effective_from": later.isoformat()},
        )
    current = db.session.scalar(
        sa.select(EligibilityPolicy)
        .order_by(EligibilityPolicy.effective_from.desc())
        .limit(1)
        .execution_options(populate_existing=True)
    )
    before_end = None
    if current is not None and (
        current.effective_to is None or current.effective_to > effective_from
    ):
        before_end = current.effective_to
        current.effective_to = effective_from
        db.session.flush()  # the old version ends before the new one starts (no overlap)
    version = EligibilityPolicy(
        effective_from=effective_from,
        min_age=min_age,
        eligible_levels=" ".join(level for level in POLICY_LEVELS if level in levels),
        assessment_validity_months=assessment_validity_months,
        fee_refund_cap_fen=fee_refund_cap_fen,
        conflict_lookback_months=conflict_lookback_months,
        expiry_reminder_days=expiry_reminder_days,
        note=stored_text.typed(note.strip()),  # the approver's words, never a code
        created_by_user_id=actor.id,
    )
    db.session.add(version)
    db.session.flush()
    audit.record(
        "eligibility_policy.add",
        version,
        before={"previous": current.id, "previous_to": before_end and before_end.isoformat()}
        if current is not None
        else None,
        after={"from": effective_from.isoformat(), **values, "levels": version.eligible_levels},
    )
    return version
