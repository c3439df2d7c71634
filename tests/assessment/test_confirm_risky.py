"""Issue 14 item 7 in the register and the programme: recording a death or a move out of
the city and changing the eligibility rule take two steps. The first POST changes nothing
(no event, no audit row) and says what would happen; the same fields with confirm=1 act."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from assessment.models import EligibilityEvent, EligibilityPolicy
from tests.assessment.test_bureau_interfaces import _policy_form
from tests.confirm_helpers import asks_first, confirmed


def _events(db_session) -> int:
    return db_session.scalar(sa.select(sa.func.count()).select_from(EligibilityEvent))


def test_recording_a_death_asks_first(client, login, world, db_session):
    login(world.officer)
    url = f"/assessment/residents/{world.elder.id}/death"
    data = {"date_of_death": world.today.isoformat()}
    events = _events(db_session)
    asks_first(
        client, url, data, world.elder.name, world.today.isoformat(), "vouchers stop at once"
    )
    db_session.refresh(world.elder)
    assert world.elder.date_of_death is None and _events(db_session) == events
    assert client.post(url, data=confirmed(data)).status_code == 302
    db_session.refresh(world.elder)
    assert world.elder.date_of_death == world.today and _events(db_session) == events + 1


def test_a_death_in_the_future_is_refused_before_any_question(client, login, world):
    login(world.officer)
    response = client.post(
        f"/assessment/residents/{world.elder.id}/death",
        data={"date_of_death": (world.today + timedelta(days=1)).isoformat()},
    )
    assert response.status_code == 422
    assert 'id="confirm-form"' not in response.get_data(as_text=True)


def test_recording_a_move_out_asks_first(client, login, world, db_session):
    login(world.officer)
    url = f"/assessment/residents/{world.elder.id}/move-out"
    moved = world.today + timedelta(days=40)
    data = {"moved_out_on": moved.isoformat()}
    events = _events(db_session)
    asks_first(client, url, data, moved.isoformat(), "vouchers stop from the month after")
    db_session.refresh(world.elder)
    assert world.elder.moved_out_on is None and _events(db_session) == events
    assert client.post(url, data=confirmed(data)).status_code == 302
    db_session.refresh(world.elder)
    assert world.elder.moved_out_on == moved


def _versions(db_session) -> int:
    return db_session.scalar(sa.select(sa.func.count()).select_from(EligibilityPolicy))


def test_an_eligibility_rule_change_asks_first(client, login, world, db_session):
    login(world.approver)
    start = world.today + timedelta(days=10)
    data = _policy_form(start, eligible_levels=["severe", "complete"])
    count = _versions(db_session)
    asks_first(client, "/assessment/policies", data, f"From {start.isoformat()}", "¥120.00")
    db_session.expire_all()
    assert _versions(db_session) == count
    added = client.post("/assessment/policies", data=confirmed(data))
    assert added.status_code == 302
    assert _versions(db_session) == count + 1


def test_cancelling_an_application_asks_first(client, login, world, db_session):
    from assessment import lifecycle

    case = lifecycle.apply(world.elder, type="first", applied_by=world.officer, via="bureau")
    login(world.officer)
    url = f"/assessment/cases/{case.id}/cancel"
    data = {"reason": "duplicate"}
    asks_first(client, url, data, world.elder.name, "must apply again", "duplicate")
    db_session.refresh(case)
    assert case.status == "applied"
    assert client.post(url, data=confirmed(data)).status_code == 302
    db_session.refresh(case)
    assert case.status == "cancelled"


def test_suspending_an_agency_asks_and_reinstating_does_not(client, login, world, db_session):
    login(world.approver)
    url = f"/assessment/agencies/{world.agency.id}/status"
    data = {"status": "suspended", "reason": "complaint"}
    asks_first(client, url, data, f"Suspend {world.agency.name}?", "can be given no case")
    db_session.refresh(world.agency)
    assert world.agency.status == "active"
    assert client.post(url, data=confirmed(data)).status_code == 302
    db_session.refresh(world.agency)
    assert world.agency.status == "suspended"
    back = client.post(url, data={"status": "active", "reason": "cleared"})
    assert back.status_code == 302
    db_session.refresh(world.agency)
    assert world.agency.status == "active"


def test_recording_an_exclusion_asks_first(client, login, world, db_session):
    from assessment.models import Exclusion

    login(world.officer)
    url = f"/assessment/residents/{world.elder.id}/exclusions"
    start = world.today - timedelta(days=1)
    data = {"kind": "extremely_poor_support", "start_date": start.isoformat(), "source": "X1"}
    asks_first(client, url, data, "(Support for extremely poor persons)?", "no voucher is issued")
    assert db_session.scalar(sa.select(Exclusion)) is None
    assert client.post(url, data=confirmed(data)).status_code == 302
    assert db_session.scalar(sa.select(Exclusion)).kind == "extremely_poor_support"
