from datetime import UTC, date, datetime, time, timedelta
from types import SimpleNamespace

import pytest

from assessment import lifecycle
from assessment.agencies import add_assessor, create_agency
from eldercare.timeutil import SHANGHAI, local_today
from tests.assessment.helpers import items_with_total


@pytest.fixture
def world(app_ctx, factory):
    today = local_today()
    year = today + timedelta(days=365)
    heping = factory.district("210102", "和平区")
    shenhe = factory.district("210103", "沈河区")
    agency = create_agency(
        name="沈阳康评评估中心",
        licence_number="PG-001",
        certified_until=year,
        credit_code="91210102MA0TE1T08D",
    )
    other = create_agency(name="盛京评估", licence_number="PG-002", certified_until=year)
    staff = [factory.user(f"assessor{i}", roles=["assessor"]) for i in range(3)]
    li = add_assessor(agency, staff[0], name="李芳", certificate_number="C-001", valid_until=year)
    zhao = add_assessor(agency, staff[1], name="赵敏", certificate_number="C-002", valid_until=year)
    wu = add_assessor(other, staff[2], name="吴刚", certificate_number="C-003", valid_until=year)
    return SimpleNamespace(
        today=today,
        heping=heping,
        shenhe=shenhe,
        agency=agency,
        other=other,
        li=li,
        zhao=zhao,
        wu=wu,
        officer=factory.user("officer", roles=["bureau_officer"]),
        approver=factory.user("approver", roles=["bureau_approver"]),
        elder=factory.resident(heping, birth=date(1944, 3, 12)),
        factory=factory,
    )


def backdate(assessment, day: date) -> None:
    """Pretend the application was made on ``day`` (for results recorded in the past)."""
    assessment.created_at = datetime.combine(day, time(9), tzinfo=SHANGHAI).astimezone(UTC)


@pytest.fixture
def take_through(world):
    """Apply, assign, schedule and record; approve unless told not to."""

    def _take(
        resident=None,
        *,
        total=50,
        assessed_on=None,
        approve=True,
        agency=None,
        assessors=None,
        type="first",
        disputed=None,
        approved_on=None,
        **score_kwargs,
    ):
        resident = resident or world.elder
        assessed_on = assessed_on or world.today
        agency = agency or world.agency
        first, second = assessors or (world.li, world.zhao)
        case = lifecycle.apply(
            resident,
            type=type,
            applied_by=world.officer,
            via="bureau",
            disputed=disputed,
            today=assessed_on,
        )
        backdate(case, assessed_on)
        lifecycle.assign(case, agency, today=assessed_on)
        lifecycle.schedule(
            case,
            datetime.combine(assessed_on, time(10), tzinfo=SHANGHAI),
            actor=first.user,
            today=assessed_on,
        )
        lifecycle.record(
            case,
            items=items_with_total(total),
            assessed_on=assessed_on,
            recorder=first,
            cosigner=second,
            fee_fen=8000,
            today=world.today,
            **score_kwargs,
        )
        if approve:
            lifecycle.approve(case, reviewer=world.approver, today=approved_on or world.today)
        return case

    return _take
