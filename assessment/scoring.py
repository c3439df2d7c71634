"""Scoring an assessment: totals, the level from the total, and the standard's adjustments.

Adjustment rule (GB/T 42195-2022): coma makes the level "complete" whatever the total.
Otherwise a psychiatric diagnosis (ICD-10 F00-F99, dementia F00-F03 included) or two or
more care-risk events in the last 30 days raise the level by exactly one, once even when
both hold, capped at "complete".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from flask_babel import lazy_gettext as _l

from assessment.errors import InvalidScores
from assessment.instrument import instrument

_ICD10 = re.compile(r"^[A-Z][0-9]{2}(\.[0-9A-Z]{1,4})?$")
CARE_RISK_THRESHOLD = 2  # events in 30 days that raise the level


@dataclass(frozen=True)
class ScoreResult:
    total: int
    dimensions: dict[str, int]
    base_level: str
    level: str
    reasons: tuple[str, ...]  # adjustment codes that applied: coma, psychiatric_diagnosis, ...


def _is_psychiatric(code: str) -> bool:
    return code.startswith("F")  # F00-F99: F00-F03 dementia, F04-F99 other mental disorders


def _item_problem(item, value) -> str | None:
    # bool is an int subclass; a checkbox value must not pass for a score.
    if isinstance(value, bool) or not isinstance(value, int):
        return str(_l("must be a whole number from %(min)s to %(max)s", min=item.min, max=item.max))
    if not item.min <= value <= item.max:
        return str(
            _l(
                "%(value)s is outside the allowed range %(min)s to %(max)s",
                value=value,
                min=item.min,
                max=item.max,
            )
        )
    return None


def validate_items(items: Mapping[str, object]) -> dict[str, int]:
    """Every item present, known, an integer in range; errors name the item and its range."""
    known = instrument().items
    if not isinstance(items, Mapping):
        raise InvalidScores(
            details={"items": str(_l("expected a mapping of item codes to scores"))}
        )
    problems: dict[str, str] = {}
    for code in items:
        if code not in known:
            problems[str(code)] = str(_l("unknown item"))
    for code, item in known.items():
        if code not in items:
            problems[code] = str(
                _l("missing; give a score from %(min)s to %(max)s", min=item.min, max=item.max)
            )
            continue
        problem = _item_problem(item, items[code])
        if problem:
            problems[code] = problem
    if problems:
        raise InvalidScores(details=problems)
    return {code: int(items[code]) for code in known}


def normalize_diagnoses(diagnoses: Iterable[str]) -> tuple[str, ...]:
    codes = []
    for raw in diagnoses or ():
        code = str(raw).strip().upper()
        if not _ICD10.match(code):
            raise InvalidScores(
                _l("A diagnosis must be an ICD-10 code such as F00 or F03.1."),
                details={"diagnoses": str(raw)},
            )
        codes.append(code)
    return tuple(sorted(set(codes)))


def input_problems(
    items: Mapping[str, object], *, diagnoses: Iterable[str] = (), care_risk_events_30d=0
) -> dict[str, str]:
    """Every problem score_assessment would refuse, all at once (field -> message), so a form
    can list the unscored items beside a bad diagnosis code instead of one round at a time."""
    problems: dict[str, str] = {}
    checks = (
        lambda: validate_items(items),
        lambda: normalize_diagnoses(diagnoses),
        lambda: score_assessment(
            {code: item.min for code, item in instrument().items.items()},
            care_risk_events_30d=care_risk_events_30d,
        ),
    )
    for check in checks:
        try:
            check()
        except InvalidScores as refusal:
            details = refusal.details or {}
            for field, detail in details.items():
                # items carry a sentence per item; the others carry the raw value and
                # the sentence is the refusal's message
                sentence = detail if field in instrument().items or field == "items" else None
                problems.setdefault(field, str(sentence or refusal.message))
    return problems


def score_assessment(
    items: Mapping[str, object],
    *,
    coma: bool = False,
    diagnoses: Iterable[str] = (),
    care_risk_events_30d: int = 0,
) -> ScoreResult:
    scores = validate_items(items)
    diagnosis_codes = normalize_diagnoses(diagnoses)
    if (
        isinstance(care_risk_events_30d, bool)
        or not isinstance(care_risk_events_30d, int)
        or care_risk_events_30d < 0
    ):
        raise InvalidScores(
            _l("The number of care-risk events must be a whole number, 0 or more."),
            details={"care_risk_events_30d": str(care_risk_events_30d)},
        )

    inst = instrument()
    dimensions = {d.code: sum(scores[item.code] for item in d.items) for d in inst.dimensions}
    total = sum(dimensions.values())
    base = inst.level_for_total(total)

    if coma:
        return ScoreResult(total, dimensions, base.code, "complete", ("coma",))
    reasons = []
    if any(_is_psychiatric(code) for code in diagnosis_codes):
        reasons.append("psychiatric_diagnosis")
    if care_risk_events_30d >= CARE_RISK_THRESHOLD:
        reasons.append("care_risk_events")
    rank = base.rank + (1 if reasons else 0)
    top = max(level.rank for level in inst.levels)
    level = inst.level_by_rank(min(rank, top))
    return ScoreResult(total, dimensions, base.code, level.code, tuple(reasons))
