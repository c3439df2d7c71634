"""The elder's voucher page on a 375 px phone and the bureau's pool page on a desk screen,
in a real Chromium on the demo city (whose demo issues this month's vouchers)."""

from __future__ import annotations

from eldercare.db import db
from tests.e2e.helpers import (
    contrast_failures,
    overflow,
    screenshot_qr,
    sign_in,
    sign_out,
    small_targets,
)
from vouchers.redemption import qr_tokens

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


def _voucher_of_token(app, token: str) -> tuple[int, str]:
    """(resident id, elder's name) of the voucher a code on the screen belongs to."""
    from eldercare.residents import Resident
    from vouchers.models import Voucher

    with app.test_request_context():
        voucher = db.session.get(Voucher, qr_tokens.read_token(token).voucher_id)
        found = voucher.resident_id, db.session.get(Resident, voucher.resident_id).name
        db.session.remove()
    return found


def test_the_home_page_shows_the_voucher_and_a_qr_that_reads_without_a_tap(
    new_page, live_server_app, tmp_path
):
    """Issue 14 item 10: after signing in, the elder's home page is her voucher, not "my
    work": a heading of its own, the amount left in big type and the code to show, no tap."""
    page = new_page()
    sign_in(page, "elder.wang")  # arrives on "/"
    assert page.locator("main h1").inner_text().strip() == "我的消费券"  # "My voucher"
    assert "我的工作" not in page.locator("main").inner_text()  # "Your work"
    amount = page.locator("#amount-left")
    assert amount.is_visible() and amount.inner_text().startswith("¥")
    amount_px = page.evaluate(
        "() => parseFloat(getComputedStyle(document.querySelector('#amount-left')).fontSize)"
    )
    assert amount_px >= 32
    qr = page.locator("#qr-image")
    qr.wait_for(state="visible")
    assert qr.bounding_box()["width"] >= 260
    token = screenshot_qr(page, tmp_path / "elder-home.png")
    assert _voucher_of_token(live_server_app, token)[1] == "王秀英"
    assert page.locator("#qr-code").inner_text().replace(" ", "") == token
    scroll, client = overflow(page)
    assert scroll <= client, f"sideways scrolling: {scroll} > {client}"
    checked, bad = small_targets(page, TARGETS)
    assert checked and not bad, bad
    checked, failures = contrast_failures(page)
    assert checked and not failures, failures

    # Her son, who acts for her, finds her voucher and code on his home page too.
    sign_out(page)
    sign_in(page, "family.zhang")
    assert page.locator("main h1").inner_text().strip() == "王秀英的消费券"
    token = screenshot_qr(page, tmp_path / "family-home.png")
    assert _voucher_of_token(live_server_app, token)[1] == "王秀英"
