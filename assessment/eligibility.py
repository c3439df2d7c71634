"""Who may receive a voucher on a given day, and why not.

``eligibility_on`` gives every reason that fails, not just the first, so that a bureau
officer can tell an elder everything that needs doing at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from assessment import events
from assessment.lifecycle import latest_approved
from assessment.models import EXCLUSION_KINDS, Assessment, Exclusion
from assessment.policy import policy_on
from eldercare import audit
from eldercare.db import db
from eldercare.errors import Conflict, InvalidInput, NotFound
from eldercare.residents import Resident
from eldercare.timeutil import local_today

REASON_MESSAGES = {
    "not_registered": _l("The person is not in the resident register."),
    "deceased": _l("The register records the person as deceased."),
    "not_resident": _l("The person no longer lives in the city."),
    "under_age": _l("The person is under the minimum age."),
    "no_valid_assessment": _l("There is no valid ability assessment."),
    "level_below_threshold": _l("The assessed level is below the level the programme covers."),
    "excluded:extremely_poor_support": _l(
        "The person receives support for extremely poor persons."
    ),
    "excluded:concentrated_care_subsidy": _l(
        "The person receives the concentrated-care subsidy for disadvantaged disabled elders."
    ),
    "excluded:basic_upgrade_project": _l(
        "The person is served under the basic eldercare upgrade project."
    ),
}
EXCLUSION_LABELS = {
    "extremely_poor_support": _l("Support for extremely poor persons"),
    "concentrated_care_subsidy": _l("Concentrated-care subsidy"),
    "basic_upgrade_project": _l("Basic eldercare upgrade project"),
}


@dataclass(frozen=True)
class Reason:
    code: str

    @property
    def message(self) -> str:
        return str(REASON_MESSAGES[self.code])


@dataclass(frozen=True)
class Eligibility:
    on: date
    eligible: bool
    resident_id: int | None = None
    level: str | None = None
    assessment_id: int | None = None
    reasons: tuple[Reason, ...] = field(default_factory=tuple)
    holds_until: date | None = None  # last day it holds, as far as is known today

    @property
    def reason_codes(self) -> list[str]:
        return [r.code for r in self.reasons]


def _resolve(resident_or_id) -> Resident | None:
    if isinstance(resident_or_id, Resident):
        return resident_or_id
    if isinstance(resident_or_id, int):
        return db.session.get(Resident, resident_or_id)
    return db.session.scalar(sa.select(Resident).where(Resident.id_number_is(str(resident_or_id))))


def _active_exclusions(resident_id: int, on: date) -> list[Exclusion]:
    return list(
        db.session.scalars(
            sa.select(Exclusion).where(
                Exclusion.resident_id == resident_id,
                Exclusion.start_date <= on,
                sa.or_(Exclusion.end_date.is_(None), Exclusion.end_date >= on),
            )
        )
    )


def eligibility_on(resident_id, on_date: date) -> Eligibility:
    """``resident_id`` is the register's id, a Resident, or an 18-character ID number."""
    resident = _resolve(resident_id)
    if resident is None:
        return Eligibility(on_date, False, reasons=(Reason("not_registered"),))
    policy = policy_on(on_date)
    reasons: list[Reason] = []
    if resident.date_of_death is not None and resident.date_of_death <= on_date:
        reasons.append(Reason("deceased"))
    if resident.moved_out_on is not None and resident.moved_out_on <= on_date:
        reasons.append(Reason("not_resident"))
    if resident.age_on(on_date) < policy.min_age:
        reasons.append(Reason("under_age"))

    assessment = latest_approved(resident.id, on_date)
    level = None
    if assessment is None or assessment.valid_until < on_date:
        reasons.append(Reason("no_valid_assessment"))
    else:
        level = assessment.level
        if level not in policy.eligible_level_set:
            reasons.append(Reason("level_below_threshold"))
    for exclusion in _active_exclusions(resident.id, on_date):
        reason = Reason(f"excluded:{exclusion.kind}")
        if reason not in reasons:
            reasons.append(reason)

    holds_until = None
    if not reasons:
        # Known future ends: the assessment's validity, a scheduled exclusion, a move, the policy.
        ends = [assessment.valid_until]
        upcoming = db.session.scalar(
            sa.select(sa.func.min(Exclusion.start_date)).where(
                Exclusion.resident_id == resident.id, Exclusion.start_date > on_date
            )
        )
        if upcoming is not None:
            ends.append(upcoming - timedelta(days=1))
        if resident.moved_out_on is not None:
            ends.append(resident.moved_out_on - timedelta(days=1))
        if policy.effective_to is not None:
            ends.append(policy.effective_to - timedelta(days=1))
        holds_until = min(ends)
    return Eligibility(
        on=on_date,
        eligible=not reasons,
        resident_id=resident.id,
        level=level,
        assessment_id=assessment.id if assessment else None,
        reasons=tuple(reasons),
        holds_until=holds_until,
    )


def eligible_from(resident_id, day: date, *, within_days: int = 400) -> date | None:
    """The first day on or after ``day`` on which the elder is eligible, as far as is known
    now: the end of a fixed-term exclusion and reaching the minimum age are dates on the
    calendar, so they are counted; a death, a move, an open-ended exclusion or a missing or
    insufficient assessment are not, and give None. Looks about a year ahead at most (an
    assessment is valid 12 months)."""
    resident = _resolve(resident_id)
    if resident is None:
        return None
    last = day + timedelta(days=within_days)
    while day <= last:
        eligibility = eligibility_on(resident, day)
        if eligibility.eligible:
            return day
        later = _when_reasons_end(resident, eligibility)
        if later is None or later <= day:
            return None
        day = later  # judged again there: another exclusion may begin, the result may lapse
    return None


def _when_reasons_end(resident: Resident, eligibility: Eligibility) -> date | None:
    """The first day after ``eligibility.on`` on which all of its reasons are over, when
    every reason is one that ends on a known date; None otherwise."""
    ends = []
    codes = eligibility.reason_codes
    for code in codes:
        if code != "under_age" and not code.startswith("excluded:"):
            return None
    if "under_age" in codes:
        ends.append(_birthday(resident.birth_date, policy_on(eligibility.on).min_age))
    exclusions = _active_exclusions(resident.id, eligibility.on)
    if any(exclusion.end_date is None for exclusion in exclusions):
        return None
    ends.extend(exclusion.end_date + timedelta(days=1) for exclusion in exclusions)
    return max(ends) if ends else None


def _birthday(birth: date, years: int) -> date:
    """The day the person turns ``years`` (born on 29 February: 1 March in a common year,
    as ``Resident.age_on`` counts it)."""
    try:
        return birth.replace(year=birth.year + years)
    except ValueError:
        return date(birth.year + years, 3, 1)


def candidates_on(day: date) -> list[tuple[int, str, date]]:
    """A shortlist of who may be eligible on ``day``, in one query, for a monthly run over
    every elder: alive, living in the city, with an approved assessment in effect and still
    valid at a level the policy covers. Age, exclusions and a later, lower result are not
    checked here: confirm each with ``eligibility_on``.

    Returns (resident_id, level, waiting_since) sorted by resident. ``waiting_since`` is the
    day the first approved assessment at an eligible level took effect (its approval date):
    how long the elder has been waiting for the programme, which decides who goes first when
    money is short.
    """
    levels = sorted(policy_on(day).eligible_level_set)
    eligible_result = sa.and_(
        Assessment.status == "approved",
        Assessment.level.in_(levels),
        Assessment.effective_from <= day,
    )
    waiting = (
        sa.select(Assessment.resident_id, sa.func.min(Assessment.effective_from).label("since"))
        .where(eligible_result)
        .group_by(Assessment.resident_id)
        .subquery()
    )
    rows = db.session.execute(
        sa.select(Assessment.resident_id, Assessment.level, waiting.c.since)
        .join(waiting, waiting.c.resident_id == Assessment.resident_id)
        .join(Resident, Resident.id == Assessment.resident_id)
        .where(
            eligible_result,
            Assessment.valid_until >= day,
            sa.or_(Resident.date_of_death.is_(None), Resident.date_of_death > day),
            sa.or_(Resident.moved_out_on.is_(None), Resident.moved_out_on > day),
        )
        .order_by(Assessment.resident_id, Assessment.assessed_on.desc(), Assessment.id.desc())
    ).all()
    found: dict[int, tuple[int, str, date]] = {}
    for resident_id, level, since in rows:
        found.setdefault(resident_id, (resident_id, level, since))  # the latest valid result
    return list(found.values())


def record_death(resident: Resident, date_of_death: date, *, today: date) -> None:
    if date_of_death > today:
        raise InvalidInput(details={"date_of_death": _l("The date cannot be in the future.")})
    if resident.date_of_death is not None:
        raise Conflict(_l("A date of death is already recorded."))
    resident.date_of_death = date_of_death
    audit.record(
        "resident.death",
        resident,
        district_id=resident.district_id,
        after={"date_of_death": date_of_death.isoformat()},
    )
    events.emit(resident.id, "death", date_of_death)


MOVE_OUT_HORIZON_DAYS = 366  # a move is known at most about a year ahead; later is a typo


def record_move_out(resident: Resident, moved_out_on: date, *, today: date | None = None) -> None:
    """The first day the elder no longer lives in the city (today, past or a known future
    day). Vouchers stop from the month after (the voucher side reads the ``moved_out``
    event); eligibility ends the day before."""
    today = today or local_today()
    # Two officers recording the same move at once: the second waits, then sees the first.
    db.session.scalar(
        sa.select(Resident)
        .where(Resident.id == resident.id)
        .with_for_update(of=Resident)
        .execution_options(populate_existing=True)
    )
    if resident.date_of_death is not None:
        raise Conflict(_l("The register records this person as deceased."))
    if resident.moved_out_on is not None:
        raise Conflict(
            _l(
                "A move out of the city on %(day)s is already recorded.",
                day=resident.moved_out_on.isoformat(),
            ),
            details={"moved_out_on": resident.moved_out_on.isoformat()},
        )
    if moved_out_on <= resident.birth_date:
        raise InvalidInput(
            details={"moved_out_on": _l("The date of the move is before the person's birth.")}
        )
    if moved_out_on > today + timedelta(days=MOVE_OUT_HORIZON_DAYS):
        raise InvalidInput(
            details={"moved_out_on": _l("A move can be recorded at most a year ahead.")}
        )
    resident.moved_out_on = moved_out_on
    audit.record(
        "resident.move_out",
        resident,
        district_id=resident.district_id,
        before={"moved_out_on": None},
        after={"moved_out_on": moved_out_on.isoformat()},
    )
    events.emit(resident.id, "moved_out", moved_out_on)


def add_exclusion(
    resident: Resident,
    kind: str,
    start_date: date,
    *,
    end_date: date | None = None,
    source: str | None = None,
) -> Exclusion:
    if kind not in EXCLUSION_KINDS:
        raise InvalidInput(details={"kind": _l("Unknown exclusion.")})
    if end_date is not None and end_date < start_date:
        raise InvalidInput(details={"end_date": _l("The end is before the start.")})
    exclusion = Exclusion(
        resident_id=resident.id, kind=kind, start_date=start_date, end_date=end_date, source=source
    )
    db.session.add(exclusion)
    audit.record(
        "exclusion.add",
        exclusion,
        district_id=resident.district_id,
        after={
            "kind": kind,
            "start": start_date.isoformat(),
            "end": end_date.isoformat() if end_date else None,
            "source": source,
        },
    )
    events.emit(resident.id, "exclusion_started", start_date)
    return exclusion


def end_exclusion(exclusion_id: int, end_date: date) -> Exclusion:
    exclusion = db.session.get(Exclusion, exclusion_id)
    if exclusion is None:
        raise NotFound()
    if end_date < exclusion.start_date:
        raise InvalidInput(details={"end_date": _l("The end is before the start.")})
    before = exclusion.end_date
    exclusion.end_date = end_date
    resident = db.session.get(Resident, exclusion.resident_id)
    audit.record(
        "exclusion.end",
        exclusion,
        district_id=resident.district_id,
        before={"end": before.isoformat() if before else None},
        after={"end": end_date.isoformat()},
    )
    events.emit(resident.id, "exclusion_ended", end_date + timedelta(days=1))
    return exclusion
