"""Where a service is delivered, in a real Chromium on the demo city (issue 14 item 3).

The station's bath happens in its own bathroom ("助浴（站内浴室，护理员协助）"): its
administrator says so on the catalogue page, and the caregiver checks it in on a phone that
gives no location. While the same bath is marked a home visit, the check-in is refused and
the first thing the page says is why: the phone's location is needed. The phone here has no
geolocation permission, as a caregiver's phone that refused it.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from playwright.sync_api import Page, expect

from eldercare.accounts import User
from eldercare.db import db, unit_of_work
from eldercare.residents import District, Resident
from eldercare.timeutil import local_today
from marketplace.models import Service
from tests.e2e.helpers import path_of, sign_in
from tests.vouchers.helpers import give_voucher
from vouchers.models import Voucher
from vouchers.pool import funding as pool
from vouchers.pool import ledger
from vouchers.redemption import qr_tokens

BATH = "助浴（站内浴室，护理员协助）"


@pytest.fixture(scope="module")
def station_bath(live_server_app) -> dict:
    """A Heping elder's voucher of this month (not 王秀英's: her code is another test's this
    minute) and the demo station's bath."""
    with live_server_app.app_context():
        with unit_of_work():
            approver = db.session.scalar(sa.select(User).where(User.username == "bureau.approver"))
            month = local_today().replace(day=1)
            has_voucher = sa.select(Voucher.resident_id).where(Voucher.month == month)
            elder = db.session.scalar(
                sa.select(Resident)
                .join(District, Resident.district_id == District.id)
                .where(
                    District.code == "210102",
                    Resident.date_of_death.is_(None),
                    Resident.id.not_in(has_voucher),
                )
                .order_by(Resident.id)
                .limit(1)
            )
            code = ledger.district_account_code("210102")
            if ledger.balances().get(code, 0) < 100_000:
                pool.top_up(1_000_000, source="central", memo="e2e", actor=approver)
                pool.allocate(elder.district, 1_000_000, memo="e2e", actor=approver)
            voucher = give_voucher(elder, local_today())
            bath = db.session.scalar(sa.select(Service).where(Service.title == BATH))
            found = {"voucher_id": voucher.id, "service_id": bath.id, "place": bath.delivery_place}
        db.session.remove()
    return found


def _set_place(admin: Page, service_id: int, place: str) -> None:
    admin.goto(f"/marketplace/provider/services#service-{service_id}")
    card = admin.locator(f"#service-{service_id}")
    card.locator("select[name=delivery_place]").select_option(place)
    with admin.expect_navigation():
        card.get_by_role("button", name="修改服务地点").click()
    expect(admin.locator(f"#service-{service_id} .delivery-place")).to_have_text(
        {"home": "上门服务", "provider": "到店服务"}[place]
    )


def test_the_station_bath_checks_in_without_location_and_a_home_visit_says_why_not(
    new_page, live_server_app, station_bath
):
    # The demo's station bath is at the station, as its provider set it.
    assert station_bath["place"] == "provider"
    bath = station_bath["service_id"]
    admin = new_page()
    sign_in(admin, "provider.admin")
    _set_place(admin, bath, "home")  # as the old guess had it

    phone = new_page()
    sign_in(phone, "provider.staff")
    with live_server_app.app_context():
        token = qr_tokens.make_token(station_bath["voucher_id"])
    phone.goto("/vouchers/scan")
    phone.fill("#code", qr_tokens.group(token))
    with phone.expect_navigation():
        phone.click("#code-submit")
    scan_page = path_of(phone)
    assert scan_page.startswith("/vouchers/scan/"), phone.locator("main").inner_text()
    card = phone.locator(f"#scope-services li[data-service='{bath}']")
    expect(card.locator(".delivery-place")).to_have_text("上门服务 · 签到需要手机位置")
    with phone.expect_navigation():
        card.locator("button.check-in").click()
    # Refused; the first notice names the reason, not "some information is not valid".
    first = phone.locator("main .notice.error").first
    expect(first).to_contain_text("上门服务签到时需要手机位置")
    expect(phone.locator("main")).not_to_contain_text("填写的部分信息不正确")

    _set_place(admin, bath, "provider")  # what it is: the station's own bathroom
    phone.goto(scan_page)
    card = phone.locator(f"#scope-services li[data-service='{bath}']")
    expect(card.locator(".delivery-place")).to_have_text("到店服务")
    with phone.expect_navigation():
        card.locator("button.check-in").click()
    assert path_of(phone).startswith("/vouchers/redemptions/"), phone.locator("main").inner_text()
    expect(phone.locator("#redemption-facts .delivery-place")).to_have_text("到店服务")
