"""Issue 5's "done when", in real Chromium on the demo city.

王秀英 (elder.wang) opens her voucher on her phone. The station's caregiver (provider.staff)
points another phone's camera at it: that phone is a second Chromium whose camera plays a
video made (with ffmpeg) from a screenshot of the QR on the first phone, so the code goes
from one screen to the other through pixels, as in life. The scan page sends the camera's
frames to the server, which reads them with zxing-cpp. The caregiver checks in for lunch,
the co-payment is paid by card through the Stripe-compatible gateway (a real localstripe),
her son (family.zhang) finds the message, and the bureau's pool overview shows the money
moved from the voucher to "redeemed, not yet settled".
"""

from __future__ import annotations

import shutil
import subprocess
import time
from datetime import datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from playwright.sync_api import Page, expect

from eldercare.db import db
from eldercare.dev_gateway import TEST_SECRET_KEY, LocalStripe
from tests.e2e.conftest import CHROMIUM_ARGS, PHONE
from tests.e2e.helpers import path_of, screenshot_qr, sign_in, watch_csp
from tests.vouchers.conftest import GATEWAY_WEBHOOK_SECRET
from vouchers.models import TokenUse
from vouchers.redemption.qr_tokens import normalise_code, token_digest

STATION = {"latitude": 41.7760, "longitude": 123.4340}  # 和平区南湖社区养老服务站


@pytest.fixture(scope="module")
def card_gateway(live_server_app, tmp_path_factory):
    """Card payments on for the live server, through a localstripe of this module's own."""
    server = LocalStripe(tmp_path_factory.mktemp("gateway")).start()
    settings = {
        "PAYMENT_GATEWAY_URL": server.url,
        "PAYMENT_GATEWAY_SECRET_KEY": TEST_SECRET_KEY,
        "PAYMENT_WEBHOOK_SECRET": GATEWAY_WEBHOOK_SECRET,
    }
    before = {key: live_server_app.config.get(key) for key in settings}
    live_server_app.config.update(settings)
    try:
        yield server
    finally:
        live_server_app.config.update(before)
        server.stop()


def _amount(page: Page, selector: str) -> int:
    text = page.locator(selector).first.inner_text().strip().lstrip("¥").replace(",", "")
    yuan, fen = text.split(".")
    return int(yuan) * 100 + int(fen[:2])


def _used(app, token: str) -> bool:
    with app.app_context():
        used = db.session.scalar(
            sa.select(TokenUse.id).where(
                TokenUse.token_digest == token_digest(normalise_code(token))
            )
        )
        db.session.remove()
    return used is not None


def _camera_video(qr_png: Path, video: Path) -> None:
    """A few seconds of video of the QR on a white page, as the camera would see the phone."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.fail("ffmpeg is missing; scripts/system-deps.sh installs it")
    subprocess.run(  # noqa: S603 - fixed arguments, our own files
        [
            ffmpeg,
            "-loglevel",
            "error",
            "-y",
            "-loop",
            "1",
            "-i",
            str(qr_png),
            "-vf",
            "scale=480:480:force_original_aspect_ratio=decrease,"
            "pad=640:480:(ow-iw)/2:(oh-ih)/2:color=white,format=yuv420p",
            "-t",
            "6",
            "-r",
            "10",
            str(video),
        ],
        check=True,
        timeout=60,
    )


def test_qr_on_one_phone_scanned_by_another_paid_by_card(
    new_page,
    live_server,
    live_server_app,
    card_gateway,
    playwright,
    chromium_executable,
    tmp_path,
    csp_violations,
):
    # -- the elder's phone: her voucher, the QR large, the amount in big type
    elder = new_page()
    sign_in(elder, "elder.wang")
    elder.goto("/vouchers/")
    expect(elder.locator("#qr-image")).to_be_visible()
    left_before = _amount(elder, "#amount-left")
    shot = tmp_path / "qr-on-screen.png"
    token = screenshot_qr(elder, shot)
    if _used(live_server_app, token):
        # Another test scanned this minute's code already (a code is usable once): wait for
        # the page to show the next minute's, as the elder would.
        time.sleep(61 - datetime.now().second)
        elder.reload()
        token = screenshot_qr(elder, shot)
    assert not _used(live_server_app, token)

    # -- the caregiver's phone: a separate browser whose camera films the elder's screen
    video = tmp_path / "camera.y4m"
    _camera_video(shot, video)
    camera_browser = playwright.chromium.launch(
        executable_path=chromium_executable,
        headless=True,
        args=[
            *CHROMIUM_ARGS,
            "--use-fake-device-for-media-stream",
            "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={video}",
        ],
    )
    try:
        context = camera_browser.new_context(
            base_url=live_server,
            locale="zh-CN",
            viewport=PHONE,
            permissions=["camera", "geolocation"],
            geolocation=STATION,
        )
        context.set_default_timeout(15_000)
        watch_csp(context, csp_violations)  # the camera page too (checked by new_page)
        staff = context.new_page()
        sign_in(staff, "provider.staff")
        staff.goto("/vouchers/scan")
        staff.click("#camera-start")
        staff.wait_for_url("**/vouchers/scan/*", timeout=30_000)
        expect(staff.locator("#elder-name")).to_have_text("王**")
        assert _amount(staff, "#voucher-balance") == left_before

        lunch = staff.locator("#scope-services li", has_text="助餐").first
        with staff.expect_navigation():
            lunch.locator("button.check-in").click()
        assert path_of(staff).startswith("/vouchers/redemptions/")
        with staff.expect_navigation():
            staff.click("#set-price")
        subsidy, copay = _amount(staff, "#subsidy"), _amount(staff, "#copay")
        assert subsidy > 0 and copay > 0

        # The card form sends once: the Charge button disables itself as the form goes
        # (held back here so the page stays to be looked at), and a second tap sends nothing.
        staff.evaluate(
            "document.querySelector('#card-form')"
            ".addEventListener('submit', (event) => event.preventDefault())"
        )
        staff.click("#pay-card")
        expect(staff.locator("#pay-card")).to_be_disabled()
        assert staff.locator("#card-form").get_attribute("data-sent") == "yes"
        staff.reload()

        staff.fill("#card_number", "4242 4242 4242 4242")
        staff.fill("#card_expiry", "12/30")
        staff.fill("#card_cvc", "123")
        with staff.expect_navigation():
            staff.click("#pay-card")
        expect(staff.locator("#receipt")).to_be_visible()
        expect(staff.locator("#redemption-status .badge")).to_have_attribute(
            "data-status", "redeemed"
        )
        assert _amount(staff, "#receipt-subsidy") == subsidy
        context.close()
    finally:
        camera_browser.close()

    # -- the elder's phone shows less left; the code was used once and is refused again
    elder.reload()
    assert _amount(elder, "#amount-left") == left_before - subsidy

    # -- her son is told: the outbox message on his Messages page
    son = new_page()
    sign_in(son, "family.zhang")
    son.goto("/messages")
    newest = son.locator("main").inner_text()
    assert f"¥{subsidy // 100}.{subsidy % 100:02d}" in newest
    assert "南湖社区养老服务站" in newest

    # -- the bureau's pool overview: the subsidy sits in "redeemed, not yet settled"
    desk = new_page(viewport={"width": 1280, "height": 900})
    sign_in(desk, "bureau.approver")
    desk.goto("/vouchers/bureau/pool")
    desk.locator("#verify-form button").click()  # the check runs hourly; check now
    desk.wait_for_url("**/vouchers/bureau/pool")
    expect(desk.locator("#ledger-check")).to_have_class("notice ok")
    unsettled = int(desk.locator("#fig-unsettled").get_attribute("data-fen"))
    held = int(desk.locator("#fig-held").get_attribute("data-fen"))
    assert held == 0
    assert unsettled >= subsidy
    # And the gateway really charged the co-payment, once, in fen of CNY.
    import requests

    intents = requests.get(
        f"{card_gateway.url}/v1/payment_intents",
        headers={"Authorization": f"Bearer {TEST_SECRET_KEY}"},
        timeout=5,
    ).json()["data"]
    paid = [i for i in intents if i["status"] == "succeeded"]
    assert [(i["amount"], i["currency"]) for i in paid] == [(copay, "cny")]
