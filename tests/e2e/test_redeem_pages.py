"""Redeeming a voucher on the provider's phone, in a real Chromium at 375 px on the demo city.

王秀英 (elder.wang, assessed moderate in the demo) is given this month's voucher out of a
funded Heping allocation, through the pool's services. The station's caregiver
(provider.staff) signs in, types the short code shown under her QR, checks in for the
station's lunch, takes the listed price and the co-payment in cash, and sees the receipt.
Every page on the way fits the phone: no sideways scrolling, targets of 44 px, contrast
4.5:1. (The two-phone camera test is the lead's, in its own file.)
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from playwright.sync_api import Page, expect

from eldercare.accounts import User
from eldercare.db import db, unit_of_work
from eldercare.timeutil import local_today
from marketplace.models import Provider, Service
from marketplace.providers import staff_record
from tests.e2e.helpers import contrast_failures, overflow, path_of, sign_in, small_targets
from tests.vouchers.helpers import give_voucher
from vouchers.models import Voucher
from vouchers.pool import funding as pool
from vouchers.pool import ledger
from vouchers.redemption import qr_tokens

TARGETS = "main a, main button, main input:not([type=hidden]), main select, main textarea"


@pytest.fixture(scope="module")
def wang_voucher(live_server_app) -> dict:
    """王秀英's voucher for this month (made once) and the station's lunch service."""
    with live_server_app.app_context():
        with unit_of_work():
            approver = db.session.scalar(sa.select(User).where(User.username == "bureau.approver"))
            wang = db.session.scalar(sa.select(User).where(User.username == "elder.wang")).resident
            month = local_today().replace(day=1)
            voucher = db.session.scalar(
                sa.select(Voucher).where(Voucher.resident_id == wang.id, Voucher.month == month)
            )
            if voucher is None:
                code = ledger.district_account_code(wang.district.code)
                if ledger.balances().get(code, 0) < 100_000:
                    pool.top_up(1_000_000, source="central", memo="e2e", actor=approver)
                    pool.allocate(wang.district, 1_000_000, memo="e2e", actor=approver)
                voucher = give_voucher(wang, local_today())
            staff = db.session.scalar(sa.select(User).where(User.username == "provider.staff"))
            provider = db.session.get(Provider, staff_record(staff).provider_id)
            lunch = db.session.scalar(
                sa.select(Service).where(
                    Service.provider_id == provider.id, Service.category_code == "meal_help"
                )
            )
            found = {"voucher_id": voucher.id, "service_id": lunch.id}
        db.session.remove()
    return found


def _assert_phone_page(page: Page, where: str) -> None:
    scroll_width, client_width = overflow(page)
    assert client_width == 375 and scroll_width <= client_width, (
        f"{where}: scrolls sideways ({scroll_width}px in {client_width}px)"
    )
    checked, bad = small_targets(page, TARGETS, 44)
    assert checked and not bad, f"{where}: targets under 44 x 44 px: {bad}"
    checked, failures = contrast_failures(page, 4.5)
    assert checked and not failures, f"{where}: low contrast: {failures}"


def _balance_fen(page: Page, selector: str) -> int:
    text = page.locator(selector).inner_text().strip().lstrip("¥").replace(",", "")
    yuan, fen = text.split(".")
    return int(yuan) * 100 + int(fen)


def test_staff_types_the_code_checks_in_and_takes_cash_on_a_phone(
    page: Page, live_server_app, wang_voucher
):
    # the typed code is read by token_from_text
    pytest.importorskip("vouchers.redemption.qr_decode")
    sign_in(page, "provider.staff")
    page.goto("/vouchers/scan")
    expect(page.locator("#code-form")).to_be_visible()
    _assert_phone_page(page, "scan page")
    # This Chromium has no camera (nor permission for one): the page says so in words and
    # leaves the other ways open.
    expect(page.locator("#camera-stop")).to_be_hidden()
    page.click("#camera-start")
    expect(page.locator("#camera-status")).not_to_be_empty()
    expect(page.locator("#camera-start")).to_be_visible()

    with live_server_app.app_context():
        token = qr_tokens.make_token(wang_voucher["voucher_id"])
    # As read off the elder's phone: in groups, in lower case.
    page.fill("#code", qr_tokens.group(token).lower())
    with page.expect_navigation():
        page.click("#code-submit")
    assert path_of(page).startswith("/vouchers/scan/"), page.locator("main").inner_text()
    expect(page.locator("#elder-name")).to_have_text("王**")
    expect(page.locator("main")).not_to_contain_text("王秀英")
    before = _balance_fen(page, "#voucher-balance")
    _assert_phone_page(page, "scanned voucher")

    lunch = page.locator(f"#scope-services li[data-service='{wang_voucher['service_id']}']")
    with page.expect_navigation():
        lunch.locator("button.check-in").click()
    assert path_of(page).startswith("/vouchers/redemptions/"), page.locator("main").inner_text()
    expect(page.locator("#price")).to_have_value("15")
    _assert_phone_page(page, "checked in")

    with page.expect_navigation():
        page.click("#set-price")
    expect(page.locator("#subsidy")).to_be_visible()
    subsidy = _balance_fen(page, "#subsidy")
    assert 0 < subsidy <= 1500
    _assert_phone_page(page, "priced")

    with page.expect_navigation():
        page.click("#paid-cash")
    expect(page.locator("#receipt")).to_be_visible()
    expect(page.locator("#redemption-status .badge")).to_have_attribute("data-status", "redeemed")
    assert _balance_fen(page, "#voucher-left") == before - subsidy
    _assert_phone_page(page, "receipt")
