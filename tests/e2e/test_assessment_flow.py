"""An assessment from the tablet to the voucher, in a real Chromium on the demo city.

The demo has one case waiting for a visit: 周玉兰, scheduled for agency LN-PG-2025-001,
whose assessors are assessor.li and assessor.zhao. Assessor Li scores it on a 768 x 1024
tablet while the page keeps a running total and level; Assessor Zhao signs on the same
tablet; the bureau's approver approves it; the elder is eligible the same day.
"""

from __future__ import annotations

from datetime import date

from playwright.sync_api import Page, expect

from assessment.instrument import instrument
from eldercare.demo import DEMO_PASSWORD
from eldercare.residents import compose_resident_id
from tests.e2e.conftest import PHONE
from tests.e2e.helpers import (
    contrast_failures,
    overflow,
    path_of,
    sign_in,
    sign_out,
    small_targets,
)

TABLET = {"width": 768, "height": 1024}
ZHOU_ID = compose_resident_id("210102", date(1942, 4, 4), 183)  # 周玉兰 (assessment/demo.py)
TARGETS = "#assessment-form input:not([type=hidden]), #assessment-form label.score-option, " + (
    "#assessment-form button, #assessment-form textarea, #assessment-form select"
)


def _open_zhous_form(page: Page) -> None:
    page.goto("/assessment/work")
    card = page.locator(".case-card", has_text="周**")
    expect(card).to_have_count(1)
    with page.expect_navigation():
        card.locator("a[href$='/record']").click()
    expect(page.locator("fieldset.score-item")).to_have_count(26)


def _choose(page: Page, code: str, score: int) -> None:
    page.locator(f"label[for='score-{code}-{score}']").click()
    expect(page.locator(f"#score-{code}-{score}")).to_be_checked()


def _assert_form_layout(page: Page, width: int, where: str) -> None:
    scroll_width, client_width = overflow(page)
    assert client_width == width, f"{where}: viewport is {client_width}px"
    assert scroll_width <= client_width, f"{where}: scrolls sideways ({scroll_width}px)"
    checked, bad = small_targets(page, TARGETS, 44)
    radios = sum(item.max - item.min + 1 for item in instrument().items.values())
    assert checked >= 2 * radios, f"{where}: only {checked} targets measured"
    assert not bad, f"{where}: targets under 44 x 44 px: {bad}"
    checked, failures = contrast_failures(page, 4.5)
    assert checked >= 100 and not failures, f"{where}: low contrast: {failures}"


def test_score_on_a_tablet_cosign_approve_and_the_elder_is_eligible(new_page):
    inst = instrument()
    intact, moderate = inst.level("intact").zh, inst.level("moderate").zh
    severe, complete = inst.level("severe").zh, inst.level("complete").zh

    # The same form on a phone: one column, nothing too small (Assessor Zhao looks first).
    phone = new_page(viewport=PHONE)
    sign_in(phone, "assessor.zhao")
    _open_zhous_form(phone)
    _assert_form_layout(phone, 375, "tablet form at 375 px")

    page = new_page(viewport=TABLET)
    sign_in(page, "assessor.li")
    _open_zhous_form(page)
    _assert_form_layout(page, 768, "tablet form at 768 px")
    total, level = page.locator("#live-total-figure"), page.locator("#live-level")
    expect(total).to_have_text("0")
    expect(level).to_have_text("—")

    # Every item at its most able score: the total climbs to 90, the level shows when the
    # last item is scored.
    items = list(inst.items.values())
    running = 0
    for index, item in enumerate(items):
        _choose(page, item.code, item.max)
        running += item.max
        if index in (0, 12, len(items) - 2):
            expect(total).to_have_text(str(running))
            expect(level).to_have_text("—")
    expect(total).to_have_text("90")
    expect(level).to_have_text(intact)
    expect(page.locator("#live-answered")).to_contain_text("26")

    # Self-care fully dependent: 90 - 32 = 58, moderate.
    self_care = next(d for d in inst.dimensions if d.code == "self_care")
    for item in self_care.items:
        _choose(page, item.code, item.min)
    expect(total).to_have_text("58")
    expect(page.locator("#dim-total-self_care")).to_have_text("0")
    expect(level).to_have_text(moderate)

    # The adjustments move the guide too, and undoing them moves it back.
    page.fill("#diagnoses", "F00")
    expect(level).to_have_text(severe)
    page.fill("#care_risk_events_30d", "2")
    expect(level).to_have_text(severe)  # both together still raise one level only
    page.locator("label[for='coma']").click()
    expect(level).to_have_text(complete)
    page.locator("label[for='coma']").click()
    page.fill("#diagnoses", "")
    page.fill("#care_risk_events_30d", "0")
    expect(level).to_have_text(moderate)
    expect(total).to_have_text("58")

    page.fill("#fee", "80")
    page.fill("#cosigner_username", "assessor.zhao")
    page.fill("#cosigner_password", DEMO_PASSWORD)
    with page.expect_navigation():
        page.click("#submit-assessment")
    assert path_of(page) == "/assessment/work", page.locator("main").inner_text()
    expect(page.locator(".flash.success")).to_contain_text("58")
    expect(page.locator(".case-card", has_text="周**")).to_have_count(0)
    sign_out(page)

    # The bureau's approver sees what was signed and approves it.
    sign_in(page, "bureau.approver")
    page.goto("/assessment/queue/review")
    card = page.locator(".review-case", has_text="周玉兰")
    expect(card).to_have_count(1)
    expect(card.locator(".total")).to_have_text("58 / 90")
    expect(card.locator(".level")).to_have_text(moderate)
    expect(card).to_contain_text("李芳")
    expect(card).to_contain_text("赵敏")
    expect(card).to_contain_text("¥80.00")
    with page.expect_navigation():
        card.locator("button.approve").click()
    expect(page.locator(".flash.success")).to_contain_text("周玉兰")
    expect(page.locator(".review-case", has_text="周玉兰")).to_have_count(0)

    # The same day, her eligibility page says yes, at the moderate level.
    page.goto("/assessment/")
    page.fill("#find-id-number", ZHOU_ID)
    with page.expect_navigation():
        page.locator("form[role=search] button[type=submit]").click()
    assert path_of(page).startswith("/assessment/residents/"), path_of(page)
    expect(page.locator("#eligibility-verdict")).to_have_class("verdict eligible")
    expect(page.locator("#eligibility-level")).to_have_text(moderate)
