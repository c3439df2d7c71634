"""A provider's staff: inviting accounts, caregiver certificates, deactivation, and who may
deliver a service that needs a certificate."""

from datetime import timedelta

import pytest
import sqlalchemy as sa

from eldercare.accounts import User
from eldercare.audit import AuditLog
from eldercare.errors import Conflict, InvalidInput
from marketplace import providers, staff
from marketplace.models import ProviderStaff, ServiceCategory

EN = {"Accept-Language": "en"}


def invite(client, **changes):
    data = {
        "display_name": "周强",
        "username": "zhou.qiang",
        "password": "long-enough-pw",
        "role": "provider_staff",
        "certificate_number": "NL-2025-0001",
        "certificate_valid_until": "",
    }
    data.update(changes)
    return client.post("/marketplace/provider/staff", data=data, headers=EN)


def user_count(db_session) -> int:
    return db_session.scalar(sa.select(sa.func.count()).select_from(User))


def test_an_invited_colleague_can_sign_in_and_works_for_the_provider(
    client, login, market, db_session
):
    login(market.station_admin)
    until = market.today + timedelta(days=400)
    response = invite(client, certificate_valid_until=until.isoformat())
    assert response.status_code == 302
    user = db_session.scalar(sa.select(User).where(User.username == "zhou.qiang"))
    assert user.roles == {"provider_staff"}
    member = providers.staff_record(user)
    assert member.provider_id == market.station.id and not member.is_admin
    assert member.caregiver_certificate_number == "NL-2025-0001"
    assert member.certificate_valid_until == until
    row = db_session.scalar(sa.select(AuditLog).where(AuditLog.action == "provider.staff_invite"))
    assert row.after["username"] == "zhou.qiang"
    page = client.get("/marketplace/provider/staff", headers=EN).get_data(as_text=True)
    assert "周强" in page and "NL-2025-0001" in page

    client.post("/logout")
    response = client.post("/login", data={"username": "zhou.qiang", "password": "long-enough-pw"})
    assert response.status_code == 302
    page = client.get("/marketplace/provider", headers=EN).get_data(as_text=True)
    assert market.station.name in page
    assert client.get("/marketplace/provider/staff").status_code == 403  # not an administrator


def test_another_administrator_can_be_invited(client, login, market, db_session):
    login(market.home_admin)
    assert invite(client, role="provider_admin", certificate_number="").status_code == 302
    user = db_session.scalar(sa.select(User).where(User.username == "zhou.qiang"))
    assert user.roles == {"provider_admin"}
    assert providers.provider_of(user, admin=True).id == market.home.id


def test_a_refused_invitation_creates_no_account(client, login, market, db_session):
    login(market.station_admin)
    users = user_count(db_session)
    taken = invite(client, username=market.home_admin.username)
    assert taken.status_code == 422
    assert "This username is taken." in taken.get_data(as_text=True)
    half = invite(client, certificate_valid_until="")  # a number without its validity
    assert half.status_code == 422
    assert "Enter the last day the certificate is valid" in half.get_data(as_text=True)
    expired = invite(client, certificate_valid_until=(market.today - timedelta(days=1)).isoformat())
    assert expired.status_code == 422 and "has expired" in expired.get_data(as_text=True)
    short = invite(client, password="short", certificate_number="")
    assert short.status_code == 422
    assert "at least 10 characters" in short.get_data(as_text=True)
    assert user_count(db_session) == users


def test_certificate_validity_can_be_changed(client, login, market, db_session):
    worker = market.factory.user("wu.hua", roles=["provider_staff"])
    member = ProviderStaff(provider_id=market.home.id, user_id=worker.id)
    db_session.add(member)
    db_session.flush()
    login(market.home_admin)
    until = market.today + timedelta(days=30)
    url = f"/marketplace/provider/staff/{member.id}/certificate"
    response = client.post(
        url, data={"certificate_number": "nl-77", "certificate_valid_until": until.isoformat()}
    )
    assert response.status_code == 302
    db_session.refresh(member)
    assert member.caregiver_certificate_number == "NL-77"
    assert member.certificate_valid_until == until
    assert db_session.scalar(
        sa.select(AuditLog.id).where(AuditLog.action == "provider.staff_certificate")
    )
    bad = client.post(
        url,
        data={"certificate_number": "NL-77", "certificate_valid_until": "31/12/2026"},
        headers=EN,
    )
    assert bad.status_code == 422
    assert "Enter a date as year-month-day" in bad.get_data(as_text=True)
    db_session.refresh(member)
    assert member.certificate_valid_until == until


def test_another_providers_staff_cannot_be_touched(client, login, market, db_session):
    worker = market.factory.user("wu.hua", roles=["provider_staff"])
    member = ProviderStaff(
        provider_id=market.home.id,
        user_id=worker.id,
        caregiver_certificate_number="NL-1",
        certificate_valid_until=market.today + timedelta(days=9),
    )
    db_session.add(member)
    db_session.flush()
    login(market.station_admin)
    page = client.get("/marketplace/provider/staff").get_data(as_text=True)
    assert "wu.hua" not in page
    url = f"/marketplace/provider/staff/{member.id}"
    until = (market.today + timedelta(days=99)).isoformat()
    assert (
        client.post(
            url + "/certificate",
            data={"certificate_number": "NL-1", "certificate_valid_until": until},
        ).status_code
        == 404
    )
    assert client.post(url + "/deactivate").status_code == 404
    db_session.refresh(member)
    assert member.active and member.certificate_valid_until == market.today + timedelta(days=9)


def test_deactivated_staff_no_longer_work_for_the_provider(client, login, market, db_session):
    worker = market.factory.user("wu.hua", roles=["provider_staff"])
    member = ProviderStaff(provider_id=market.home.id, user_id=worker.id)
    db_session.add(member)
    db_session.flush()
    login(market.home_admin)
    response = client.post(
        f"/marketplace/provider/staff/{member.id}/deactivate", data={"confirm": "1"}
    )
    assert response.status_code == 302
    db_session.refresh(member)
    assert not member.active
    assert providers.staff_record(worker) is None
    assert db_session.scalar(
        sa.select(AuditLog.id).where(AuditLog.action == "provider.staff_deactivate")
    )
    client.post("/logout")
    login(worker)
    assert client.get("/marketplace/provider").status_code == 403


def test_the_last_administrator_stays(app_ctx, market, db_session):
    admin = providers.staff_record(market.home_admin)
    other = market.factory.user("second.admin", roles=["provider_admin"])
    second = ProviderStaff(provider_id=market.home.id, user_id=other.id, is_admin=True)
    db_session.add(second)
    db_session.flush()
    with pytest.raises(Conflict):
        staff.deactivate_staff(admin, actor=market.home_admin)  # not oneself
    staff.deactivate_staff(admin, actor=other)
    assert not admin.active
    third = market.factory.user("third", roles=["provider_admin"])
    with pytest.raises(Conflict):
        staff.deactivate_staff(second, actor=third)  # the only active administrator left


def _member(market, db_session, number=None, until=None, active=True):
    worker = market.factory.user(roles=["provider_staff"])
    member = ProviderStaff(
        provider_id=market.home.id,
        user_id=worker.id,
        active=active,
        caregiver_certificate_number=number,
        certificate_valid_until=until,
    )
    db_session.add(member)
    db_session.flush()
    return member


def test_certified_categories_need_a_valid_certificate(market, db_session):
    bathing = db_session.get(ServiceCategory, "bathing")
    meals = db_session.get(ServiceCategory, "meal_help")
    assert bathing.requires_caregiver_certificate and not meals.requires_caregiver_certificate
    today = market.today
    valid = _member(market, db_session, "NL-1", today + timedelta(days=10))
    expired = _member(market, db_session, "NL-2", today - timedelta(days=1))
    none = _member(market, db_session)
    gone = _member(market, db_session, "NL-3", today + timedelta(days=10), active=False)

    assert staff.staff_may_deliver(valid, bathing, today)
    assert staff.staff_may_deliver(valid, bathing, today + timedelta(days=10))
    assert not staff.staff_may_deliver(valid, bathing, today + timedelta(days=11))
    assert not staff.staff_may_deliver(expired, bathing, today)
    assert not staff.staff_may_deliver(none, bathing, today)
    assert staff.staff_may_deliver(none, meals, today)
    assert staff.staff_may_deliver(expired, meals, today)
    assert not staff.staff_may_deliver(gone, meals, today)


def test_a_certificate_number_belongs_to_one_person(app_ctx, market, db_session):
    _member(market, db_session, "NL-9", market.today + timedelta(days=10))
    other = _member(market, db_session)
    with pytest.raises(InvalidInput) as refused:
        staff.set_certificate(other, number="nl-9", valid_until=market.today)
    assert "certificate_number" in refused.value.details
    staff.set_certificate(other, number="NL-10", valid_until=market.today)
    assert other.certified_on(market.today)
    staff.set_certificate(other, number="", valid_until=None)  # removed
    assert other.caregiver_certificate_number is None and not other.certified_on(market.today)
