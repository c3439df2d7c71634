"""The Content-Security-Policy in a real Chromium (issue 13 item 4).

The pages whose scripts were once inline, or still drive something, under the policy: each
script still does its job (a button it shows, a total it keeps, a countdown it runs, a
button it disables) and the browser reports no violation (``new_page`` fails the test on
any). First, a check that the watch itself works: an inline script and an inline style put
into a page are refused and reported.
"""

from __future__ import annotations

from datetime import date, datetime, time

import pytest
import sqlalchemy as sa
from playwright.sync_api import Page, expect

from assessment import lifecycle
from assessment.models import Assessor
from eldercare.accounts import User
from eldercare.db import db, unit_of_work
from eldercare.demo import district_by_code, ensure_resident
from eldercare.residents import compose_resident_id
from eldercare.timeutil import SHANGHAI, local_today
from tests.e2e.helpers import is_csp_violation, sign_in

DESK = {"width": 1280, "height": 900}


@pytest.fixture(scope="module")
def case_to_record(live_server_app) -> int:
    """A case of its own waiting for Assessor Li (the demo's one is another test's)."""
    with live_server_app.app_context():
        with unit_of_work():
            li = db.session.scalar(
                sa.select(Assessor).join(User).where(User.username == "assessor.li")
            )
            officer = db.session.scalar(sa.select(User).where(User.username == "bureau.officer"))
            resident = ensure_resident(
                compose_resident_id("210102", date(1941, 2, 2), 391),
                "吴桂芝",
                district_by_code("210102"),
                "南湖街道",
                "文化路 9 号",
                41.77,
                123.42,
            )
            case = lifecycle.apply(resident, type="first", applied_by=officer, via="bureau")
            lifecycle.assign(case, li.agency)
            visit = datetime.combine(local_today(), time(15), tzinfo=SHANGHAI)
            lifecycle.schedule(case, visit, actor=li.user)
            case_id = case.id
        db.session.remove()
    return case_id


def test_an_inline_script_and_style_are_refused_and_reported(page: Page, csp_violations):
    page.goto("/login")
    with page.expect_console_message(lambda m: is_csp_violation(m.text)):
        page.evaluate(
            """() => {
              const s = document.createElement('script');
              s.textContent = 'window.inlineRan = true';
              document.head.appendChild(s);
            }"""
        )
    assert page.evaluate("() => window.inlineRan === undefined")
    with page.expect_console_message(lambda m: is_csp_violation(m.text)):
        page.evaluate("() => document.querySelector('h1').setAttribute('style', 'color: red')")
    colour = page.evaluate("() => getComputedStyle(document.querySelector('h1')).color")
    assert colour != "rgb(255, 0, 0)"
    assert any("script-src" in v for v in csp_violations), csp_violations
    assert any("style-src" in v for v in csp_violations), csp_violations
    csp_violations.clear()  # seen, as they should be: not a failure of this test


def test_the_search_shows_its_location_button(page: Page):
    page.goto("/marketplace/")
    expect(page.locator("#use-location")).to_be_visible()  # search.js unhides it


def test_the_elders_voucher_page_counts_down(new_page):
    page = new_page()
    sign_in(page, "elder.wang")
    page.goto("/vouchers/")
    # elder_qr.js writes the seconds into the countdown's template.
    page.wait_for_function("() => /\\d/.test(document.querySelector('#qr-countdown').textContent)")


def test_the_scan_page_answers_the_camera_button(new_page):
    page = new_page()
    sign_in(page, "provider.staff")
    page.goto("/vouchers/scan")
    status = page.locator("#camera-status")
    expect(status).to_have_text("")
    page.click("#camera-start")
    # No camera in this browser: scan.js says so in words (refused or missing).
    words = page.locator("#camera-words")
    said = [words.get_attribute(f"data-{name}") for name in ("missing", "denied")]
    expect(status).not_to_have_text("")
    assert status.inner_text() in said


def test_the_assessment_record_keeps_a_running_total(new_page, case_to_record):
    page = new_page(viewport=DESK)
    sign_in(page, "assessor.li")
    page.goto(f"/assessment/cases/{case_to_record}/record")
    total = page.locator("#live-total-figure")
    expect(total).to_have_text("0")
    first = page.locator("fieldset.score-item").first
    option = first.locator("label.score-option").last
    option.click()
    value = page.locator("#" + option.get_attribute("for")).get_attribute("value")
    expect(total).to_have_text(value)  # live_total.js, fed by the page's JSON data block


def test_a_settlement_form_sends_once(new_page):
    page = new_page(viewport=DESK)
    sign_in(page, "bureau.officer")
    page.goto("/settlement/")
    button = page.locator("button[id^=settle-]").first
    form = page.locator("form:has(button[id^=settle-])").first
    # Held back here so that nothing is settled: only the script's part is looked at.
    form.evaluate("(f) => f.addEventListener('submit', (e) => e.preventDefault())")
    button.click()
    expect(button).to_be_disabled()  # submit_once.js
    assert form.get_attribute("data-sent") == "yes"
