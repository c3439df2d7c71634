from datetime import timedelta

import sqlalchemy as sa

from assessment.models import Agency, AgencyAdmin, Assessor
from eldercare.accounts import User
from eldercare.audit import AuditLog
from eldercare.credit_codes import compose_credit_code

EN = {"Accept-Language": "en"}


def test_approver_certifies_a_new_agency(client, login, world, db_session):
    login(world.approver)
    code = compose_credit_code("91", "210104", "MA0DX1K3")
    response = client.post(
        "/assessment/agencies",
        data={
            "name": "大东评估所",
            "licence_number": "PG-009",
            "credit_code": code,
            "certified_until": (world.today + timedelta(days=365)).isoformat(),
            "district_id": str(world.heping.id),
        },
        headers=EN,
    )
    assert response.status_code == 302
    assert "大东评估所" in client.get("/assessment/agencies").get_data(as_text=True)
    agency = db_session.scalar(sa.select(Agency).where(Agency.licence_number == "PG-009"))
    assert agency.status == "active" and agency.credit_code == code


def test_a_wrong_credit_code_or_past_date_saves_nothing(client, login, world, db_session):
    login(world.approver)
    before = db_session.scalar(sa.select(sa.func.count()).select_from(Agency))
    response = client.post(
        "/assessment/agencies",
        data={
            "name": "X",
            "licence_number": "PG-010",
            "credit_code": "91210104MA0DX1K3XX",
            "certified_until": (world.today - timedelta(days=1)).isoformat(),
        },
        headers=EN,
    )
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "not a valid unified social credit code" in page
    assert "until today or later" in page
    assert db_session.scalar(sa.select(sa.func.count()).select_from(Agency)) == before


def test_renewal_needs_a_reason_and_is_audited(client, login, world, db_session):
    login(world.approver)
    until = world.today + timedelta(days=700)
    missing = client.post(
        f"/assessment/agencies/{world.agency.id}/renew",
        data={"certified_until": until.isoformat(), "reason": ""},
        headers=EN,
    )
    assert missing.status_code == 422
    ok = client.post(
        f"/assessment/agencies/{world.agency.id}/renew",
        data={"certified_until": until.isoformat(), "reason": "yearly review"},
    )
    assert ok.status_code == 302
    db_session.refresh(world.agency)
    assert world.agency.certified_until == until
    assert db_session.scalar(sa.select(AuditLog.action).where(AuditLog.action == "agency.renew"))


def test_officer_cannot_certify(client, login, world):
    login(world.officer)
    response = client.post("/assessment/agencies", data={"name": "X"})
    assert response.status_code == 403


def _agency_admin(world, db_session):
    admin = world.factory.user("agency-boss", roles=["agency_admin"])
    db_session.add(AgencyAdmin(user_id=admin.id, agency_id=world.agency.id))
    db_session.flush()
    return admin


def test_agency_admin_registers_an_assessor_who_can_sign_in(client, login, world, db_session):
    login(_agency_admin(world, db_session))
    response = client.post(
        "/assessment/assessors",
        data={
            "display_name": "钱学",
            "username": "assessor.qian",
            "password": "long-enough-pw",
            "certificate_number": "C-777",
            "valid_until": (world.today + timedelta(days=300)).isoformat(),
        },
    )
    assert response.status_code == 302
    assessor = db_session.scalar(sa.select(Assessor).where(Assessor.certificate_number == "C-777"))
    assert assessor.agency_id == world.agency.id
    user = db_session.get(User, assessor.user_id)
    assert user.roles == {"assessor"} and user.check_password("long-enough-pw")
    page = client.get("/assessment/assessors").get_data(as_text=True)
    assert "钱学" in page and "C-777" in page and "吴刚" not in page  # own agency only


def test_bad_assessor_registration_saves_no_account(client, login, world, db_session):
    login(_agency_admin(world, db_session))
    users = db_session.scalar(sa.select(sa.func.count()).select_from(User))
    response = client.post(
        "/assessment/assessors",
        data={
            "display_name": "钱学",
            "username": "assessor.qian",
            "password": "long-enough-pw",
            "certificate_number": "C-001",  # already 李芳's
            "valid_until": (world.today + timedelta(days=300)).isoformat(),
        },
        headers=EN,
    )
    assert response.status_code == 422
    assert "already registered as an assessor" in response.get_data(as_text=True)
    assert db_session.scalar(sa.select(sa.func.count()).select_from(User)) == users


def test_agency_admin_renews_only_own_assessors(client, login, world, db_session):
    login(_agency_admin(world, db_session))
    until = (world.today + timedelta(days=500)).isoformat()
    assert (
        client.post(
            f"/assessment/assessors/{world.li.id}/certificate", data={"valid_until": until}
        ).status_code
        == 302
    )
    db_session.refresh(world.li)
    assert world.li.certificate_valid_until.isoformat() == until
    other = client.post(
        f"/assessment/assessors/{world.wu.id}/certificate", data={"valid_until": until}
    )
    assert other.status_code == 404
