"""The account-link pages on a 375 px phone, in a real Chromium on the demo city: a family
member asks, a city-wide officer refuses (the number matches nobody), the resident's
accounts page; each page in one column, with 18 px text, 44 px targets and 4.5:1 contrast."""

from __future__ import annotations

from datetime import date

from playwright.sync_api import Page, expect

from eldercare.residents import compose_resident_id
from tests.e2e.helpers import contrast_failures, overflow, sign_in, small_targets, small_text

TARGETS = "main a, main button, main input:not([type=hidden]), main select, main textarea"
BODY_TEXT = "body, p, label, input, select, textarea, button, li, td, th, dd, dt"
NOBODY = compose_resident_id("210102", date(1951, 7, 8), 975)  # well formed, not registered


def _assert_elder_first(page: Page, where: str) -> None:
    scroll, client = overflow(page)
    assert scroll <= client, f"{where}: scrolls sideways ({scroll} > {client})"
    assert not small_text(page, BODY_TEXT, 18), where
    checked, bad = small_targets(page, TARGETS)
    assert checked and not bad, f"{where}: {bad}"
    checked, failures = contrast_failures(page)
    assert checked and not failures, f"{where}: {failures}"


def test_ask_refuse_and_see_the_answer(new_page):
    family = new_page(locale="en")
    sign_in(family, "family.zhang")
    family.goto("/account/link")
    _assert_elder_first(family, "ask page")
    family.fill("#id_number", NOBODY)
    family.fill("#name", "张秀兰")
    family.select_option("#relationship", "child")
    with family.expect_navigation():
        family.click("main form button[type=submit]")
    expect(family.locator(".flash")).to_contain_text("request has been sent")
    expect(family.locator("main table")).to_contain_text("Waiting for the bureau")

    officer = new_page(locale="en")
    sign_in(officer, "bureau.officer")
    officer.goto("/bureau/link-requests")
    card = officer.locator("li.card", has_text=NOBODY)
    expect(card).to_contain_text("No resident has this ID number")
    _assert_elder_first(officer, "queue page")
    card.locator("textarea").fill("No one with this ID number is registered; please visit us.")
    with officer.expect_navigation():
        card.locator("button", has_text="Refuse").click()
    expect(officer.locator(".flash")).to_contain_text("refused")

    family.reload()
    expect(family.locator("main table")).to_contain_text("please visit us")


def test_the_residents_accounts_page(new_page):
    page = new_page()
    sign_in(page, "bureau.officer")
    page.goto("/bureau/residents/?q=王秀英")
    page.locator("main table a", has_text="王秀英").first.click()
    page.locator("main a", has_text="关联到该居民的账户").click()
    expect(page.locator("main")).to_contain_text("family.zhang")
    _assert_elder_first(page, "resident accounts page")
