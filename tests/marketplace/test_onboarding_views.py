"""Applying through the page, the provider's dashboard and profile, and the bureau's
certification queue (approve, reject, suspend, reinstate, revoke, renew, star levels)."""

import io
from datetime import timedelta

import pytest
import sqlalchemy as sa

from eldercare.audit import AuditLog
from eldercare.credit_codes import compose_credit_code
from marketplace import providers
from marketplace.models import Provider, ProviderStaff
from marketplace.sample_documents import sample_pdf

EN = {"Accept-Language": "en"}
CODE = compose_credit_code("91", "210102", "MA0XYK12")


def application(market, **changes):
    data = {
        "name": "三好街居家养老服务中心",
        "credit_code": CODE,
        "type": "home_service",
        "district_id": str(market.heping.id),
        "address": "三好街 80 号",
        "latitude": "41.7745",
        "longitude": "123.4360",
        "service_districts": [str(market.heping.id), str(market.shenhe.id)],
        "contact_name": "刘经理",
        "contact_phone": "13912345678",
        "bank_account_name": "三好街居家养老服务中心",
        "bank_name": "盛京银行三好支行",
        "bank_account_number": "6222 0000 3333 4444",
        "hours_mon_from": "08:00",
        "hours_mon_to": "17:30",
        "hours_sat_from": "09:00",
        "hours_sat_to": "12:00",
        "beds_total": "",
    }
    data.update(changes)
    return data


def count(db_session, model) -> int:
    return db_session.scalar(sa.select(sa.func.count()).select_from(model))


@pytest.fixture
def newcomer(market):
    return market.factory.user("liu.manager", roles=["provider_admin"])


def _apply(client, login, market, newcomer, db_session, **changes):
    login(newcomer)
    response = client.post("/marketplace/apply", data=application(market, **changes), headers=EN)
    assert response.status_code == 302, response.get_data(as_text=True)
    return db_session.scalar(sa.select(Provider).where(Provider.credit_code == CODE))


# --------------------------------------------------------------------------- application


def test_a_provider_admin_applies_through_the_page(client, login, market, newcomer, db_session):
    login(newcomer)
    form = client.get("/marketplace/apply", headers=EN).get_data(as_text=True)
    assert 'name="credit_code"' in form and "Use my location" in form
    assert "和平区" in form or market.heping.name_en in form

    response = client.post("/marketplace/apply", data=application(market), headers=EN)
    assert response.status_code == 302
    assert response.headers["Location"].endswith("/marketplace/provider")
    provider = db_session.scalar(sa.select(Provider).where(Provider.credit_code == CODE))
    assert provider.status == "applied" and provider.certified_until is None
    assert provider.bank_account_number == "6222000033334444"
    assert provider.opening_hours == {"mon": [["08:00", "17:30"]], "sat": [["09:00", "12:00"]]}
    assert {d.code for d in provider.service_districts} == {"210102", "210103"}
    staff = providers.staff_record(newcomer)
    assert staff.provider_id == provider.id and staff.is_admin

    page = client.get("/marketplace/provider", headers=EN).get_data(as_text=True)
    assert "waiting for the bureau's decision" in page
    assert "Business licence or registration certificate" in page  # still missing


def test_a_wrong_credit_code_is_shown_and_nothing_saved(
    client, login, market, newcomer, db_session
):
    login(newcomer)
    before = count(db_session, Provider), count(db_session, ProviderStaff)
    wrong = CODE[:-1] + ("0" if CODE[-1] != "0" else "1")
    response = client.post(
        "/marketplace/apply", data=application(market, credit_code=wrong), headers=EN
    )
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "The last character of the credit code does not match" in page
    assert 'aria-invalid="true" aria-describedby="credit_code-hint credit_code-error"' in page
    assert "三好街居家养老服务中心" in page  # what was typed comes back
    assert (count(db_session, Provider), count(db_session, ProviderStaff)) == before
    assert providers.staff_record(newcomer) is None


def test_every_problem_is_named_at_once(client, login, market, newcomer, db_session):
    login(newcomer)
    response = client.post(
        "/marketplace/apply",
        data=application(
            market,
            latitude="north",
            contact_phone="123",
            hours_tue_from="08:00",
            service_districts=[],
            type="care_institution",
            beds_total="",
        ),
        headers=EN,
    )
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "Enter the position in decimal degrees" in page
    assert "Enter an 11-digit mobile number" in page
    assert "Give both the opening and the closing time" in page
    assert "Choose at least one district you serve." in page
    assert "Enter the number of beds (1 to 10,000)." in page
    assert count(db_session, Provider) == 3


def test_a_taken_credit_code_is_refused(client, login, market, newcomer, db_session):
    login(newcomer)
    response = client.post(
        "/marketplace/apply",
        data=application(market, credit_code=market.home.credit_code),
        headers=EN,
    )
    assert response.status_code == 422
    assert "A provider with this credit code has already applied." in response.get_data(
        as_text=True
    )
    assert providers.staff_record(newcomer) is None


def test_only_provider_admins_without_a_provider_apply(client, login, market):
    login(market.station_admin)
    assert client.get("/marketplace/apply").headers["Location"].endswith("/marketplace/provider")
    client.post("/logout")
    login(market.elder_user)
    assert client.get("/marketplace/apply").status_code == 403
    assert client.get("/marketplace/provider").status_code == 403


def test_a_new_admin_is_sent_to_the_application(client, login, newcomer):
    login(newcomer)
    assert client.get("/marketplace/provider").headers["Location"].endswith("/marketplace/apply")


# --------------------------------------------------------------------------- dashboard


def test_the_dashboard_says_the_status_in_words(client, login, market, db_session):
    login(market.home_admin)
    until = market.home.certified_until.isoformat()
    page = client.get("/marketplace/provider", headers=EN).get_data(as_text=True)
    assert f"Active until {until}." in page
    assert "/marketplace/provider/services" in page and "/marketplace/provider/bookings" in page
    assert "/marketplace/provider/staff" in page

    market.home.certified_until = market.today + timedelta(days=9)
    db_session.flush()
    page = client.get("/marketplace/provider", headers=EN).get_data(as_text=True)
    assert "10 days left." in page

    market.home.certified_until = market.today - timedelta(days=1)
    db_session.flush()
    page = client.get("/marketplace/provider", headers=EN).get_data(as_text=True)
    assert "Certification expired" in page and "can accept no vouchers" in page

    providers.suspend(market.station, "顾客投诉未上门")
    db_session.flush()
    client.post("/logout")
    login(market.station_admin)
    page = client.get("/marketplace/provider", headers=EN).get_data(as_text=True)
    assert "Suspended: 顾客投诉未上门" in page


def test_staff_see_the_status_but_not_the_documents_or_bank(client, login, market, db_session):
    worker = market.factory.user("zhou.qiang", roles=["provider_staff"])
    db_session.add(ProviderStaff(provider_id=market.home.id, user_id=worker.id))
    db_session.flush()
    login(worker)
    page = client.get("/marketplace/provider", headers=EN).get_data(as_text=True)
    assert "Active until" in page
    assert "6222000011112222" not in page and "Upload a document" not in page
    assert client.post("/marketplace/provider/profile", data={}).status_code == 403


def test_profile_changes_are_saved_and_audited(client, login, market, db_session):
    login(market.home_admin)
    data = {
        "contact_name": "新联系人",
        "contact_phone": "024-23456789",
        "hours_mon_from": "07:30",
        "hours_mon_to": "19:00",
        "name": "改名",
        "credit_code": CODE,
    }
    response = client.post("/marketplace/provider/profile", data=data, headers=EN)
    assert response.status_code == 302
    db_session.refresh(market.home)
    assert market.home.contact_phone == "024-23456789"
    # The bank account is not on a certified provider's profile form (payment account page).
    assert market.home.bank_account_number == "6222000011112222"
    assert market.home.opening_hours == {"mon": [["07:30", "19:00"]]}
    assert market.home.name == "盛京居家养老服务有限公司"  # not editable here
    row = db_session.scalar(sa.select(AuditLog).where(AuditLog.action == "provider.profile"))
    assert row.before["contact_phone"] == "13800001111"
    assert row.after["contact_phone"] == "024-23456789"


def test_a_bad_profile_change_saves_nothing(client, login, market, db_session):
    login(market.home_admin)
    response = client.post(
        "/marketplace/provider/profile",
        data={
            "contact_name": "x",
            "contact_phone": "12",
            "bank_account_name": "a",
            "bank_name": "b",
            "bank_account_number": "6222000011112222",
            "hours_mon_from": "18:00",
            "hours_mon_to": "08:00",
        },
        headers=EN,
    )
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "Enter an 11-digit mobile number" in page and "the end after the start" in page
    db_session.refresh(market.home)
    assert market.home.contact_phone == "13800001111" and market.home.contact_name == "联系人"


# --------------------------------------------------------------------------- bureau queue


def test_approving_from_the_queue_certifies_for_a_year(client, login, market, newcomer, db_session):
    provider = _apply(client, login, market, newcomer, db_session)
    # A home-service company needs its business licence before it can be certified.
    licence = {"kind": "business_licence", "file": (io.BytesIO(sample_pdf("licence")), "l.pdf")}
    uploaded = client.post("/marketplace/provider/documents", data=licence)
    assert uploaded.status_code == 302
    client.post("/logout")
    login(market.officer)
    queue = client.get("/marketplace/bureau/providers", headers=EN).get_data(as_text=True)
    assert provider.name in queue and provider.credit_code in queue
    assert "Approve for one year" not in queue  # officers see, approvers decide
    assert client.post(f"/marketplace/bureau/providers/{provider.id}/approve").status_code == 403
    client.post("/logout")

    login(market.approver)
    queue = client.get("/marketplace/bureau/providers", headers=EN).get_data(as_text=True)
    assert "Approve for one year" in queue
    response = client.post(
        f"/marketplace/bureau/providers/{provider.id}/approve",
        data={"show": "applied", "note": "材料齐全"},
        headers=EN,
    )
    assert response.status_code == 302
    db_session.refresh(provider)
    assert provider.status == "active"
    assert provider.certified_until == market.today + timedelta(days=364)
    assert provider.is_certified_on(market.today)
    assert db_session.scalar(
        sa.select(AuditLog.id).where(
            AuditLog.action == "provider.approve", AuditLog.object_id == str(provider.id)
        )
    )
    client.post("/logout")
    login(newcomer)
    page = client.get("/marketplace/provider", headers=EN).get_data(as_text=True)
    assert f"Active until {provider.certified_until.isoformat()}." in page


def test_rejecting_needs_a_reason(client, login, market, newcomer, db_session):
    provider = _apply(client, login, market, newcomer, db_session)
    client.post("/logout")
    login(market.approver)
    url = f"/marketplace/bureau/providers/{provider.id}/reject"
    response = client.post(url, data={"reason": "  "}, headers=EN)
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "Give the reason for this decision." in page
    assert f'id="provider-{provider.id}"' in page
    db_session.refresh(provider)
    assert provider.status == "applied"

    assert client.post(url, data={"reason": "营业执照已过期", "confirm": "1"}).status_code == 302
    db_session.refresh(provider)
    assert provider.status == "rejected" and provider.status_reason == "营业执照已过期"
    client.post("/logout")
    login(newcomer)
    page = client.get("/marketplace/provider", headers=EN).get_data(as_text=True)
    assert "Rejected: 营业执照已过期" in page


def test_suspension_from_the_queue_takes_effect_at_once(client, login, market, db_session):
    login(market.approver)
    url = f"/marketplace/bureau/providers/{market.home.id}/status"
    response = client.post(
        url, data={"decision": "suspend", "reason": "多次投诉未上门", "confirm": "1"}
    )
    assert response.status_code == 302
    db_session.refresh(market.home)
    assert market.home.status == "suspended"
    assert not market.home.is_certified_on(market.today)

    # Suspending again is not possible in that state: 422 with the service's message.
    again = client.post(
        url, data={"decision": "suspend", "reason": "x", "confirm": "1"}, headers=EN
    )
    assert again.status_code == 422
    assert "not possible in the current state" in again.get_data(as_text=True)
    assert client.post(url, data={"decision": "reinstate", "reason": "整改完成"}).status_code == 302
    db_session.refresh(market.home)
    assert market.home.is_certified_on(market.today)
    assert client.post(url, data={"decision": "explode", "reason": "x"}).status_code == 422
    revoked = client.post(url, data={"decision": "revoke", "reason": "骗取补贴", "confirm": "1"})
    assert revoked.status_code == 302
    db_session.refresh(market.home)
    assert market.home.status == "revoked"
    closed = client.get("/marketplace/bureau/providers?show=closed").get_data(as_text=True)
    assert market.home.name in closed and "骗取补贴" in closed


def test_star_level_needs_one_to_five_and_a_reason(client, login, market, db_session):
    login(market.approver)
    url = f"/marketplace/bureau/providers/{market.station.id}/stars"
    response = client.post(url, data={"star_level": "4"}, headers=EN)
    assert response.status_code == 422
    assert "Give the reason for this decision." in response.get_data(as_text=True)
    response = client.post(url, data={"star_level": "7", "reason": "年度评定"}, headers=EN)
    assert response.status_code == 422
    assert "Choose 1 to 5 stars." in response.get_data(as_text=True)
    assert ">年度评定</textarea>" in response.get_data(as_text=True)  # what was typed stays
    db_session.refresh(market.station)
    assert market.station.star_level is None
    assert client.post(url, data={"star_level": "4", "reason": "年度评定"}).status_code == 302
    db_session.refresh(market.station)
    assert market.station.star_level == 4


def test_renewal_adds_a_year(client, login, market, db_session):
    login(market.approver)
    end = market.station.certified_until
    response = client.post(f"/marketplace/bureau/providers/{market.station.id}/renew", data={})
    assert response.status_code == 302
    db_session.refresh(market.station)
    assert market.station.certified_until == end + timedelta(days=365)


def test_certifications_ending_soon_are_highlighted(client, login, market, db_session):
    market.institution.certified_until = market.today + timedelta(days=20)
    market.station.certified_until = market.today - timedelta(days=1)
    db_session.flush()
    login(market.officer)
    page = client.get("/marketplace/bureau/providers", headers=EN).get_data(as_text=True)
    assert "2 certifications have expired or end within 30 days." in page
    ending = client.get("/marketplace/bureau/providers?show=expiring", headers=EN)
    text = ending.get_data(as_text=True)
    assert market.institution.name in text and "21 days left." in text
    assert market.station.name in text and "Certification expired" in text
    assert market.home.name not in text  # a year to go


def test_district_staff_see_and_decide_only_their_district(client, login, market, db_session):
    heping = market.factory.user(
        "heping.approver", roles=["bureau_approver"], district=market.heping
    )
    login(heping)
    page = client.get("/marketplace/bureau/providers?show=active").get_data(as_text=True)
    assert market.station.name in page and market.institution.name not in page  # 沈河区
    url = f"/marketplace/bureau/providers/{market.institution.id}/status"
    assert (
        client.post(url, data={"decision": "suspend", "reason": "x", "confirm": "1"}).status_code
        == 404
    )
    db_session.refresh(market.institution)
    assert market.institution.status == "active"


def test_elders_and_providers_cannot_open_the_queue(client, login, market):
    login(market.elder_user)
    assert client.get("/marketplace/bureau/providers").status_code == 403
    client.post("/logout")
    login(market.home_admin)
    assert client.get("/marketplace/bureau/providers").status_code == 403


def test_the_queue_finds_a_provider_by_name_or_credit_code(client, login, market):
    login(market.officer)
    url = "/marketplace/bureau/providers?show=active&q="
    by_code = client.get(url + market.home.credit_code.lower()).get_data(as_text=True)
    assert market.home.name in by_code and market.station.name not in by_code
    by_name = client.get(url + "颐养").get_data(as_text=True)
    assert market.institution.name in by_name and market.home.name not in by_name
