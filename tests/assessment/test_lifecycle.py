from datetime import date, datetime, time, timedelta

import pytest
import sqlalchemy as sa

from assessment import lifecycle
from assessment.agencies import set_agency_status
from assessment.conflicts import register_service_history
from assessment.eligibility import eligibility_on
from assessment.errors import (
    AgencyNotActive,
    AssessorNotQualified,
    ConflictOfInterest,
    InvalidTransition,
)
from assessment.models import Assessment, EligibilityEvent
from eldercare.audit import AuditLog
from eldercare.errors import Conflict, InvalidInput, PermissionDenied
from eldercare.timeutil import SHANGHAI
from tests.assessment.conftest import backdate
from tests.assessment.helpers import items_with_total


def _scheduled(world, resident=None, agency=None):
    case = lifecycle.apply(
        resident or world.elder, type="first", applied_by=world.officer, via="bureau"
    )
    lifecycle.assign(case, agency or world.agency)
    lifecycle.schedule(
        case, datetime.combine(world.today, time(15), tzinfo=SHANGHAI), actor=world.li.user
    )
    return case


def _record(world, case, recorder=None, cosigner=None, **kwargs):
    lifecycle.record(
        case,
        items=kwargs.pop("items", items_with_total(50)),
        assessed_on=world.today,
        recorder=recorder or world.li,
        cosigner=cosigner or world.zhao,
        **kwargs,
    )


def _audit_count(db_session):
    return db_session.scalar(sa.select(sa.func.count()).select_from(AuditLog))


def test_full_path_to_approval_and_same_day_eligibility(world, take_through, db_session):
    case = take_through(total=50)  # moderate
    assert case.status == "approved"
    assert case.level == "moderate" and case.total == 50
    assert case.effective_from == world.today
    assert case.valid_until == lifecycle.add_months(world.today, 12) - timedelta(days=1)
    assert case.assessor1_signed_at and case.assessor2_signed_at
    assert case.refundable_fee_fen == 8000  # moderate: the 80-yuan fee is refunded
    result = eligibility_on(world.elder.id, world.today)
    assert result.eligible and result.level == "moderate" and result.assessment_id == case.id
    event = db_session.scalar(sa.select(EligibilityEvent).order_by(EligibilityEvent.id.desc()))
    assert (event.kind, event.resident_id, event.effective_on) == (
        "assessment_approved",
        world.elder.id,
        world.today,
    )


def test_fee_is_not_refundable_below_moderate_and_capped_at_policy(world, take_through):
    mild = take_through(total=70, approve=False)
    assert mild.refundable_fee_fen == 0
    lifecycle.return_for_correction(mild, reviewer=world.approver, reason="recheck")
    lifecycle.record(
        mild,
        items=items_with_total(20),
        assessed_on=world.today,
        recorder=world.li,
        cosigner=world.zhao,
        fee_fen=15_000,
    )
    assert mild.refundable_fee_fen == 10_000  # 100-yuan cap from the policy row


def test_two_signatures_by_the_same_assessor_are_rejected(world, db_session):
    case = _scheduled(world)
    before = _audit_count(db_session)
    with pytest.raises(InvalidInput):
        _record(world, case, recorder=world.li, cosigner=world.li)
    assert case.status == "scheduled" and case.total is None
    assert _audit_count(db_session) == before


def test_the_database_also_refuses_one_person_signing_twice(world, db_session):
    case = _scheduled(world)
    with pytest.raises(sa.exc.IntegrityError), db_session.begin_nested():
        db_session.execute(
            sa.update(Assessment)
            .where(Assessment.id == case.id)
            .values(assessor1_id=world.li.id, assessor2_id=world.li.id)
        )


def test_expired_assessor_certificate_is_rejected(world):
    case = _scheduled(world)
    world.zhao.certificate_valid_until = world.today - timedelta(days=1)
    with pytest.raises(AssessorNotQualified) as excinfo:
        _record(world, case)
    assert excinfo.value.details["cosigner"] == "赵敏"
    assert case.status == "scheduled"


def test_assessor_of_another_agency_cannot_cosign(world):
    case = _scheduled(world)
    with pytest.raises(AssessorNotQualified):
        _record(world, case, cosigner=world.wu)


def test_suspended_agency_cannot_be_assigned_or_record(world):
    case = _scheduled(world)
    set_agency_status(world.agency, "suspended", "complaint under investigation")
    with pytest.raises(AgencyNotActive):
        _record(world, case)
    other_elder = world.factory.resident(world.heping, birth=date(1940, 1, 1))
    fresh = lifecycle.apply(other_elder, type="first", applied_by=world.officer, via="bureau")
    with pytest.raises(AgencyNotActive):
        lifecycle.assign(fresh, world.agency)
    assert fresh.status == "applied"


def test_agency_status_changes_need_a_reason_and_are_audited(world, db_session):
    with pytest.raises(InvalidInput):
        set_agency_status(world.agency, "suspended", "  ")
    set_agency_status(world.agency, "suspended", "late reports")
    row = db_session.scalar(sa.select(AuditLog).where(AuditLog.action == "agency.status"))
    assert row.before == {"status": "active"}
    assert row.after == {"status": "suspended", "reason": "late reports"}


def test_conflict_of_interest_is_rejected(world, app, monkeypatch):
    served = {("91210102MA0TE1T08D", world.elder.id): world.today - timedelta(days=90)}

    def bookings(credit_code, resident_id, since):
        day = served.get((credit_code, resident_id))
        return day if day is not None and day >= since else None

    monkeypatch.setitem(app.extensions, "assessment.service_history_sources", [])
    register_service_history(app, bookings)
    case = lifecycle.apply(world.elder, type="first", applied_by=world.officer, via="bureau")
    with pytest.raises(ConflictOfInterest) as excinfo:
        lifecycle.assign(case, world.agency)
    assert (
        excinfo.value.details["last_served_on"]
        == served[("91210102MA0TE1T08D", world.elder.id)].isoformat()
    )
    assert case.status == "applied"
    lifecycle.assign(case, world.other)  # an agency that never served the elder may
    assert case.status == "assigned"


def test_service_older_than_the_look_back_is_no_conflict(world, app, monkeypatch):
    long_ago = world.today - timedelta(days=400)
    monkeypatch.setitem(app.extensions, "assessment.service_history_sources", [])
    register_service_history(app, lambda code, rid, since: long_ago if long_ago >= since else None)
    case = lifecycle.apply(world.elder, type="first", applied_by=world.officer, via="bureau")
    lifecycle.assign(case, world.agency)
    assert case.status == "assigned"


def test_reassessment_on_dispute_goes_to_a_different_agency(world, take_through):
    disputed = take_through(total=70)  # mild: the family disputes it
    case = lifecycle.apply(
        world.elder, type="reassessment", applied_by=world.officer, via="bureau", disputed=disputed
    )
    with pytest.raises(InvalidInput):
        lifecycle.assign(case, world.agency)
    lifecycle.assign(case, world.other)
    assert case.agency_id == world.other.id


def test_reassessment_must_name_an_approved_result(world):
    with pytest.raises(InvalidInput):
        lifecycle.apply(world.elder, type="reassessment", applied_by=world.officer, via="bureau")


def test_a_valid_assessment_need_not_be_repeated_but_immediate_may(world, take_through):
    take_through(total=50)
    with pytest.raises(Conflict):
        lifecycle.apply(world.elder, type="routine", applied_by=world.officer, via="bureau")
    case = lifecycle.apply(
        world.elder,
        type="immediate",
        applied_by=world.officer,
        via="bureau",
        note="fell and broke a hip",
    )
    assert case.status == "applied"


def test_one_open_case_at_a_time(world):
    lifecycle.apply(world.elder, type="first", applied_by=world.officer, via="bureau")
    with pytest.raises(Conflict):
        lifecycle.apply(world.elder, type="other", applied_by=world.officer, via="bureau")


def test_returned_result_is_corrected_and_approved(world, take_through):
    case = take_through(total=50, approve=False)
    with pytest.raises(InvalidInput):
        lifecycle.return_for_correction(case, reviewer=world.approver, reason="")
    lifecycle.return_for_correction(case, reviewer=world.approver, reason="item 7 unsigned")
    assert case.status == "returned" and case.review_note == "item 7 unsigned"
    with pytest.raises(InvalidTransition):
        lifecycle.approve(case, reviewer=world.approver)
    _record(world, case, items=items_with_total(40))
    lifecycle.approve(case, reviewer=world.approver)
    assert (case.status, case.level) == ("approved", "severe")


def test_reviewer_of_another_district_or_role_is_refused(world, take_through):
    case = take_through(approve=False)
    shenhe_approver = world.factory.user(
        "sh-approver", roles=["bureau_approver"], district=world.shenhe
    )
    with pytest.raises(PermissionDenied):
        lifecycle.approve(case, reviewer=shenhe_approver)
    with pytest.raises(PermissionDenied):
        lifecycle.approve(case, reviewer=world.officer)  # officers apply, approvers approve
    assert case.status == "recorded"


def test_a_result_edited_after_signing_cannot_be_approved(world, take_through):
    case = take_through(total=50, approve=False)
    case.item_scores_json = case.item_scores_json.replace('"eating":4', '"eating":0')
    with pytest.raises(Conflict):
        lifecycle.approve(case, reviewer=world.approver)


def test_only_the_assigned_agency_schedules(world):
    case = lifecycle.apply(world.elder, type="first", applied_by=world.officer, via="bureau")
    lifecycle.assign(case, world.agency)
    when = datetime.combine(world.today, time(15), tzinfo=SHANGHAI)
    with pytest.raises(PermissionDenied):
        lifecycle.schedule(case, when, actor=world.wu.user)
    with pytest.raises(InvalidInput):
        lifecycle.schedule(case, when - timedelta(days=2), actor=world.li.user)


def test_assessment_date_in_the_future_or_before_application(world):
    case = _scheduled(world)
    with pytest.raises(InvalidInput):
        lifecycle.record(
            case,
            items=items_with_total(50),
            recorder=world.li,
            cosigner=world.zhao,
            assessed_on=world.today + timedelta(days=1),
        )
    with pytest.raises(InvalidInput):
        lifecycle.record(
            case,
            items=items_with_total(50),
            recorder=world.li,
            cosigner=world.zhao,
            assessed_on=world.today - timedelta(days=3),
        )
    backdate(case, world.today - timedelta(days=5))
    lifecycle.record(
        case,
        items=items_with_total(50),
        recorder=world.li,
        cosigner=world.zhao,
        assessed_on=world.today - timedelta(days=3),
    )
    assert case.status == "recorded"


@pytest.mark.parametrize("fee", [-1, 100_001, 12.5])
def test_absurd_fees_are_refused(world, fee):
    case = _scheduled(world)
    with pytest.raises(InvalidInput):
        _record(world, case, fee_fen=fee)
    assert case.status == "scheduled"
