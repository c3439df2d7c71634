"""The public marketplace pages (search, provider, service) and the provider's catalogue page.

Text is checked in English (``Accept-Language: en``) where the words matter, since new
strings wait for their Chinese translation; category names come from the database in both.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from html import unescape

import pytest
import sqlalchemy as sa

from eldercare.accounts import FamilyLink
from eldercare.timeutil import now_utc
from marketplace import catalogue, providers
from marketplace.models import Booking, Review, Service, ServicePrice
from marketplace.search import is_open

EN = {"Accept-Language": "en"}


def text(response) -> str:
    """The page as a reader sees it: tags dropped, entities decoded, spaces collapsed."""
    html = response.get_data(as_text=True)
    html = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


def cards(response) -> list[str]:
    """The result cards' text, in the order shown."""
    html = response.get_data(as_text=True)
    found = re.findall(r'<li class="result-card".*?</li>', html, flags=re.S)
    return [re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", c))).strip() for c in found]


def review(market, db_session, service, rating, words=""):
    start = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)
    booking = Booking(
        service_id=service.id,
        provider_id=service.provider_id,
        resident_id=market.elder.id,
        booked_by_user_id=market.elder_user.id,
        slot_start=start,
        slot_end=start + timedelta(hours=1),
        status="completed",
        price_fen=service.price_fen,
    )
    db_session.add(booking)
    db_session.flush()
    db_session.add(
        Review(
            booking_id=booking.id,
            provider_id=service.provider_id,
            rating=rating,
            text=words,
            created_by_user_id=market.elder_user.id,
        )
    )
    db_session.flush()


# --------------------------------------------------------------------------- search


def test_anonymous_visitors_get_the_form_with_categories_in_their_language(client, market):
    response = client.get("/marketplace/")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert '<option value="meal_help"' in page and ">助餐</option>" in page
    assert ">和平区</option>" in page
    assert 'name="radius"' in page and '<option value="1000" selected>' in page
    assert 'id="use-location"' in page and 'name="lat"' in page
    assert 'id="search-prompt"' in page  # nothing to search from yet: no results, a prompt
    assert cards(response) == []

    english = client.get("/marketplace/", headers=EN).get_data(as_text=True)
    assert ">Meal help</option>" in english
    for choice in ("Within 500 m", "Within 1 km", "Within 2 km", "Within 5 km"):
        assert choice in english


def test_an_anonymous_search_from_the_district_centre(client, market):
    # 和平区's centre (41.7890, 123.4015) is about 3 km from 三好街's providers.
    near = client.get(f"/marketplace/?district={market.heping.id}&near=district", headers=EN)
    assert near.status_code == 200
    assert "Near the centre of" in text(near)
    assert cards(near) == []
    assert "Nothing found" in text(near)

    wide = client.get(
        f"/marketplace/?district={market.heping.id}&near=district&radius=5000", headers=EN
    )
    found = cards(wide)
    assert len(found) == 5
    assert "within 5 km" in text(wide)
    # The home-service company first (2.5 km), then the station (3 km), then the care home.
    assert {c.split(" ")[0] for c in found[:2]} == {"居家保洁", "上门理发"}
    assert found[-1].startswith("长期入住（双人间）")  # by the Imperial Palace, 4.6 km


def test_a_signed_in_elder_searches_from_home_at_once(client, login, market, db_session):
    review(market, db_session, market.meals, 5, "饭菜热乎")
    review(market, db_session, market.bath, 4)
    login(market.elder_user)
    response = client.get("/marketplace/", headers=EN)
    assert response.status_code == 200
    assert f"The home of {market.elder.name}" in text(response)
    found = cards(response)
    assert len(found) == 4  # the station (about 250 m) and the home service (about 990 m)
    meals = found[0] if found[0].startswith("社区助餐") else found[1]
    assert "About 250 m" in meals
    assert "¥15.00 per meal" in meals
    assert "4.5 / 5 (2 reviews)" in meals
    assert "Voucher accepted" in meals
    assert "南湖社区养老服务站" in meals
    haircut = next(c for c in found if c.startswith("上门理发"))
    assert "About 990 m" in haircut
    assert "¥30.00 per visit" in haircut
    assert "No reviews yet" in haircut
    assert "Voucher accepted" not in haircut
    # Nearest first.
    assert [c.startswith(("社区助餐", "上门助浴")) for c in found] == [True, True, False, False]
    page = response.get_data(as_text=True)
    assert f'href="/marketplace/services/{market.meals.id}"' in page
    assert f'href="/marketplace/providers/{market.station.id}"' in page


def test_a_family_agent_searches_from_the_linked_elders_home(client, login, market):
    login(market.son)
    response = client.get("/marketplace/", headers=EN)
    assert response.status_code == 200
    assert f"Near the home of {market.elder.name}" in text(response)
    assert len(cards(response)) == 4
    page = response.get_data(as_text=True)
    assert f'<option value="home-{market.elder.id}" selected>' in page


def test_searching_from_where_the_browser_says_we_are(client, market):
    # 五里河, 1.8 km south of 三好街: nothing within 1 km; the station is 2,044 m away.
    url = "/marketplace/?near=here&lat=41.7580&lng=123.4390"
    assert cards(client.get(url, headers=EN)) == []
    response = client.get(url + "&radius=5000&category=meal_help", headers=EN)
    assert "Near where you are now" in text(response)
    assert [c.split(" ")[0] for c in cards(response)] == ["社区助餐（午餐）"]
    assert "About 2.0 km" in cards(response)[0]


def test_filters_from_the_form(client, login, market, db_session):
    login(market.elder_user)
    review(market, db_session, market.cleaning, 2)
    base = f"/marketplace/?district={market.heping.id}&near=home-{market.elder.id}"
    vouchers = cards(client.get(base + "&vouchers=1", headers=EN))
    assert len(vouchers) == 3 and not any(c.startswith("上门理发") for c in vouchers)
    cheap = cards(client.get(base + "&max_price=30", headers=EN))
    assert sorted(c.split(" ")[0] for c in cheap) == ["上门理发", "社区助餐（午餐）"]
    cheap = cards(client.get(base + "&max_price=%C2%A529.99", headers=EN))  # "¥29.99"
    assert [c.split(" ")[0] for c in cheap] == ["社区助餐（午餐）"]
    rated = cards(client.get(base + "&min_rating=2", headers=EN))
    assert sorted(c.split(" ")[0] for c in rated) == ["上门理发", "居家保洁"]
    assert cards(client.get(base + "&min_stars=3", headers=EN)) == []
    providers.set_star_level(market.station, 4, "evaluation")
    assert len(cards(client.get(base + "&min_stars=3", headers=EN))) == 2
    by_price = cards(client.get(base + "&sort=price", headers=EN))
    assert [c.split(" ")[0] for c in by_price] == [
        "社区助餐（午餐）",
        "上门理发",
        "上门助浴",
        "居家保洁",
    ]
    response = client.get(base + "&open_now=1", headers=EN)
    open_now = is_open(market.station.opening_hours, now_utc())
    assert len(cards(response)) == (4 if open_now else 0)
    assert ("Open now" in text(response)) == open_now


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("radius=-5", "Choose a distance from the list."),
        ("radius=abc", "Choose a distance from the list."),
        ("radius=999999", "Choose a distance from the list."),
        ("max_price=abc", "Enter the highest price in yuan"),
        ("max_price=-3", "Enter the highest price in yuan"),
        ("max_price=1.234", "Enter the highest price in yuan"),
        ("near=here&lat=999&lng=123.4", "Your location could not be read"),
        ("near=here&lat=41.8&lng=", "Your location could not be read"),
        ("near=here&lat=nan&lng=inf", "Your location could not be read"),
        ("near=nowhere", "Choose where to search from."),
        ("district=99999", "Choose a district from the list."),
        ("district=abc", "Choose a district from the list."),
        ("category=massage", "Choose a kind of service from the list."),
        ("min_rating=9", "Choose a rating from the list."),
        ("min_stars=seven", "Choose a number of stars from the list."),
        ("sort=name", "Choose an order from the list."),
        ("page=-1", "This page of results does not exist."),
    ],
)
def test_bad_query_input_shows_a_message_with_422(client, market, query, message):
    if "district=" not in query:
        query = f"district={market.heping.id}&{query}"
    response = client.get(f"/marketplace/?{query}", headers=EN)
    assert response.status_code == 422
    page = text(response)
    assert message in page
    assert "Please check the search" in page
    assert 'role="alert"' in response.get_data(as_text=True)
    assert cards(response) == []


def test_a_submitted_search_without_a_place_asks_for_the_district(client, market):
    response = client.get("/marketplace/?category=&district=&near=district", headers=EN)
    assert response.status_code == 422
    assert "Choose your district" in text(response)


def test_results_come_in_pages_of_twenty(client, market):
    for n in range(18):  # 4 + 18 = 22 services near the elder's home
        catalogue.add_service(
            market.station,
            actor=market.station_admin,
            category_code="companionship",
            title=f"陪伴聊天 {n:02d}",
            description="",
            unit="hour",
            price_fen=2000 + n,
            capacity_per_slot=1,
            districts=[market.heping],
            delivery_place="home",
        )
    base = "/marketplace/?near=here&lat=41.7741&lng=123.4356"
    first = client.get(base, headers=EN)
    assert len(cards(first)) == 20
    assert "More results" in text(first)
    second = client.get(base + "&page=2", headers=EN)
    assert len(cards(second)) == 2
    assert "Previous results" in text(second) and "More results" not in text(second)


# --------------------------------------------------------------------------- provider page


def test_the_provider_page(client, market, db_session):
    review(market, db_session, market.stay, 5, "护理员很耐心")
    providers.set_star_level(market.institution, 4, "2025 evaluation")
    catalogue.set_beds(market.institution, total=120, free=12)
    catalogue.set_active(
        catalogue.add_service(
            market.institution,
            actor=market.institution_admin,
            category_code="day_care",
            title="停了的日托",
            description="",
            unit="day",
            price_fen=9000,
            capacity_per_slot=5,
            districts=[market.shenhe],
            delivery_place="provider",
        ),
        False,
    )
    response = client.get(f"/marketplace/providers/{market.institution.id}", headers=EN)
    assert response.status_code == 200
    page = text(response)
    for expected in (
        "沈河区颐养院",
        "Care institution",
        "沈河区颐养院 地址",
        "4 of 5 stars (bureau evaluation)",
        "12 free of 120 beds",
        "Monday 08:00–18:00",
        "长期入住（双人间）",
        "¥3,500.00 per month",
        "Voucher accepted",
        "5.0 / 5 (1 review)",
        "护理员很耐心",
    ):
        assert expected in page, expected
    assert "停了的日托" not in page  # inactive services are not shown
    assert "bank" not in page.lower() and "6222000011112222" not in page


def test_a_provider_page_without_beds_or_reviews(client, market):
    response = client.get(f"/marketplace/providers/{market.home.id}", headers=EN)
    page = text(response)
    assert "Home-service company" in page
    assert "beds" not in page
    assert "No reviews yet" in page
    assert "Not yet evaluated by the bureau" in page


def test_providers_not_certified_today_are_not_found(client, market, db_session):
    providers.suspend(market.station, "no-shows")
    providers.revoke(market.home, "fraud")
    market.institution.certified_until = market.today - timedelta(days=1)
    db_session.commit()  # (a savepoint) an error page rolls back what the test has not kept
    for provider in (market.station, market.home, market.institution):
        assert client.get(f"/marketplace/providers/{provider.id}").status_code == 404
    assert client.get("/marketplace/providers/999999").status_code == 404
    for service in (market.meals, market.cleaning, market.stay):
        assert client.get(f"/marketplace/services/{service.id}").status_code == 404


# --------------------------------------------------------------------------- service page


def test_the_service_page_for_an_anonymous_visitor(client, market):
    response = client.get(f"/marketplace/services/{market.meals.id}", headers=EN)
    assert response.status_code == 200
    page = text(response)
    for expected in (
        "社区助餐（午餐）",
        "¥15.00 per meal",
        "Voucher accepted",
        "南湖社区养老服务站",
        "Meal help",
        "Sign in to book",
    ):
        assert expected in page, expected
    html = response.get_data(as_text=True)
    assert "/login?next=/marketplace/services/" in html
    assert 'id="booking-form"' not in html


def test_an_elder_gets_the_booking_form_for_herself(client, login, market):
    login(market.elder_user)
    html = client.get(f"/marketplace/services/{market.bath.id}").get_data(as_text=True)
    form = re.search(r'<form class="stack booking-form".*?</form>', html, flags=re.S).group(0)
    assert f'action="/marketplace/services/{market.bath.id}/book"' in form
    assert 'method="post"' in form
    assert f'<input type="hidden" name="resident_id" value="{market.elder.id}">' in form
    for name in ("slot_date", "slot_time", "note", "csrf_token"):
        assert f'name="{name}"' in form
    assert 'type="date"' in form and 'type="time"' in form


def test_a_family_agent_with_two_elders_chooses_for_whom(client, login, market, db_session):
    father = market.factory.resident(market.heping, birth=date(1940, 1, 9), name="张建国")
    db_session.add(
        FamilyLink(
            agent_user_id=market.son.id,
            resident_id=father.id,
            relationship="child",
            consent_date=date(2025, 6, 1),
        )
    )
    db_session.flush()
    login(market.son)
    html = client.get(f"/marketplace/services/{market.cleaning.id}").get_data(as_text=True)
    select = re.search(
        r'<select id="resident_id" name="resident_id">.*?</select>', html, flags=re.S
    ).group(0)
    assert f'value="{market.elder.id}"' in select and f'value="{father.id}"' in select
    assert "王秀英" in select and "张建国" in select


def test_other_accounts_see_no_booking_form(client, login, market):
    login(market.officer)
    response = client.get(f"/marketplace/services/{market.meals.id}", headers=EN)
    assert "Bookings are made by elders and their families." in text(response)
    assert 'id="booking-form"' not in response.get_data(as_text=True)


def test_inactive_or_missing_services_are_not_found(client, market):
    catalogue.set_active(market.haircut, False)
    assert client.get(f"/marketplace/services/{market.haircut.id}").status_code == 404
    assert client.get("/marketplace/services/999999").status_code == 404


def test_a_non_voucher_service_says_so(client, market):
    response = client.get(f"/marketplace/services/{market.haircut.id}", headers=EN)
    assert "Not paid by the voucher" in text(response)


# --------------------------------------------------------------------------- the catalogue


def test_the_catalogue_needs_a_provider_administrator(client, login, market):
    response = client.get("/marketplace/provider/services")
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    login(market.elder_user)
    assert client.get("/marketplace/provider/services").status_code == 403


def test_the_catalogue_lists_own_services_with_price_history(client, login, market):
    catalogue.change_price(market.meals, 1600, actor=market.station_admin)
    login(market.station_admin)
    response = client.get("/marketplace/provider/services", headers=EN)
    assert response.status_code == 200
    page = text(response)
    assert "社区助餐（午餐）" in page and "上门助浴" in page
    assert "居家保洁" not in page  # another provider's
    assert "¥16.00 per meal" in page
    card = re.search(
        rf'id="service-{market.meals.id}".*?</li>', response.get_data(as_text=True), flags=re.S
    ).group(0)
    assert "¥15.00" in card and "¥16.00" in card  # the history
    assert "Beds" not in page  # a station has none


def test_adding_a_service_in_yuan(client, login, market, db_session):
    login(market.station_admin)
    response = client.post(
        "/marketplace/provider/services",
        data={
            "category_code": "companionship",
            "title": "陪老人聊天",
            "description": "每次一小时",
            "unit": "hour",
            "price": "35.50",
            "capacity_per_slot": "3",
            "districts": [str(market.heping.id), str(market.shenhe.id)],
            "delivery_place": "home",
        },
    )
    assert response.status_code == 302
    service = db_session.scalar(sa.select(Service).where(Service.title == "陪老人聊天"))
    assert service.price_fen == 3550
    assert service.capacity_per_slot == 3
    assert {d.id for d in service.districts} == {market.heping.id, market.shenhe.id}
    assert service.provider_id == market.station.id


@pytest.mark.parametrize(
    ("changes", "field_message"),
    [
        ({"price": "abc"}, "Enter the price in yuan, for example 35 or 35.50."),
        ({"price": "0"}, "The price must be more than 0 and at most 50,000 yuan."),
        ({"price": "60000"}, "The price must be more than 0 and at most 50,000 yuan."),
        ({"category_code": "long_term_stay"}, "Your kind of provider cannot offer this"),
        ({"capacity_per_slot": "lots"}, "Capacity is 1 to 500"),
        ({"districts": ["999999"]}, "Choose districts among those your provider serves."),
        ({"title": ""}, "Give the service a title"),
    ],
)
def test_a_refused_service_comes_back_with_422_and_nothing_saved(
    client, login, market, db_session, changes, field_message
):
    login(market.station_admin)
    data = {
        "category_code": "companionship",
        "title": "陪老人聊天",
        "description": "",
        "unit": "hour",
        "price": "35",
        "capacity_per_slot": "1",
        "districts": [str(market.heping.id)],
        "delivery_place": "home",
    }
    data.update(changes)
    before = db_session.scalar(sa.select(sa.func.count()).select_from(Service))
    response = client.post("/marketplace/provider/services", data=data, headers=EN)
    assert response.status_code == 422
    assert field_message in text(response)
    assert "Nothing has been saved." in text(response)
    assert db_session.scalar(sa.select(sa.func.count()).select_from(Service)) == before


def test_changing_a_price_keeps_history(client, login, market, db_session):
    login(market.station_admin)
    response = client.post(
        f"/marketplace/provider/services/{market.bath.id}/price", data={"price": "85"}
    )
    assert response.status_code == 302
    assert market.bath.price_fen == 8500
    prices = db_session.scalars(
        sa.select(ServicePrice.price_fen)
        .where(ServicePrice.service_id == market.bath.id)
        .order_by(ServicePrice.id)
    ).all()
    assert prices == [8000, 8500]

    refused = client.post(
        f"/marketplace/provider/services/{market.bath.id}/price", data={"price": "-1"}, headers=EN
    )
    assert refused.status_code == 422
    assert "Enter the price in yuan" in text(refused)
    assert market.bath.price_fen == 8500


def test_a_provider_can_never_touch_another_providers_service(client, login, market):
    login(market.station_admin)
    other = market.cleaning  # the home-service company's
    assert (
        client.post(
            f"/marketplace/provider/services/{other.id}/price", data={"price": "1"}
        ).status_code
        == 404
    )
    assert (
        client.post(
            f"/marketplace/provider/services/{other.id}/active", data={"active": "0"}
        ).status_code
        == 404
    )
    assert other.price_fen == 12000 and other.active


def test_stop_and_start_offering_a_service(client, login, market):
    login(market.station_admin)
    url = f"/marketplace/provider/services/{market.bath.id}/active"
    assert client.post(url, data={"active": "0"}).status_code == 302
    assert market.bath.active is False
    assert client.get(f"/marketplace/services/{market.bath.id}").status_code == 404
    assert client.post(url, data={"active": "1"}).status_code == 302
    assert market.bath.active is True


def test_beds_of_a_care_institution(client, login, market):
    login(market.institution_admin)
    page = text(client.get("/marketplace/provider/services", headers=EN))
    assert "Beds in total" in page
    response = client.post(
        "/marketplace/provider/services/beds", data={"beds_total": "120", "beds_free": "9"}
    )
    assert response.status_code == 302
    assert (market.institution.beds_total, market.institution.beds_free) == (120, 9)
    refused = client.post(
        "/marketplace/provider/services/beds",
        data={"beds_total": "120", "beds_free": "130"},
        headers=EN,
    )
    assert refused.status_code == 422
    assert "Free beds must be between 0 and the number of beds." in text(refused)
    assert market.institution.beds_free == 9


def test_a_station_has_no_beds_to_set(client, login, market):
    login(market.station_admin)
    response = client.post(
        "/marketplace/provider/services/beds",
        data={"beds_total": "10", "beds_free": "1"},
        headers=EN,
    )
    assert response.status_code == 422
    assert "Only care institutions have beds." in text(response)


def test_the_catalogue_forms_carry_a_csrf_token(csrf_client, market, db_session):
    from tests.conftest import PASSWORD

    login_page = csrf_client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', login_page).group(1)
    csrf_client.post(
        "/login",
        data={"username": market.station_admin.username, "password": PASSWORD, "csrf_token": token},
    )
    refused = csrf_client.post(
        f"/marketplace/provider/services/{market.bath.id}/price", data={"price": "1"}
    )
    assert refused.status_code == 400
    assert market.bath.price_fen == 8000
    page = csrf_client.get("/marketplace/provider/services").get_data(as_text=True)
    assert page.count('name="csrf_token"') >= 4  # sign-out, add, and each service's forms
