import sqlalchemy as sa

from eldercare.audit import AuditLog
from eldercare.residents import Resident

ZH = {"Accept-Language": "zh-CN"}
EN = {"Accept-Language": "en"}


def _form(district, **overrides):
    data = {
        "id_number": "210102194403121225",
        "name": "王秀英",
        "phone": "13804001234",
        "district_id": str(district.id),
        "street": "南湖街道",
        "address": "三好街 12 号",
        "latitude": "41.7741",
        "longitude": "123.4356",
    }
    data.update(overrides)
    return data


def test_officer_registers_a_resident_and_it_is_audited(client, factory, login, db_session):
    district = factory.district("210102")
    login(factory.user(roles=["bureau_officer"]))
    response = client.post("/bureau/residents/new", data=_form(district))
    assert response.status_code == 302
    resident = db_session.scalar(sa.select(Resident).where(Resident.name == "王秀英"))
    assert resident.birth_date.isoformat() == "1944-03-12"
    row = db_session.scalar(sa.select(AuditLog).where(AuditLog.action == "resident.create"))
    assert row.object_id == str(resident.id)
    assert row.after["id_number"] == "2101**********1225"  # the trail holds no full ID
    detail = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "210102194403121225" in detail  # bureau staff on the case see the full number


def _counts(session):
    return (
        session.scalar(sa.select(sa.func.count()).select_from(Resident)),
        session.scalar(sa.select(sa.func.count()).select_from(AuditLog)),
    )


def test_wrong_check_character_is_explained_in_chinese_and_saves_nothing(
    client, factory, login, db_session
):
    district = factory.district("210102")
    login(factory.user(roles=["bureau_officer"]))
    before = _counts(db_session)
    response = client.post(
        "/bureau/residents/new", data=_form(district, id_number="210102194403121226"), headers=ZH
    )
    assert response.status_code == 422
    assert "最后一位" in response.get_data(as_text=True)
    assert _counts(db_session) == before


def test_impossible_birth_date_and_bad_phone_are_both_reported_in_english(
    client, factory, login, db_session
):
    district = factory.district("210102")
    login(factory.user(roles=["bureau_officer"]))
    before = _counts(db_session)
    response = client.post(
        "/bureau/residents/new",
        data=_form(district, id_number="210102194402301225", phone="12345"),
        headers=EN,
    )
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "is not a real date" in page
    assert "11-digit mobile number" in page
    assert _counts(db_session) == before


def test_duplicate_resident_is_refused(client, factory, login, db_session):
    district = factory.district("210102")
    login(factory.user(roles=["bureau_officer"]))
    assert client.post("/bureau/residents/new", data=_form(district)).status_code == 302
    again = client.post("/bureau/residents/new", data=_form(district), headers=EN)
    assert again.status_code == 422
    assert "already registered" in again.get_data(as_text=True)
    assert _counts(db_session)[0] == 1


def test_district_officer_cannot_register_into_another_district(client, factory, login, db_session):
    heping = factory.district("210102")
    shenhe = factory.district("210103")
    login(factory.user(roles=["bureau_officer"], district=heping))
    response = client.post("/bureau/residents/new", data=_form(shenhe), headers=EN)
    assert response.status_code == 422  # Shenhe is not among the choices offered
    assert _counts(db_session)[0] == 0
