"""The anomaly rules as policy data a bureau approver changes: versions with effective dates.

Each rule (``vouchers.integrity.rules.DEFAULTS``: its code and the shape of its thresholds)
has versions (``AnomalyRule`` rows): thresholds (``params``), on or off (``enabled``), in
force from ``effective_from`` (inclusive) to ``effective_to`` (exclusive, open-ended when
null). The engine (``anomalies.versions_between``) judges each redemption by the version in
force on its service day.

- ``history()``: every rule's versions, newest first (for the page and the API).
- ``in_force(code, day)``: the version in force on a day, or None.
- ``add_version(code, ...)``: a bureau approver's new version from a future day (tomorrow
  at the earliest, Shanghai); the version in force before it ends that day (as voucher
  policies, ``vouchers.pool.policy.add_version``). A version already starting on or after
  that day is refused (``Conflict``): the history only grows at its end. Audited
  (``anomaly_rule.add_version``).
- ``clean_params(code, raw)``: the thresholds checked against the default's shape (the same
  keys, whole numbers where the default is whole, each in a sane range; for
  ``category_frequency`` the limits name known service categories, each per ``day`` or
  ``month``, at most 1..100). Errors are keyed by the form's field names
  (``param_<key>``, ``limit_<category>_per`` / ``limit_<category>_max``) and worded in the
  reader's language; nothing is changed.

Concurrency: two approvers adding a version of one rule at once. The rule's version rows are
locked first (SELECT … FOR UPDATE, in effective_from order); the second waits for the first
to commit, then reads the history again in a new statement (READ COMMITTED: the locking one
does not see rows added meanwhile), so it either finds the first's version on or after its
own day (Conflict, nothing changed) or ends the first's version at its own day. The unique
constraint on (code, effective_from) backs it up.
"""

from __future__ import annotations

from datetime import date, timedelta

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from eldercare import audit
from eldercare.accounts import User
from eldercare.db import db
from eldercare.errors import Conflict, InvalidInput
from eldercare.timeutil import local_today
from vouchers.integrity.models import AnomalyRule
from vouchers.integrity.rules import DEFAULTS

NOTE_MAX = 2000
CATEGORY_PERIODS = ("day", "month")
CATEGORY_MAX = (1, 100)

# (smallest, largest) of each threshold; a whole number where the default is one.
RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "staff_overlap": {"min_overlap_minutes": (1, 720)},
    "impossible_travel": {"max_speed_kmh": (1, 1000)},
    "far_check_in": {"distance_m": (50, 100_000)},
    "visit_length": {"min_minutes": (0, 1440), "max_minutes": (1, 1440)},
    "daily_frequency": {"max_per_day": (1, 100)},
    "at_cap": {"min_redemptions": (1, 10_000), "times_peers": (1, 100), "min_share_pct": (1, 100)},
    "shared_device": {"max_elders_per_day": (1, 1000)},
    "outside_hours": {"grace_minutes": (0, 720)},
    "review_sample": {"share_bp": (0, 10_000)},
    "high_value": {"subsidy_fen": (1, 100_000_000)},
}

# What each threshold means, in the reader's language (the page's field labels).
PARAM_LABELS = {
    "min_overlap_minutes": _l("Overlap that counts, in minutes"),
    "max_speed_kmh": _l("Fastest believable travel between visits, km/h"),
    "distance_m": _l(
        "Farthest check-in from the provider's premises, in metres (home visits: the voucher "
        "policy's distance)"
    ),
    "min_minutes": _l("Shortest believable visit, in minutes"),
    "max_minutes": _l("Longest believable visit, in minutes"),
    "max_per_day": _l("Most redemptions of one elder in a day"),
    "min_redemptions": _l("Fewest redemptions in a month before a provider is compared"),
    "times_peers": _l("How many times its peers' share counts as unusual"),
    "min_share_pct": _l("Share of its vouchers spent to the cap, in percent"),
    "max_elders_per_day": _l("Most elders scanned on one device in a day"),
    "grace_minutes": _l("Minutes outside opening hours tolerated"),
    "share_bp": _l("Share drawn for review, in hundredths of a percent (500 = 5%)"),
    "subsidy_fen": _l("Subsidy above which a redemption is checked, in fen (30000 = 300 yuan)"),
}
PERIOD_LABELS = {"day": _l("per day"), "month": _l("per month")}

UNKNOWN_RULE = _l("Choose one of the anomaly rules.")
TOO_EARLY = _l("A new version starts tomorrow at the earliest.")
# A mistaken far-off date would block every nearer change (a later version is refused while
# one exists), and nothing withdraws a version: a year ahead is as far as a rule is planned.
HORIZON_DAYS = 366
TOO_LATE = _l("A new version starts within a year from today.")
NOTE_NEEDED = _l("Say why the rule changes (the document or decision); it is kept with it.")
NOTE_TOO_LONG = _l("Keep the note under 2000 characters.")
LATER_EXISTS = _l(
    "A version of this rule starting on or after that date already exists; nothing was "
    "changed. Choose a later date."
)


def _number_message(low, high, whole: bool):
    if whole:
        return _l("Enter a whole number from %(low)s to %(high)s.", low=low, high=high)
    return _l("Enter a number from %(low)s to %(high)s.", low=low, high=high)


def _number(value, *, whole: bool) -> float | int | None:
    """A number typed in a form ("12") or sent as one; None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return None if whole or value != value else value  # NaN is not a threshold
    text = value.strip() if isinstance(value, str) else ""
    if not text or len(text) > 12 or not text.isascii():
        return None
    try:
        number = int(text) if whole else float(text)
    except ValueError:
        return None
    if not whole and number in (float("inf"), float("-inf")):
        return None
    return number


def known_categories() -> set[str]:
    from marketplace.models import ServiceCategory

    return set(db.session.scalars(sa.select(ServiceCategory.code)))


def clean_params(code: str, raw: dict) -> dict:
    """The thresholds of a new version of ``code``, checked; InvalidInput (every problem,
    keyed by form field) otherwise."""
    if code not in DEFAULTS:
        raise InvalidInput(details={"code": UNKNOWN_RULE})
    raw = raw if isinstance(raw, dict) else {}
    errors: dict[str, object] = {}
    clean: dict = {}
    if code == "category_frequency":
        clean["limits"] = _clean_limits(raw.get("limits"), errors)
    else:
        for key, default in DEFAULTS[code].items():
            whole = isinstance(default, int) and not isinstance(default, bool)
            low, high = RANGES[code][key]
            number = _number(raw.get(key), whole=whole)
            if number is None or not low <= number <= high:
                errors[f"param_{key}"] = _number_message(low, high, whole)
            else:
                clean[key] = number
    if code == "visit_length" and not errors and clean["min_minutes"] >= clean["max_minutes"]:
        errors["param_max_minutes"] = _l("The longest visit must be longer than the shortest.")
    if errors:
        raise InvalidInput(details=errors)
    return clean


def _clean_limits(limits, errors: dict) -> dict:
    if not isinstance(limits, dict) or not limits:
        errors["limits"] = _l("Give a limit for at least one service category.")
        return {}
    known = known_categories()
    clean = {}
    for category, limit in sorted(limits.items(), key=lambda item: str(item[0])):
        if category not in known:
            errors["limits"] = _l("%(code)s is not a service category.", code=str(category)[:40])
            continue
        limit = limit if isinstance(limit, dict) else {}
        per = limit.get("per")
        if per not in CATEGORY_PERIODS:
            errors[f"limit_{category}_per"] = _l("Choose per day or per month.")
        number = _number(limit.get("max"), whole=True)
        if number is None or not CATEGORY_MAX[0] <= number <= CATEGORY_MAX[1]:
            errors[f"limit_{category}_max"] = _number_message(*CATEGORY_MAX, True)
        if per in CATEGORY_PERIODS and number is not None:
            clean[category] = {"per": per, "max": number}
    return clean


def history() -> dict[str, list[AnomalyRule]]:
    """Every rule's versions, newest first, in the order of ``DEFAULTS`` (one query)."""
    found: dict[str, list[AnomalyRule]] = {code: [] for code in DEFAULTS}
    for version in db.session.scalars(
        sa.select(AnomalyRule).order_by(AnomalyRule.code, AnomalyRule.effective_from.desc())
    ):
        found.setdefault(version.code, []).append(version)
    return found


def in_force(code: str, day: date) -> AnomalyRule | None:
    return db.session.scalar(
        sa.select(AnomalyRule)
        .where(
            AnomalyRule.code == code,
            AnomalyRule.effective_from <= day,
            sa.or_(AnomalyRule.effective_to.is_(None), AnomalyRule.effective_to > day),
        )
        .order_by(AnomalyRule.effective_from.desc())
        .limit(1)
    )


def _lock_versions(code: str) -> list[AnomalyRule]:
    """The rule's versions, oldest first, read after their rows are locked (PostgreSQL).

    Two statements: the FOR UPDATE waits for another approver's transaction holding the rows,
    but returns only the rows its own snapshot saw (READ COMMITTED), not a version that
    transaction added; the second statement takes a new snapshot and sees it."""
    db.session.execute(
        sa.select(AnomalyRule.id)
        .where(AnomalyRule.code == code)
        .order_by(AnomalyRule.effective_from)
        .with_for_update()
    ).all()
    return list(
        db.session.scalars(
            sa.select(AnomalyRule)
            .where(AnomalyRule.code == code)
            .order_by(AnomalyRule.effective_from)
            .execution_options(populate_existing=True)
        )
    )


def add_version(
    code: str,
    *,
    effective_from: date | None,
    params: dict,
    enabled: bool,
    note: str | None,
    actor: User,
    today: date | None = None,
) -> AnomalyRule:
    """A new version of the rule from ``effective_from`` (tomorrow at the earliest); the
    version in force before it ends that day. Every problem of the input at once
    (InvalidInput); a later version already there: Conflict. Nothing changed on refusal."""
    today = today or local_today()
    errors: dict[str, object] = {}
    if code not in DEFAULTS:
        raise InvalidInput(details={"code": UNKNOWN_RULE})
    if effective_from is None or effective_from <= today:
        errors["effective_from"] = TOO_EARLY
    elif effective_from > today + timedelta(days=HORIZON_DAYS):
        errors["effective_from"] = TOO_LATE
    note_text = note.strip() if isinstance(note, str) else ""
    if not note_text:
        errors["note"] = NOTE_NEEDED
    elif len(note_text) > NOTE_MAX:
        errors["note"] = NOTE_TOO_LONG
    clean = {}
    try:
        clean = clean_params(code, params)
    except InvalidInput as error:
        errors.update(error.details or {})
    if errors:
        raise InvalidInput(details=errors)
    versions = _lock_versions(code)
    if any(v.effective_from >= effective_from for v in versions):
        raise Conflict(LATER_EXISTS, details={"effective_from": LATER_EXISTS})
    previous = versions[-1] if versions else None
    before = None
    if previous is not None and (
        previous.effective_to is None or previous.effective_to > effective_from
    ):
        before = {
            "version": previous.id,
            "to": previous.effective_to.isoformat() if previous.effective_to else None,
        }
        previous.effective_to = effective_from
    version = AnomalyRule(
        code=code,
        params=clean,
        enabled=bool(enabled),
        effective_from=effective_from,
        effective_to=None,
        note=note_text,
        created_by_user_id=actor.id,
    )
    db.session.add(version)
    db.session.flush()
    audit.record(
        "anomaly_rule.add_version",
        version,
        actor=actor,
        before={"previous": before} if before else None,
        after={
            "code": code,
            "from": effective_from.isoformat(),
            "params": clean,
            "enabled": bool(enabled),
            "note": note_text,
        },
    )
    return version


def params_in_words(code: str, params: dict) -> list[tuple[str, str]]:
    """(label, value) of each threshold, for a page: money in yuan, limits per category."""
    from eldercare.forms import yuan
    from vouchers.integrity.rules.base import category_label

    params = params or {}
    if code == "category_frequency":
        return [
            (
                category_label(category),
                f"{limit.get('max')} {PERIOD_LABELS.get(limit.get('per'), limit.get('per'))}",
            )
            for category, limit in sorted((params.get("limits") or {}).items())
        ]
    shown = []
    for key, value in params.items():
        label = str(PARAM_LABELS.get(key, key))
        number = str(value) if isinstance(value, int) else f"{value:g}"
        shown.append((label, yuan(value) if key.endswith("_fen") else number))
    return shown
