"""A provider's certification in a real Chromium: apply on a phone, approved at the bureau.

A newcomer's provider-administrator account is created directly in the live server's
database (the bureau creates such accounts; no page does it yet). On a 375 px phone the
newcomer fills in the application, has a mistyped credit code pointed out next to the field,
fills the location with "Use my location", sends it and uploads the business licence; the
bureau's approver downloads the licence and approves the application in the certification
queue; the newcomer's dashboard then says the provider is active.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from eldercare.account_service import create_user
from eldercare.credit_codes import compose_credit_code
from eldercare.db import db, unit_of_work
from eldercare.timeutil import local_today
from tests.e2e.conftest import PHONE
from tests.e2e.helpers import contrast_failures, overflow, path_of, sign_in, sign_out, small_targets

DESK = {"width": 1280, "height": 900}
USERNAME, PASSWORD = "e2e.new.provider", "new-provider-pw-2025"
NAME = "浑河湾居家养老服务有限公司"
CREDIT_CODE = compose_credit_code("91", "210102", "MA0HHW01")
PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
TARGETS = "main a, main button, main input:not([type=hidden]), main select, main textarea"


@pytest.fixture
def newcomer(live_server_app, live_server) -> str:
    """A provider administrator without a provider, committed to the live server's database
    (the bureau creates such accounts; no page does it yet)."""
    with live_server_app.app_context():
        with unit_of_work():
            create_user(
                USERNAME, display_name="浑河湾 刘经理", password=PASSWORD, roles=["provider_admin"]
            )
        db.session.remove()
    return USERNAME


@pytest.fixture
def document_store(live_server_app, tmp_path, monkeypatch) -> Path:
    """Uploads of this test go to its own directory, not the instance folder."""
    monkeypatch.setitem(live_server_app.config, "DOCUMENT_STORE", str(tmp_path))
    return tmp_path


def _assert_phone_form(page: Page, where: str, min_targets: int = 40) -> None:
    scroll_width, client_width = overflow(page)
    assert client_width == PHONE["width"], f"{where}: viewport is {client_width}px"
    assert scroll_width <= client_width, f"{where}: scrolls sideways ({scroll_width}px)"
    checked, bad = small_targets(page, TARGETS, 44)
    assert checked >= min_targets, f"{where}: only {checked} targets measured"
    assert not bad, f"{where}: targets under 44 x 44 px: {bad}"
    checked, failures = contrast_failures(page, 4.5)
    assert checked >= 40 and not failures, f"{where}: low contrast: {failures}"


def test_apply_on_a_phone_and_the_bureau_approves(new_page, live_server, newcomer, document_store):
    phone = new_page(locale="en", viewport=PHONE)
    sign_in(phone, newcomer, PASSWORD)
    phone.goto("/marketplace/provider")
    assert path_of(phone) == "/marketplace/apply"  # no provider yet: the application
    _assert_phone_form(phone, "application at 375 px")

    phone.fill("#name", NAME)
    phone.fill("#credit_code", CREDIT_CODE[:-1] + ("1" if CREDIT_CODE[-1] != "1" else "2"))
    phone.locator("label", has_text="Home-service company").click()
    phone.select_option("#district_id", label="Heping")
    phone.fill("#address", "和平区浑河湾路 18 号")
    phone.context.grant_permissions(["geolocation"], origin=live_server)
    phone.context.set_geolocation({"latitude": 41.7512, "longitude": 123.4101})
    phone.click("#use-location")
    expect(phone.locator("#latitude")).to_have_value("41.751200")
    expect(phone.locator("#longitude")).to_have_value("123.410100")
    expect(phone.locator("#location-status")).to_contain_text("filled in")
    for district in ("Heping", "Hunnan"):
        phone.locator("#service_districts label", has_text=district).click()
    phone.fill("#contact_name", "刘经理")
    phone.fill("#contact_phone", "13912345678")
    phone.fill("#bank_account_name", NAME)
    phone.fill("#bank_name", "盛京银行浑南支行")
    phone.fill("#bank_account_number", "6222 0000 5555 6666")
    for day in ("mon", "tue", "wed", "thu", "fri"):
        phone.fill(f"#hours_{day}_from", "08:00")
        phone.fill(f"#hours_{day}_to", "18:00")

    with phone.expect_navigation():
        phone.click("#apply-form button[type=submit]")
    # The mistyped code is named next to its field; everything typed is still there.
    expect(phone.locator("#credit_code-error")).to_contain_text("does not match")
    expect(phone.locator("#credit_code")).to_have_attribute("aria-invalid", "true")
    expect(phone.locator("#name")).to_have_value(NAME)
    expect(phone.locator("#hours_fri_to")).to_have_value("18:00")
    _assert_phone_form(phone, "refused application at 375 px")

    phone.fill("#credit_code", CREDIT_CODE)
    with phone.expect_navigation():
        phone.click("#apply-form button[type=submit]")
    assert path_of(phone) == "/marketplace/provider", phone.locator("main").inner_text()
    expect(phone.locator(".status-line")).to_contain_text("waiting for the bureau's decision")
    missing = phone.locator(".notice.warn")
    expect(missing).to_contain_text("Business licence or registration certificate")

    # The licence, photographed as a PDF on the phone, completes what the bureau needs.
    phone.select_option("#doc-kind", "business_licence")
    phone.set_input_files(
        "#doc-file", {"name": "营业执照.pdf", "mimeType": "application/pdf", "buffer": PDF}
    )
    with phone.expect_navigation():
        phone.click("#documents button[type=submit]")
    expect(phone.locator(".flash.success")).to_contain_text("营业执照.pdf")
    expect(phone.locator("#documents .doc-list")).to_contain_text("营业执照.pdf")
    expect(missing).to_have_count(0)
    assert len(list(document_store.iterdir())) == 1
    sign_out(phone)

    desk = new_page(locale="en", viewport=DESK)
    sign_in(desk, "bureau.approver")
    desk.goto("/marketplace/bureau/providers")
    card = desk.locator(".item-card", has_text=NAME)
    expect(card).to_have_count(1)
    expect(card).to_contain_text(CREDIT_CODE)
    expect(card).not_to_contain_text("Documents still missing")
    with desk.expect_download() as download:
        card.locator(".doc-list a", has_text="营业执照.pdf").click()
    assert download.value.suggested_filename == "营业执照.pdf"
    assert Path(download.value.path()).read_bytes() == PDF
    checked, failures = contrast_failures(desk, 4.5)
    assert checked >= 40 and not failures, f"certification queue: low contrast: {failures}"
    with desk.expect_navigation():
        card.get_by_role("button", name="Approve for one year").click()
    expect(desk.locator(".flash.success")).to_contain_text(NAME)
    expect(desk.locator(".item-card", has_text=NAME)).to_have_count(0)

    until = (local_today() + timedelta(days=364)).isoformat()
    sign_in(phone, newcomer, PASSWORD)
    phone.goto("/marketplace/provider")
    expect(phone.locator(".status-line")).to_contain_text(f"Active until {until}.")
    _assert_phone_form(phone, "dashboard at 375 px", min_targets=20)
