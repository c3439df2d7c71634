"""Where a service is delivered (issue 14 item 3): the provider's choice, kept on the service,
asked when it is added, changeable later, shown on the pages and in the API. Only a home
service needs the phone's location at check-in (tests/vouchers/test_views_redeem.py)."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from eldercare.audit import AuditLog
from eldercare.errors import InvalidInput
from marketplace import catalogue
from marketplace.models import DELIVERY_PLACES, Service
from tests.marketplace.test_public_views import EN, text

ZH = {"Accept-Language": "zh-CN"}


def _count(db_session) -> int:
    return db_session.scalar(sa.select(sa.func.count()).select_from(Service))


def _add(market, **overrides):
    arguments = {
        "category_code": "bathing",
        "title": "助浴（站内浴室，护理员协助）",
        "description": "",
        "unit": "visit",
        "price_fen": 6000,
        "capacity_per_slot": 2,
        "districts": [market.heping],
        "delivery_place": "provider",
    }
    return catalogue.add_service(
        market.station, actor=market.station_admin, **(arguments | overrides)
    )


def test_the_places_a_service_can_be_delivered():
    assert DELIVERY_PLACES == ("home", "provider", "institution")


def test_the_place_is_kept_as_the_provider_chose_it(market):
    bath = _add(market)
    assert bath.delivery_place == "provider"
    assert market.bath.delivery_place == "home"  # 上门助浴
    assert market.meals.delivery_place == "provider"
    assert market.stay.delivery_place == "institution"


@pytest.mark.parametrize("place", ["", None, "moon", "HOME", 1])
def test_an_unknown_place_is_refused_and_nothing_added(market, db_session, place):
    before = _count(db_session)
    with pytest.raises(InvalidInput) as caught:
        _add(market, delivery_place=place)
    assert "delivery_place" in caught.value.details
    assert _count(db_session) == before


def test_the_database_refuses_an_unknown_place(market, db_session):
    with pytest.raises(sa.exc.IntegrityError), db_session.begin_nested():
        db_session.execute(
            sa.update(Service).where(Service.id == market.meals.id).values(delivery_place="moon")
        )


def test_changing_the_place_is_audited_and_a_bad_one_changes_nothing(market, db_session):
    catalogue.set_delivery_place(market.bath, "provider", actor=market.station_admin)
    assert market.bath.delivery_place == "provider"
    row = db_session.scalar(
        sa.select(AuditLog).where(
            AuditLog.action == "service.delivery_place",
            AuditLog.object_id == str(market.bath.id),
        )
    )
    assert (row.before, row.after) == ({"delivery_place": "home"}, {"delivery_place": "provider"})
    with pytest.raises(InvalidInput):
        catalogue.set_delivery_place(market.bath, "garden", actor=market.station_admin)
    assert market.bath.delivery_place == "provider"


# --------------------------------------------------------------------------- the form


def _form(market, **changes):
    data = {
        "category_code": "bathing",
        "title": "助浴（站内浴室）",
        "unit": "visit",
        "price": "60",
        "capacity_per_slot": "2",
        "districts": [str(market.heping.id)],
        "delivery_place": "provider",
    }
    return data | changes


def test_the_form_asks_where_and_keeps_the_answer(client, login, market, db_session):
    login(market.station_admin)
    page = client.get("/marketplace/provider/services", headers=ZH).get_data(as_text=True)
    assert 'name="delivery_place"' in page
    assert "上门服务" in page and "到店服务" in page
    assert "机构内服务" not in page  # a station has no residents: not offered
    response = client.post("/marketplace/provider/services", data=_form(market))
    assert response.status_code == 302
    stored = db_session.scalar(sa.select(Service).where(Service.title == "助浴（站内浴室）"))
    assert stored.delivery_place == "provider"


@pytest.mark.parametrize("place", [None, "", "moon"])
def test_the_form_refuses_a_missing_or_unknown_place(client, login, market, db_session, place):
    login(market.station_admin)
    data = _form(market, delivery_place=place)
    if place is None:
        del data["delivery_place"]
    before = _count(db_session)
    response = client.post("/marketplace/provider/services", data=data, headers=EN)
    assert response.status_code == 422
    page = text(response)
    assert "Choose where the service is delivered" in page
    assert "Nothing has been saved." in page
    assert _count(db_session) == before
    zh = client.post("/marketplace/provider/services", data=data, headers=ZH)
    assert "请选择服务地点" in text(zh)


def test_the_place_of_a_listed_service_can_be_changed(client, login, market):
    login(market.station_admin)
    url = f"/marketplace/provider/services/{market.bath.id}/place"
    listed = text(client.get("/marketplace/provider/services", headers=EN))
    assert "Home visit" in listed
    refused = client.post(url, data={"delivery_place": "moon"}, headers=EN)
    assert refused.status_code == 422
    assert "Choose where the service is delivered" in text(refused)
    assert market.bath.delivery_place == "home"
    assert client.post(url, data={"delivery_place": "provider"}).status_code == 302
    assert market.bath.delivery_place == "provider"
    other = f"/marketplace/provider/services/{market.cleaning.id}/place"
    assert client.post(other, data={"delivery_place": "provider"}).status_code == 404
    assert market.cleaning.delivery_place == "home"


def test_the_public_service_page_says_where(client, market):
    page = text(client.get(f"/marketplace/services/{market.bath.id}", headers=ZH))
    assert "上门服务" in page
    page = text(client.get(f"/marketplace/services/{market.meals.id}", headers=ZH))
    assert "到店服务" in page


def test_a_refused_place_keeps_the_cards_price_shown(client, login, market):
    login(market.station_admin)
    url = f"/marketplace/provider/services/{market.bath.id}/place"
    refused = client.post(url, data={"delivery_place": "moon"}, headers=EN)
    card = re.search(
        rf'id="service-{market.bath.id}".*?</li>', refused.get_data(as_text=True), flags=re.S
    ).group(0)
    assert 'value="80"' in card  # the price field still shows the price


@pytest.mark.parametrize("place", ["provider", "institution"])
def test_a_home_service_company_cannot_declare_its_visits_on_premises(market, db_session, place):
    """A home-service company has no premises elders come to: "at the provider" would only
    take its home visits out of the check-in location rule."""
    with pytest.raises(InvalidInput) as caught:
        catalogue.set_delivery_place(market.cleaning, place, actor=market.home_admin)
    assert "delivery_place" in caught.value.details
    assert market.cleaning.delivery_place == "home"
    with pytest.raises(InvalidInput):
        catalogue.add_service(
            market.home,
            actor=market.home_admin,
            category_code="cleaning",
            title="保洁",
            description="",
            unit="visit",
            price_fen=5000,
            capacity_per_slot=2,
            districts=[market.heping],
            delivery_place=place,
        )


def test_a_station_offers_no_institutional_stay(market):
    with pytest.raises(InvalidInput):
        catalogue.set_delivery_place(market.bath, "institution", actor=market.station_admin)


def test_a_change_of_place_is_seen_by_the_providers_district_auditors(market, db_session):
    catalogue.set_delivery_place(market.bath, "provider", actor=market.station_admin)
    row = db_session.scalar(
        sa.select(AuditLog).where(AuditLog.action == "service.delivery_place")
    )
    assert row.district_id == market.station.district_id
