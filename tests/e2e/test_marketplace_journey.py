"""Issue 4's whole journey in one real browser: a provider applies, is certified, lists a
service, appears in an elder's 15-minute search and takes her booking.

The newcomer's provider-administrator account is created in the live server's database
(the bureau creates such accounts); every other step is a page, as people would use it.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from playwright.sync_api import expect

from eldercare.account_service import create_user
from eldercare.credit_codes import compose_credit_code
from eldercare.db import db, unit_of_work
from eldercare.timeutil import local_today
from marketplace.sample_documents import sample_pdf
from tests.e2e.conftest import PHONE
from tests.e2e.helpers import path_of, sign_in, sign_out

USERNAME, PASSWORD = "e2e.journey.admin", "journey-admin-pw-2025"
NAME = "三好街社区长者食堂"
CREDIT_CODE = compose_credit_code("52", "210102", "JY000777")
TITLE = "长者午餐（e2e 全流程）"
# About 350 m from 王秀英's home on 三好街 (41.7741, 123.4356): inside the 1 km default.
LOCATION = (41.7770, 123.4340)
DESK = {"width": 1280, "height": 900}


@pytest.fixture
def newcomer(live_server_app, live_server) -> str:
    with live_server_app.app_context():
        with unit_of_work():
            create_user(
                USERNAME,
                display_name="长者食堂 周经理",
                password=PASSWORD,
                roles=["provider_admin"],
            )
        db.session.remove()
    return USERNAME


def test_apply_certify_list_be_found_and_take_a_booking(new_page, newcomer):
    desk = new_page(locale="en", viewport=DESK)
    sign_in(desk, newcomer, PASSWORD)
    desk.goto("/marketplace/apply")
    desk.fill("#name", NAME)
    desk.fill("#credit_code", CREDIT_CODE)
    desk.check("input[name=type][value=community_station]")
    desk.select_option("#district_id", label="Heping")
    desk.fill("#address", "和平区三好街 30 号")
    desk.fill("#latitude", str(LOCATION[0]))
    desk.fill("#longitude", str(LOCATION[1]))
    desk.locator("#service_districts label", has_text="Heping").click()
    desk.fill("#contact_name", "周经理")
    desk.fill("#contact_phone", "13987654321")
    desk.fill("#bank_account_name", NAME)
    desk.fill("#bank_name", "盛京银行三好支行")
    desk.fill("#bank_account_number", "6222000077778888")
    for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun"):
        desk.fill(f"#hours_{day}_from", "07:00")
        desk.fill(f"#hours_{day}_to", "19:00")
    with desk.expect_navigation():
        desk.click("#apply-form button[type=submit]")
    assert path_of(desk) == "/marketplace/provider", desk.locator("main").inner_text()
    # Not certified yet: not in the marketplace, and no service can be booked. A station's
    # certification needs its business licence and fire-safety certificate: uploaded here.
    for kind, name in (("business_licence", "licence.pdf"), ("fire_safety", "fire.pdf")):
        desk.select_option("#doc-kind", kind)
        desk.set_input_files(
            "#doc-file",
            {"name": name, "mimeType": "application/pdf", "buffer": sample_pdf(kind)},
        )
        with desk.expect_navigation():
            desk.click("#documents button[type=submit]")
        expect(desk.locator("#documents .doc-list")).to_contain_text(name)
    sign_out(desk)

    sign_in(desk, "bureau.approver")
    desk.goto("/marketplace/bureau/providers")
    card = desk.locator(".item-card", has_text=NAME)
    with desk.expect_navigation():
        card.get_by_role("button", name="Approve for one year").click()
    expect(desk.locator(".flash.success")).to_contain_text(NAME)
    sign_out(desk)

    sign_in(desk, newcomer, PASSWORD)
    desk.goto("/marketplace/provider/services")
    form = desk.locator("form", has=desk.locator("#title"))
    form.locator("#category_code").select_option("meal_help")
    desk.fill("#title", TITLE)
    form.locator("#unit").select_option("meal")
    desk.fill("#price", "16.50")
    desk.fill("#capacity_per_slot", "30")
    form.locator("input[name=districts]").first.check()
    form.locator("input[name=delivery_place][value=provider]").check()
    with desk.expect_navigation():
        form.locator("button[type=submit]").click()
    expect(desk.locator("main")).to_contain_text(TITLE)
    sign_out(desk)

    phone = new_page(locale="zh-CN", viewport=PHONE)
    sign_in(phone, "elder.wang")
    phone.goto("/marketplace/")  # starts from her home, within 1 km
    with phone.expect_navigation():
        phone.click("#search-form button[type=submit]")
    result = phone.locator(".result-card", has_text=TITLE)
    expect(result).to_have_count(1)
    expect(result).to_contain_text("16.50")
    with phone.expect_navigation():
        result.locator("a.result-title").click()
    tomorrow = (local_today() + timedelta(days=1)).isoformat()
    phone.fill("#slot_date", tomorrow)
    phone.fill("#slot_time", "11:30")
    with phone.expect_navigation():
        phone.click("#booking-form button[type=submit]")
    assert path_of(phone) == "/marketplace/bookings", phone.locator("main").inner_text()
    mine = phone.locator("#upcoming-bookings .booking-card", has_text=TITLE)
    expect(mine).to_have_attribute("data-status", "requested")
    sign_out(phone)

    sign_in(desk, newcomer, PASSWORD)
    desk.goto("/marketplace/provider/bookings")
    request = desk.locator("#requested-bookings .booking-card", has_text=TITLE)
    with desk.expect_navigation():
        request.locator("button.accept").click()
    accepted = desk.locator("#accepted-bookings .booking-card", has_text=TITLE)
    expect(accepted).to_have_attribute("data-status", "accepted")
    expect(accepted).to_contain_text(f"{tomorrow} 11:30")
