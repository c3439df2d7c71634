"""The eligible set in SQL is exactly ``eligibility_on`` for everyone (both databases)."""

from datetime import date, timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from assessment.eligibility import eligibility_on
from assessment.eligible_set import birth_cutoff, eligible_set
from assessment.models import (
    ASSESSMENT_STATUSES,
    EXCLUSION_KINDS,
    LEVEL_CODES,
    Assessment,
    EligibilityPolicy,
    Exclusion,
)
from eldercare.residents import Resident, compose_resident_id

# Days to judge on: around 29 February and a policy change (the test adds a version with
# minimum age 61 from 2030, so that 29 February 2032 falls on a common year 61 years back).
DAYS = [
    date(2026, 12, 3),
    date(2027, 2, 28),
    date(2027, 3, 1),
    date(2028, 2, 29),
    date(2032, 2, 29),
    date(2032, 3, 1),
]


def test_birth_cutoff_matches_age_on_on_every_day_of_four_years():
    person = Resident(birth_date=date(1960, 1, 1))
    for day in (date(2027, 1, 1) + timedelta(days=n) for n in range(366 * 4 + 2)):
        cutoff = birth_cutoff(day, 61)
        for birth in (cutoff - timedelta(days=1), cutoff, cutoff + timedelta(days=1)):
            person.birth_date = birth
            assert (person.age_on(day) >= 61) == (birth <= cutoff), (day, birth)


@pytest.fixture
def later_policy(app_ctx, db_session):
    """A second eligibility policy version from 2030: older minimum age, other levels."""
    first = db_session.scalar(sa.select(EligibilityPolicy).order_by(EligibilityPolicy.id))
    first.effective_to = date(2030, 1, 1)
    db_session.add(
        EligibilityPolicy(
            effective_from=date(2030, 1, 1),
            min_age=61,
            eligible_levels="mild moderate severe",
            note="test",
        )
    )
    db_session.flush()


def _near(day: date, low: int = -800, high: int = 800):
    return st.integers(low, high).map(lambda n: day + timedelta(days=n))


@st.composite
def elders(draw):
    day = draw(st.sampled_from(DAYS))
    min_age = 61 if day >= date(2030, 1, 1) else 60
    cutoff = birth_cutoff(day, min_age)
    people = []
    for _ in range(draw(st.integers(1, 6))):
        birth = draw(
            st.one_of(
                st.integers(-3, 3).map(lambda n, c=cutoff: c + timedelta(days=n)),
                st.sampled_from([date(1968, 2, 29), date(1971, 2, 28), date(1971, 3, 1)]),
                st.sampled_from([date(1940, 5, 5), date(1945, 2, 28), date(1990, 1, 1)]),
            )
        )
        assessments = [
            {
                # Mostly results that could make the elder eligible, so that the sets are
                # not empty; every status, level and date still appears.
                "status": draw(st.sampled_from(["approved"] * 6 + list(ASSESSMENT_STATUSES))),
                "level": draw(st.sampled_from(["moderate", "severe", "complete", *LEVEL_CODES])),
                "assessed_on": draw(st.one_of(_near(day, -400, 5), _near(day))),
                "effective_from": draw(st.one_of(_near(day, -400, 3), _near(day))),
                "valid_until": draw(st.one_of(_near(day, -3, 400), _near(day))),
            }
            for _ in range(draw(st.integers(0, 4)))
        ]
        exclusions = [
            {
                "kind": draw(st.sampled_from(EXCLUSION_KINDS)),
                "start_date": draw(_near(day)),
                "days": draw(st.one_of(st.none(), st.integers(0, 400))),
            }
            for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2])))
        ]
        people.append(
            {
                "birth": birth,
                "died": draw(st.one_of(st.none(), st.none(), _near(day, -5, 5), _near(day))),
                "moved": draw(st.one_of(st.none(), st.none(), _near(day, -5, 5), _near(day))),
                "district": draw(st.integers(0, 1)),
                "assessments": assessments,
                "exclusions": exclusions,
            }
        )
    return day, people


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=elders())
def test_the_sql_set_is_eligibility_on_for_everyone(world, later_policy, db_session, case):
    day, people = case
    districts = [world.heping, world.shenhe]
    savepoint = db_session.begin_nested()
    try:
        ids = []
        for n, person in enumerate(people):
            resident = Resident(
                id_number=compose_resident_id("210102", person["birth"], 700 + n),
                name="测试",
                birth_date=person["birth"],
                district_id=districts[person["district"]].id,
                street="南湖街道",
                address="三好街 1 号",
                date_of_death=person["died"],
                moved_out_on=person["moved"],
            )
            db_session.add(resident)
            db_session.flush()
            ids.append(resident.id)
            for a in person["assessments"]:
                db_session.add(
                    Assessment(resident_id=resident.id, type="first", applied_via="bureau", **a)
                )
            for x in person["exclusions"]:
                end = None if x["days"] is None else x["start_date"] + timedelta(days=x["days"])
                db_session.add(
                    Exclusion(
                        resident_id=resident.id,
                        kind=x["kind"],
                        start_date=x["start_date"],
                        end_date=end,
                    )
                )
        db_session.flush()

        rows = db_session.execute(eligible_set(day)).all()
        found = {r.resident_id: (r.district_id, r.level) for r in rows if r.resident_id in ids}
        expected = {}
        for rid in ids + [world.elder.id]:
            verdict = eligibility_on(rid, day)
            if verdict.eligible:
                expected[rid] = (db_session.get(Resident, rid).district_id, verdict.level)
        found_all = {r.resident_id: (r.district_id, r.level) for r in rows}
        assert found_all == expected
        event(f"eligible elders: {min(len(found), 2)}")  # see --hypothesis-show-statistics
        assert set(found) <= set(ids)
        # waiting_since: the first approved result at an eligible level in effect by the day.
        for r in rows:
            assert r.waiting_since is not None and r.waiting_since <= day
    finally:
        savepoint.rollback()
