"""The elder's voucher page on a 375 px phone and the bureau's pool page on a desk screen,
in a real Chromium on the demo city (whose demo issues this month's vouchers)."""

from __future__ import annotations

from tests.e2e.helpers import contrast_failures, overflow, sign_in, small_targets

TARGETS = "main a, main button, main input:not([type=hidden]), main select, main textarea"
DESK = {"width": 1280, "height": 900}


def test_the_elders_page_fits_a_phone_with_a_big_qr_and_big_amount(new_page):
    page = new_page()
    sign_in(page, "elder.wang")
    page.goto("/vouchers/")
    page.wait_for_selector("#amount-left")
    qr = page.locator("#qr-image")
    qr.wait_for(state="visible")
    box = qr.bounding_box()
    assert box["width"] >= 260, box
    amount_px = page.evaluate(
        "() => parseFloat(getComputedStyle(document.querySelector('#amount-left')).fontSize)"
    )
    assert amount_px >= 32
    assert page.locator("#qr-code").inner_text().count(" ") == 5  # 23 characters in 4s
    # The script counts down to the next code.
    page.wait_for_function("() => /\\d/.test(document.querySelector('#qr-countdown').textContent)")
    scroll, client = overflow(page)
    assert scroll <= client, f"sideways scrolling: {scroll} > {client}"
    checked, bad = small_targets(page, TARGETS)
    assert checked and not bad, bad
    checked, failures = contrast_failures(page)
    assert checked and not failures, failures


def test_the_pool_page_reads_on_a_desk_screen(new_page):
    page = new_page(viewport=DESK)
    sign_in(page, "bureau.approver")
    page.goto("/vouchers/bureau/pool")
    page.wait_for_selector("#ledger-check")
    assert page.locator("#fig-central").is_visible()
    scroll, client = overflow(page)
    assert scroll <= client, f"sideways scrolling: {scroll} > {client}"
    checked, failures = contrast_failures(page)
    assert checked and not failures, failures
