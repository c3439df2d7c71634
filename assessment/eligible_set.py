"""Everyone eligible on a day, as one SELECT: ``eligibility_on`` for a whole city at once.

The rules are exactly those of ``assessment.eligibility.eligibility_on`` (a test generates
random elders and compares the two on SQLite and PostgreSQL): alive and living in the city
on the day, at least the policy's minimum age (as ``Resident.age_on`` counts it, 29 February
included), the latest approved assessment in effect by the day (as ``latest_approved`` picks
it: latest visit, then latest id) still valid and at a level the policy covers, and no
exclusion in force. A monthly run over every elder reads this instead of asking
``eligibility_on`` once per elder.
"""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa

from assessment.models import Assessment, Exclusion
from assessment.policy import policy_on
from eldercare.residents import Resident


def birth_cutoff(day: date, min_age: int) -> date:
    """The latest birth date of someone who is ``min_age`` or older on ``day``:
    ``Resident.age_on(day) >= min_age`` exactly when ``birth_date <= birth_cutoff(...)``.
    On 29 February of a leap year, when the year ``min_age`` earlier was common, the
    cutoff is 28 February: someone born on 1 March that year is still a day short."""
    try:
        return day.replace(year=day.year - min_age)
    except ValueError:
        return date(day.year - min_age, 2, 28)


def eligible_set(day: date) -> sa.Select:
    """(resident_id, district_id, level, waiting_since) of every elder eligible on ``day``.

    ``waiting_since`` is the day the first approved assessment at an eligible level took
    effect (by ``day``): how long the elder has waited, which decides who goes first when
    money is short (as ``candidates_on`` defines it). Raises NotFound when no eligibility
    policy is in force on ``day`` (as ``eligibility_on`` does)."""
    policy = policy_on(day)
    levels = sorted(policy.eligible_level_set)
    in_effect = sa.and_(Assessment.status == "approved", Assessment.effective_from <= day)
    ranked = (
        sa.select(
            Assessment.resident_id,
            Assessment.level,
            Assessment.valid_until,
            # latest_approved's order: the latest visit, then the latest id.
            sa.func.row_number()
            .over(
                partition_by=Assessment.resident_id,
                order_by=(Assessment.assessed_on.desc(), Assessment.id.desc()),
            )
            .label("rank"),
            sa.func.min(sa.case((Assessment.level.in_(levels), Assessment.effective_from)))
            .over(partition_by=Assessment.resident_id)
            .label("waiting_since"),
        )
        .where(in_effect)
        .subquery("ranked")
    )
    excluded = (
        sa.select(sa.literal(1))
        .where(
            Exclusion.resident_id == Resident.id,
            Exclusion.start_date <= day,
            sa.or_(Exclusion.end_date.is_(None), Exclusion.end_date >= day),
        )
        .exists()
    )
    return (
        sa.select(
            ranked.c.resident_id,
            Resident.district_id,
            ranked.c.level,
            ranked.c.waiting_since,
        )
        .join(Resident, Resident.id == ranked.c.resident_id)
        .where(
            ranked.c.rank == 1,
            ranked.c.valid_until >= day,
            ranked.c.level.in_(levels),
            sa.or_(Resident.date_of_death.is_(None), Resident.date_of_death > day),
            sa.or_(Resident.moved_out_on.is_(None), Resident.moved_out_on > day),
            Resident.birth_date <= birth_cutoff(day, policy.min_age),
            ~excluded,
        )
    )


def shortlist(day: date) -> sa.Select:
    """(resident_id) of ``candidates_on(day)``'s shortlist, as one SELECT: alive, living in
    the city, with an approved assessment in effect and still valid at a level the policy
    covers. A monthly run reports how many of these turned out not to be eligible."""
    levels = sorted(policy_on(day).eligible_level_set)
    result = (
        sa.select(Assessment.id)
        .where(
            Assessment.resident_id == Resident.id,
            Assessment.status == "approved",
            Assessment.level.in_(levels),
            Assessment.effective_from <= day,
            Assessment.valid_until >= day,
        )
        .exists()
    )
    return sa.select(Resident.id.label("resident_id")).where(
        result,
        sa.or_(Resident.date_of_death.is_(None), Resident.date_of_death > day),
        sa.or_(Resident.moved_out_on.is_(None), Resident.moved_out_on > day),
    )
