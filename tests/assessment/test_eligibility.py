from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from assessment import lifecycle
from assessment.eligibility import (
    add_exclusion,
    eligibility_on,
    end_exclusion,
    record_death,
    record_move_out,
)
from assessment.events import eligibility_changed
from assessment.models import EligibilityEvent
from assessment.policy import add_version
from eldercare.errors import Conflict, InvalidInput
from tests.assessment.helpers import add_years


def _events(db_session, resident_id):
    return list(
        db_session.execute(
            sa.select(EligibilityEvent.kind, EligibilityEvent.effective_on)
            .where(EligibilityEvent.resident_id == resident_id)
            .order_by(EligibilityEvent.id)
        )
    )


def test_eligible_the_day_the_resident_turns_sixty(world, take_through):
    birthday = world.today + timedelta(days=5)
    younger = world.factory.resident(world.heping, birth=add_years(birthday, -60))
    take_through(younger, total=40)  # severe, valid for a year
    before = eligibility_on(younger.id, birthday - timedelta(days=1))
    assert not before.eligible and before.reason_codes == ["under_age"]
    on_birthday = eligibility_on(younger.id, birthday)
    assert on_birthday.eligible and on_birthday.level == "severe"


def test_eligibility_ends_when_the_assessment_expires(world, take_through):
    case = take_through(total=50)
    last_day = eligibility_on(world.elder.id, case.valid_until)
    assert last_day.eligible and last_day.holds_until == case.valid_until
    after = eligibility_on(world.elder.id, case.valid_until + timedelta(days=1))
    assert not after.eligible and after.reason_codes == ["no_valid_assessment"]


def test_not_eligible_before_approval_or_below_moderate(world, take_through):
    assert eligibility_on(world.elder.id, world.today).reason_codes == ["no_valid_assessment"]
    take_through(total=70)  # mild
    result = eligibility_on(world.elder.id, world.today)
    assert (result.eligible, result.level, result.reason_codes) == (
        False,
        "mild",
        ["level_below_threshold"],
    )


def test_death_ends_eligibility_and_emits_an_event(world, take_through, db_session):
    month_ago = world.today - timedelta(days=30)
    take_through(total=30, assessed_on=month_ago, approved_on=month_ago)
    died = world.today - timedelta(days=1)
    seen = []
    with eligibility_changed.connected_to(lambda ev, **kw: seen.append(kw["kind"])):
        record_death(world.elder, died, today=world.today)
    assert seen == ["death"]
    assert eligibility_on(world.elder.id, died - timedelta(days=1)).eligible
    assert eligibility_on(world.elder.id, died).reason_codes == ["deceased"]
    assert ("death", died) in _events(db_session, world.elder.id)
    with pytest.raises(Conflict):
        record_death(world.elder, died, today=world.today)
    with pytest.raises(InvalidInput):
        record_death(
            world.factory.resident(world.heping), world.today + timedelta(days=1), today=world.today
        )


def test_exclusion_while_it_lasts(world, take_through, db_session):
    take_through(total=50)
    start = world.today + timedelta(days=10)
    exclusion = add_exclusion(world.elder, "extremely_poor_support", start, source="MZ-2025-88")
    assert eligibility_on(world.elder.id, world.today).holds_until == start - timedelta(days=1)
    during = eligibility_on(world.elder.id, start)
    assert during.reason_codes == ["excluded:extremely_poor_support"]
    assert "extremely poor" in during.reasons[0].message or "特困" in during.reasons[0].message
    end_exclusion(exclusion.id, start + timedelta(days=30))
    assert not eligibility_on(world.elder.id, start + timedelta(days=30)).eligible
    assert eligibility_on(world.elder.id, start + timedelta(days=31)).eligible
    kinds = [kind for kind, _ in _events(db_session, world.elder.id)]
    assert kinds[-2:] == ["exclusion_started", "exclusion_ended"]


def test_moving_away_ends_eligibility(world, take_through):
    take_through(total=50)
    moved = world.today + timedelta(days=3)
    record_move_out(world.elder, moved)
    assert eligibility_on(world.elder.id, moved - timedelta(days=1)).eligible
    assert eligibility_on(world.elder.id, moved).reason_codes == ["not_resident"]


def test_every_failing_reason_is_listed(world, take_through):
    younger = world.factory.resident(world.heping, birth=add_years(world.today, -50))
    add_exclusion(younger, "basic_upgrade_project", world.today - timedelta(days=1))
    result = eligibility_on(younger.id, world.today)
    assert result.reason_codes == [
        "under_age",
        "no_valid_assessment",
        "excluded:basic_upgrade_project",
    ]


def test_lookup_by_id_number_and_unknown_person(world, take_through):
    take_through(total=50)
    assert eligibility_on(world.elder.id_number, world.today).eligible
    assert eligibility_on(world.elder.id_number.lower(), world.today).eligible
    unknown = eligibility_on("11010519491231002X", world.today)
    assert unknown.reason_codes == ["not_registered"] and not unknown.eligible


def test_a_newer_result_below_moderate_replaces_an_older_one(world, take_through):
    take_through(total=50)
    newer = lifecycle.apply(
        world.elder,
        type="immediate",
        applied_by=world.officer,
        via="bureau",
        note="recovered after surgery",
    )
    lifecycle.assign(newer, world.agency)
    take_through_existing(world, newer, total=80)
    result = eligibility_on(world.elder.id, world.today)
    assert (result.level, result.reason_codes) == ("mild", ["level_below_threshold"])


def take_through_existing(world, case, total):
    from datetime import datetime, time

    from eldercare.timeutil import SHANGHAI
    from tests.assessment.helpers import items_with_total

    lifecycle.schedule(
        case, datetime.combine(world.today, time(16), tzinfo=SHANGHAI), actor=world.li.user
    )
    lifecycle.record(
        case,
        items=items_with_total(total),
        assessed_on=world.today,
        recorder=world.li,
        cosigner=world.zhao,
    )
    lifecycle.approve(case, reviewer=world.approver)


def test_policy_is_data_a_new_version_changes_the_rule_on_its_date(world, take_through, db_session):
    take_through(total=50)  # moderate
    switch = world.today + timedelta(days=20)
    # Through the approver's service: the version before it ends there (versions may not
    # overlap; PostgreSQL's exclusion constraint refuses a bare overlapping row).
    add_version(
        effective_from=switch,
        min_age=60,
        eligible_levels=["severe", "complete"],
        assessment_validity_months=12,
        fee_refund_cap_fen=10_000,
        conflict_lookback_months=12,
        expiry_reminder_days=30,
        note="test",
        actor=world.approver,
    )
    assert eligibility_on(world.elder.id, switch - timedelta(days=1)).eligible
    assert eligibility_on(world.elder.id, world.today).holds_until >= switch - timedelta(days=1)
    assert eligibility_on(world.elder.id, switch).reason_codes == ["level_below_threshold"]


def test_no_policy_before_the_programme_began(world):
    from eldercare.errors import NotFound

    with pytest.raises(NotFound):
        eligibility_on(world.elder.id, date(2020, 1, 1))
