"""The public marketplace in a real Chromium at phone width: an anonymous visitor searches
near a district's centre (or where the phone says it is), finds a service and opens it;
an elder searches from home and sees the booking form; a provider admin keeps the catalogue.

The live server holds the demo city. The provider these tests find is added to the live
server's database first, through the marketplace's own services, and committed.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from playwright.sync_api import Page, expect

from eldercare.credit_codes import compose_credit_code
from eldercare.db import db, unit_of_work
from eldercare.demo import district_by_code, ensure_account
from eldercare.timeutil import local_today
from marketplace import catalogue, providers
from marketplace.models import Provider, Service
from marketplace.sample_documents import give_required_documents
from tests.e2e.helpers import (
    contrast_failures,
    overflow,
    path_of,
    sign_in,
    small_targets,
    small_text,
)
from tests.marketplace.test_geo import destination

BODY_TEXT = "body, p, label, input, select, textarea, button, li, td, th, dd, dt, summary, h3"
HEPING_CENTRE = (41.7894, 123.4203)  # the district government (eldercare/demo.py)
STATION_NAME = "和平区北市社区养老服务站（测试）"
SERVICE_TITLE = "爱心午餐（测试）"
ADMIN = "e2e.station.admin"


@pytest.fixture(scope="module")
def station(live_server_app) -> SimpleNamespace:
    """A certified community station 300 m north-east of Heping's centre, with a lunch."""
    with live_server_app.app_context():
        with unit_of_work():
            heping = district_by_code("210102")
            shenhe = district_by_code("210103")
            code = compose_credit_code("52", "210102", "EE000001")
            provider = db.session.scalar(sa.select(Provider).where(Provider.credit_code == code))
            if provider is None:
                admin = ensure_account(ADMIN, "测试站 管理员", ["provider_admin"])
                db.session.flush()
                lat, lng = destination(*HEPING_CENTRE, 45, 300)
                provider = providers.apply_provider(
                    applicant=admin,
                    name=STATION_NAME,
                    credit_code=code,
                    type="community_station",
                    district=heping,
                    address="和平区北市场街 8 号",
                    latitude=lat,
                    longitude=lng,
                    service_districts=[heping, shenhe],
                    contact_name="李站长",
                    contact_phone="024-23456789",
                    bank_account_name=STATION_NAME,
                    bank_name="盛京银行",
                    bank_account_number="6222000099998888",
                    opening_hours={d: [["00:00", "23:59"]] for d in providers.WEEKDAYS},
                )
                give_required_documents(provider, uploader=admin)
                providers.approve(provider, today=local_today())
                catalogue.add_service(
                    provider,
                    actor=admin,
                    category_code="meal_help",
                    title=SERVICE_TITLE,
                    description="荤素搭配，少盐少油。",
                    unit="meal",
                    price_fen=1200,
                    capacity_per_slot=30,
                    districts=[heping],
                    delivery_place="provider",
                )
        service = db.session.scalar(
            sa.select(Service).where(
                Service.provider_id == provider.id, Service.title == SERVICE_TITLE
            )
        )
        found = SimpleNamespace(provider_id=provider.id, service_id=service.id)
        db.session.remove()
    return found


def _assert_phone_page(page: Page, where: str) -> None:
    scroll_width, client_width = overflow(page)
    assert client_width == 375, f"{where}: viewport is {client_width}px"
    assert scroll_width <= client_width, f"{where}: scrolls sideways ({scroll_width}px)"
    too_small = small_text(page, BODY_TEXT, 18)
    assert not too_small, f"{where}: text under 18px: {too_small}"
    checked, bad = small_targets(page, "a, button, input, select, textarea, summary", 44)
    assert checked >= 6, f"{where}: only {checked} targets measured"  # header: 4 or more
    assert not bad, f"{where}: targets under 44 x 44 px: {bad}"
    checked, failures = contrast_failures(page, 4.5)
    assert not failures, f"{where}: low contrast: {failures}"


def _card(page: Page, service_id: int):
    return page.locator(f"#service-{service_id}")


def test_an_anonymous_visitor_finds_a_lunch_near_the_district_centre(page: Page, station):
    page.goto("/marketplace/")
    expect(page.locator("h1")).to_be_visible()
    expect(page.locator("#search-prompt")).to_be_visible()
    _assert_phone_page(page, "search form")

    page.select_option("#category", label="助餐")
    page.select_option("#district", label="和平区")
    with page.expect_navigation():
        page.click("form#search-form button[type=submit]")
    card = _card(page, station.service_id)
    expect(card).to_be_visible()
    expect(card).to_contain_text(SERVICE_TITLE)
    expect(card).to_contain_text(STATION_NAME)
    expect(card).to_contain_text("300")  # about 300 m from the centre
    expect(card).to_contain_text("¥12.00")
    expect(card.locator(".voucher")).to_be_visible()
    _assert_phone_page(page, "search results")

    with page.expect_navigation():
        card.locator("a.result-title").click()
    assert path_of(page) == f"/marketplace/services/{station.service_id}"
    expect(page.locator("h1")).to_have_text(SERVICE_TITLE)
    expect(page.locator(".price-big")).to_contain_text("¥12.00")
    expect(page.locator("#sign-in-to-book")).to_be_visible()
    expect(page.locator("#booking-form")).to_have_count(0)
    _assert_phone_page(page, "service page")

    with page.expect_navigation():
        page.locator(f"a[href='/marketplace/providers/{station.provider_id}']").click()
    expect(page.locator("h1")).to_have_text(STATION_NAME)
    expect(page.locator(f"#service-{station.service_id}")).to_be_visible()
    _assert_phone_page(page, "provider page")


def test_searching_from_where_the_phone_is(page: Page, station):
    near = destination(*HEPING_CENTRE, 90, 200)  # 200 m east of the centre
    page.context.grant_permissions(["geolocation"])
    page.context.set_geolocation({"latitude": near[0], "longitude": near[1]})
    page.goto("/marketplace/")
    button = page.locator("#use-location")
    expect(button).to_be_visible()  # shown by the script, hidden without one
    with page.expect_navigation():
        button.click()
    assert "near=here" in page.url
    lat = float(re.search(r"lat=([-0-9.]+)", page.url).group(1))
    assert lat == pytest.approx(near[0], abs=1e-5)
    expect(_card(page, station.service_id)).to_be_visible()
    expect(page.locator("#near")).to_have_value("here")
    _assert_phone_page(page, "search from here")


def test_an_elder_searches_from_home_and_sees_the_booking_form(page: Page, station):
    sign_in(page, "elder.wang")
    page.goto("/marketplace/")
    # 王秀英 lives on 三好街: the search runs at once from her home.
    expect(page.locator("#near")).to_have_value(re.compile(r"^home-\d+$"))
    expect(page.locator("#results-heading")).to_be_visible()
    _assert_phone_page(page, "search from an elder's home")

    page.goto(f"/marketplace/services/{station.service_id}")
    form = page.locator("#booking-form")
    expect(form).to_be_visible()
    expect(form.locator("input[type=hidden][name=resident_id]")).to_have_count(1)
    expect(form.locator("#slot_date")).to_be_visible()
    expect(form.locator("#slot_time")).to_be_visible()
    _assert_phone_page(page, "service page with the booking form")


def test_the_provider_keeps_the_catalogue_on_a_phone(page: Page, station):
    sign_in(page, ADMIN)
    page.goto("/marketplace/provider/services")
    expect(page.locator(f"#service-{station.service_id}")).to_contain_text("¥12.00")
    _assert_phone_page(page, "provider catalogue")
    page.fill(f"#price-{station.service_id}", "abc")
    with page.expect_navigation():
        page.locator(f"#service-{station.service_id} form button[type=submit]").first.click()
    expect(page.locator(f"#price-{station.service_id}-error")).to_be_visible()
    _assert_phone_page(page, "provider catalogue with an error")


def test_the_voucher_badge_is_the_elders_own_kinds_and_names_the_kind_for_a_visitor(
    page: Page, new_page
):
    """Issue 14 item 4: day care is the institutional voucher's (the demo policy), so 王秀英
    (home and community) sees no badge on the 南湖 station's day care, but one on its lunch;
    a visitor reads which kind pays."""
    day_care, lunch = "日间照料（含午餐、午休）", "社区助餐（午餐两荤一素）"
    sign_in(page, "elder.wang")
    page.goto("/marketplace/?category=day_care")
    card = page.locator(".result-card", has_text=day_care)
    expect(card).to_have_count(1)
    expect(card.locator(".badge.voucher")).to_have_count(0)
    page.goto("/marketplace/?category=meal_help")
    expect(page.locator(".result-card", has_text=lunch).locator(".badge.voucher")).to_have_text(
        "可用消费券"
    )

    visitor = new_page()  # its own cookies: nobody signed in
    visitor.goto("/marketplace/?near=here&lat=41.7760&lng=123.4340&category=day_care")
    badge = visitor.locator(".result-card", has_text=day_care).locator(".badge.voucher")
    expect(badge).to_have_text("可用消费券：机构养老")
