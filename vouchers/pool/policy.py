"""Which voucher policy held on a date, and adding a version (no code change for a new rule).

The rule for a version that begins mid-month (issue 10, item 2): the ratio, the scope and
the other rules of a service (home-visit distance, reversal window) are those of the version
in force on the day of the service; the monthly cap is the voucher's face value, fixed by
the version in force on the day the voucher was issued, and never changes afterwards. Two
versions of one kind are never in force on the same day: refused here before any flush
(both databases) and, on PostgreSQL, by an exclusion constraint as well.
"""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from flask import g, has_request_context
from flask_babel import lazy_gettext as _l
from sqlalchemy.orm import Session

from eldercare import audit, stored_text
from eldercare.accounts import User
from eldercare.db import db
from eldercare.errors import Conflict, InvalidInput, NotFound
from eldercare.timeutil import local_today
from vouchers.models import VOUCHER_KINDS, Voucher, VoucherPolicy

_SCOPE_CACHE = "vouchers_scope_by_day"

# The basis the migrations seeded the first version with (free text then); rows are kept as
# they are and shown in the reader's language (eldercare.stored_text).
stored_text.message("policy.pilot_defaults", _l("Shenyang pilot defaults (POLICY.md)"))
stored_text.legacy("Shenyang pilot defaults (POLICY.md)", "policy.pilot_defaults")

OVERLAP_MESSAGE = _l(
    "Two versions of one voucher policy cannot be in force on the same day: the earlier "
    "version must end on the day the later one starts."
)


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


def scope_on(day: date) -> dict[str, frozenset[str]]:
    """What a voucher of each kind pays for on ``day``: the categories of its kind's version
    in force that day (a kind with none in force pays for nothing, and is absent).

    The one answer to "does the voucher pay for this?": check-in refuses what it leaves out
    (``pays_for``), the scan page offers only what it lists, the kind's description on the
    elder's page is written from it, and the marketplace's "voucher accepted" badge and
    filter ask it through the port (``vouchers.ports``). One statement for every kind, kept
    for the rest of a request (a new version starts tomorrow at the earliest, and a flush of
    a version forgets it); outside a request it is read each time."""
    cache = g.setdefault(_SCOPE_CACHE, {}) if has_request_context() else {}
    if day not in cache:
        policies = db.session.scalars(
            sa.select(VoucherPolicy).where(
                VoucherPolicy.kind.in_(VOUCHER_KINDS),
                VoucherPolicy.effective_from <= day,
                sa.or_(VoucherPolicy.effective_to.is_(None), VoucherPolicy.effective_to > day),
            )
        ).all()
        # Two versions of a kind are never in force on one day (refused before a flush).
        # The versions stay referenced with the answer: a voucher's own version, when it is
        # one of them and not loaded yet, then comes from the session (``rules_for``,
        # ``shown_rules``) without a statement.
        cache[day] = ({p.kind: p.category_set for p in policies}, policies)
    return cache[day][0]


def pays_for(kind: str, category_code: str, day: date) -> bool:
    """Does a voucher of ``kind`` pay part of a service of this category on ``day``?"""
    return category_code in scope_on(day).get(kind, frozenset())


def rules_for(voucher: Voucher, day: date) -> VoucherPolicy:
    """The rules for a service on ``day`` with this voucher: the version of its kind in
    force that day (the voucher's own ``policy`` only fixed its face value)."""
    if voucher.policy.effective_from <= day and (
        voucher.policy.effective_to is None or voucher.policy.effective_to > day
    ):
        return voucher.policy
    return policy_on(voucher.kind, day)


def shown_rules(voucher: Voucher, day: date) -> VoucherPolicy:
    """The rules a page shows for a service today: ``rules_for``, or the voucher's own
    version when none is in force (pricing then refuses with the reason)."""
    try:
        return rules_for(voucher, day)
    except NotFound:
        return voucher.policy


def _overlap(a: VoucherPolicy, b: VoucherPolicy) -> bool:
    a_ends_after_b_starts = a.effective_to is None or a.effective_to > b.effective_from
    b_ends_after_a_starts = b.effective_to is None or b.effective_to > a.effective_from
    return a_ends_after_b_starts and b_ends_after_a_starts


@sa.event.listens_for(Session, "before_flush")
def _refuse_overlapping_versions(session: Session, flush_context, instances) -> None:
    """No two versions of one kind in force on the same day, checked as the flush would
    leave them (SQLite has no exclusion constraint; on PostgreSQL this gives the clear
    message before the constraint would)."""
    changed = [
        obj
        for obj in (*session.new, *session.dirty)
        if isinstance(obj, VoucherPolicy) and obj.kind and obj.effective_from
    ]
    if not changed:
        return
    if has_request_context():
        g.pop(_SCOPE_CACHE, None)  # scope_on reads the versions again after this flush
    with session.no_autoflush:
        for kind in {obj.kind for obj in changed}:
            # Rows already in the session come back as the same objects, with the values
            # this flush is about to write.
            stored = session.scalars(sa.select(VoucherPolicy).where(VoucherPolicy.kind == kind))
            versions = {*stored, *(obj for obj in session.new if isinstance(obj, VoucherPolicy))}
            versions = sorted(
                (v for v in versions if v.kind == kind and v not in session.deleted),
                key=lambda v: v.effective_from,
            )
            for earlier, later in zip(versions, versions[1:], strict=False):
                if _overlap(earlier, later):
                    raise Conflict(OVERLAP_MESSAGE)


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
        note=stored_text.typed(note.strip()),  # the approver's words, never a code
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
