"""Booking in a real Chromium at 375 px on the demo city.

A certified community station with a bathing service is set up in the live server's
database through the services (as the bureau would have certified it); 王秀英 (elder.wang)
books it on her phone through the service's page, and the station's administrator accepts
it on theirs. Her bookings page then says it is accepted.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from playwright.sync_api import Page, expect

from eldercare.credit_codes import compose_credit_code
from eldercare.db import db, unit_of_work
from eldercare.demo import ensure_account
from eldercare.residents import District
from eldercare.timeutil import local_today
from marketplace import catalogue, providers
from marketplace.models import Provider, Service
from marketplace.sample_documents import give_required_documents
from tests.e2e.helpers import (
    contrast_failures,
    overflow,
    path_of,
    sign_in,
    sign_out,
    small_targets,
)

STATION_ADMIN = "e2e.bath.station"
STATION_CODE = compose_credit_code("52", "210102", "BY000009")
TARGETS = "main a, main button, main input:not([type=hidden]), main select, main textarea"


@pytest.fixture(scope="module")
def bath_service(live_server_app) -> int:
    """A certified station in Heping (open any time) offering bathing: its service id."""
    with live_server_app.app_context():
        with unit_of_work():
            provider = db.session.scalar(
                sa.select(Provider).where(Provider.credit_code == STATION_CODE)
            )
            if provider is None:
                heping = db.session.scalar(sa.select(District).where(District.code == "210102"))
                admin = ensure_account(STATION_ADMIN, "助浴站 管理员", ["provider_admin"])
                provider = providers.apply_provider(
                    applicant=admin,
                    name="三好街助浴服务站",
                    credit_code=STATION_CODE,
                    type="community_station",
                    district=heping,
                    address="三好街 20 号",
                    latitude=41.7750,
                    longitude=123.4350,
                    service_districts=[heping],
                    contact_name="刘站长",
                    contact_phone="13800002222",
                    bank_account_name="三好街助浴服务站",
                    bank_name="盛京银行",
                    bank_account_number="6222000011113333",
                )
                give_required_documents(provider, uploader=admin)
                providers.approve(provider)
                catalogue.add_service(
                    provider,
                    actor=admin,
                    category_code="bathing",
                    title="上门助浴（e2e）",
                    description="",
                    unit="visit",
                    price_fen=8000,
                    capacity_per_slot=2,
                    districts=[heping],
                    delivery_place="home",
                )
            service_id = db.session.scalar(
                sa.select(Service.id).where(Service.provider_id == provider.id)
            )
        db.session.remove()
    return service_id


def _assert_phone_page(page: Page, where: str) -> None:
    scroll_width, client_width = overflow(page)
    assert client_width == 375 and scroll_width <= client_width, (
        f"{where}: scrolls sideways ({scroll_width}px in {client_width}px)"
    )
    checked, bad = small_targets(page, TARGETS, 44)
    assert checked and not bad, f"{where}: targets under 44 x 44 px: {bad}"
    checked, failures = contrast_failures(page, 4.5)
    assert checked and not failures, f"{where}: low contrast: {failures}"


def _open_booking_form(page: Page, service_id: int) -> None:
    """The service page's form; the booking page of its own while that page is missing."""
    response = page.goto(f"/marketplace/services/{service_id}")
    if response.status != 200 or not page.locator("form[action$='/book']").count():
        page.goto(f"/marketplace/services/{service_id}/book")
    expect(page.locator("form[action$='/book']")).to_have_count(1)


def test_an_elder_books_on_a_phone_and_the_provider_accepts(page, bath_service):
    tomorrow = local_today() + timedelta(days=1)

    sign_in(page, "elder.wang")
    _open_booking_form(page, bath_service)
    form = page.locator("form[action$='/book']")
    form.locator("[name=slot_date]").fill(tomorrow.isoformat())
    form.locator("[name=slot_time]").fill("10:00")
    form.locator("[name=note]").fill("三楼，请按门铃")
    with page.expect_navigation():
        form.locator("button[type=submit]").click()
    assert path_of(page) == "/marketplace/bookings", page.locator("main").inner_text()
    card = page.locator("#upcoming-bookings .booking-card", has_text="上门助浴（e2e）")
    expect(card).to_have_count(1)
    expect(card).to_have_attribute("data-status", "requested")
    expect(card).to_contain_text(f"{tomorrow.isoformat()} 10:00")
    _assert_phone_page(page, "my bookings")
    sign_out(page)

    sign_in(page, STATION_ADMIN)
    page.goto("/marketplace/provider/bookings")
    request = page.locator("#requested-bookings .booking-card", has_text="上门助浴（e2e）")
    expect(request).to_have_count(1)
    expect(request.locator(".elder-name")).to_have_text("王**")
    expect(page.locator("main")).not_to_contain_text("王秀英")
    _assert_phone_page(page, "provider bookings")
    with page.expect_navigation():
        request.locator("button.accept").click()
    expect(page.locator(".flash.success")).to_contain_text("王**")
    accepted = page.locator("#accepted-bookings .booking-card", has_text="上门助浴（e2e）")
    expect(accepted).to_have_attribute("data-status", "accepted")
    sign_out(page)

    sign_in(page, "elder.wang")
    page.goto("/marketplace/bookings")
    mine = page.locator("#upcoming-bookings .booking-card", has_text="上门助浴（e2e）")
    expect(mine).to_have_attribute("data-status", "accepted")
