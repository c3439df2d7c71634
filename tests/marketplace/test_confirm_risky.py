"""Issue 14 item 7 in the marketplace: suspending or revoking a provider, rejecting its
application and deactivating a caregiver take two steps. The first POST changes nothing
and says what would happen; the same fields with confirm=1 act."""

import sqlalchemy as sa

from eldercare.audit import AuditLog
from marketplace import providers
from marketplace.models import ProviderStaff
from tests.confirm_helpers import asks_first, confirmed


def _queue(provider_id: int, action: str) -> str:
    return f"/marketplace/bureau/providers/{provider_id}/{action}"


def test_suspending_a_provider_asks_first(client, login, market, db_session):
    login(market.approver)
    url = _queue(market.home.id, "status")
    data = {"decision": "suspend", "reason": "多次投诉未上门", "show": "active"}
    asks_first(
        client, url, data, f"Suspend {market.home.name}?", "can accept no booking", "多次投诉未上门"
    )
    db_session.refresh(market.home)
    assert market.home.status == "active"
    assert client.post(url, data=confirmed(data)).status_code == 302
    db_session.refresh(market.home)
    assert market.home.status == "suspended"


def test_revoking_asks_and_reinstating_does_not(client, login, market, db_session):
    providers.suspend(market.home, "整改")
    db_session.flush()
    login(market.approver)
    url = _queue(market.home.id, "status")
    data = {"decision": "revoke", "reason": "骗取补贴"}
    asks_first(client, url, data, "loses its certification for good")
    db_session.refresh(market.home)
    assert market.home.status == "suspended"
    # Reinstating takes nothing away: one step.
    assert client.post(url, data={"decision": "reinstate", "reason": "整改完成"}).status_code == 302
    db_session.refresh(market.home)
    assert market.home.status == "active"


def test_a_missing_reason_is_said_before_any_question(client, login, market, db_session):
    login(market.approver)
    response = client.post(_queue(market.home.id, "status"), data={"decision": "suspend"})
    assert response.status_code == 422
    assert 'id="confirm-form"' not in response.get_data(as_text=True)


def test_rejecting_an_application_asks_first(client, login, market, db_session):
    market.home.status = "applied"
    db_session.flush()
    login(market.approver)
    url = _queue(market.home.id, "reject")
    data = {"reason": "营业执照已过期"}
    asks_first(client, url, data, "must apply anew", "营业执照已过期")
    db_session.refresh(market.home)
    assert market.home.status == "applied"
    assert client.post(url, data=confirmed(data)).status_code == 302
    db_session.refresh(market.home)
    assert market.home.status == "rejected"


def test_deactivating_a_caregiver_asks_first(client, login, market, db_session):
    worker = market.factory.user("wu.hua", roles=["provider_staff"])
    member = ProviderStaff(provider_id=market.home.id, user_id=worker.id)
    db_session.add(member)
    db_session.flush()
    login(market.home_admin)
    url = f"/marketplace/provider/staff/{member.id}/deactivate"
    asks_first(client, url, {}, f"Deactivate {worker.display_name}?", "can no longer scan")
    db_session.refresh(member)
    assert member.active
    assert client.post(url, data=confirmed()).status_code == 302
    db_session.refresh(member)
    assert not member.active
    assert db_session.scalar(
        sa.select(AuditLog.id).where(AuditLog.action == "provider.staff_deactivate")
    )


def test_disclosures_that_open_an_action_look_like_buttons(client, login, market, db_session):
    worker = market.factory.user("wu.hua", roles=["provider_staff"])
    db_session.add(ProviderStaff(provider_id=market.home.id, user_id=worker.id))
    db_session.flush()
    login(market.home_admin)
    page = client.get("/marketplace/provider/staff", headers={"Accept-Language": "en"}).get_data(
        as_text=True
    )
    assert '<summary class="button secondary">Change the caregiver certificate' in page
    assert "<summary>" not in page and '<summary class="button secondary">' in page
    client.post("/logout")
    login(market.approver)
    queue = client.get("/marketplace/bureau/providers?show=active").get_data(as_text=True)
    assert "<summary>" not in queue and '<summary class="button secondary">' in queue
