"""The provider's scan-and-redeem pages through the Flask client and the real services:
/r/<token> and printed cards, the scan page's three ways in, check-in with its refusals, the
price and the split, cash, card (localstripe, 3-D Secure), the receipt and the reversal."""

import re
from datetime import timedelta
from html import unescape

import pytest
import requests
import sqlalchemy as sa

from eldercare.timeutil import now_utc
from marketplace import catalogue
from tests.confirm_helpers import asks_first
from tests.marketplace.conftest import ELDER_HOME
from vouchers.models import JournalEntry, Redemption, TokenUse
from vouchers.pool import ledger
from vouchers.redemption import qr_tokens
from vouchers.redemption.qr_tokens import make_token

NEAR_HOME = (ELDER_HOME[0] + 0.001, ELDER_HOME[1])  # about 110 m from the elder's door
FAR = (ELDER_HOME[0] + 0.01, ELDER_HOME[1])  # about 1.1 km
CAREGIVER_PASSWORD = "caregiver-pass-1"


@pytest.fixture
def en(client):
    """The client, reading English (messages are asserted in English)."""
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"
    return client


def sign_in_caregiver(shop, login):
    login(shop.caregiver, CAREGIVER_PASSWORD)


def scanned(client, shop, token=None):
    """Open /r/<token> as the signed-in user; the scan page's path."""
    token = token or make_token(shop.voucher.id)
    response = client.get(f"/r/{token}")
    assert response.status_code == 302, response.get_data(as_text=True)
    assert response.headers["Location"].startswith("/vouchers/scan/")
    return response.headers["Location"]


def checked_in(client, shop, service=None, location=None):
    page = scanned(client, shop)
    data = {"service_id": (service or shop.market.meals).id}
    if location:
        data |= {"latitude": str(location[0]), "longitude": str(location[1])}
    response = client.post(f"{page}/check-in", data=data)
    assert response.status_code == 302, response.get_data(as_text=True)
    return response.headers["Location"]


def count(session, model):
    return session.scalar(sa.select(sa.func.count()).select_from(model))


def money(shop, session):
    session.refresh(shop.voucher)
    b = ledger.balances()
    return shop.voucher.balance_fen, shop.voucher.held_fen, b["redeemed:unsettled"]


# --------------------------------------------------------------------------- /r/<token>


def test_scanning_a_fresh_token_shows_the_elder_masked_the_balance_and_the_services(
    shop, en, login
):
    sign_in_caregiver(shop, login)
    page = en.get(scanned(en, shop))
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "王**" in html and shop.elder.name not in html
    assert "¥500.00" in html
    assert "社区助餐（午餐）" in html and "上门助浴" in html
    assert "居家保洁" not in html  # another provider's service


def test_check_in_price_cash_redeems_and_moves_the_balance_once(shop, en, login, db_session):
    sign_in_caregiver(shop, login)
    page = scanned(en, shop)
    data = {"service_id": shop.market.meals.id}
    first = en.post(f"{page}/check-in", data=data)
    again = en.post(f"{page}/check-in", data=data)  # a double tap
    assert first.status_code == again.status_code == 302
    assert first.headers["Location"] == again.headers["Location"]
    assert count(db_session, Redemption) == 1
    where = first.headers["Location"]

    shown = en.get(where).get_data(as_text=True)
    assert 'value="15"' in shown  # the listed price, prefilled
    assert en.post(f"{where}/check-out").status_code == 302
    priced = en.post(f"{where}/price", data={"price": "15", "insurance": ""})
    assert priced.status_code == 302
    html = en.get(where).get_data(as_text=True)
    assert "¥6.00" in html and "¥9.00" in html and "Paid in cash" in html
    assert money(shop, db_session) == (50_000, 0, 0)

    assert en.post(f"{where}/cash").status_code == 302
    assert en.post(f"{where}/cash").status_code == 302  # the same form again
    r = db_session.scalar(sa.select(Redemption))
    db_session.refresh(r)
    assert (r.status, r.payment_method, r.subsidy_fen, r.copay_fen) == (
        "redeemed",
        "cash",
        600,
        900,
    )
    assert r.checked_out_at is not None
    assert money(shop, db_session) == (49_400, 0, 600)
    captures = db_session.scalar(
        sa.select(sa.func.count()).select_from(JournalEntry).where(JournalEntry.kind == "capture")
    )
    assert captures == 1
    receipt = en.get(where).get_data(as_text=True)
    assert 'id="receipt"' in receipt and "南湖社区养老服务站" in receipt and "李护理员" in receipt
    listed = en.get("/vouchers/redemptions").get_data(as_text=True)
    assert "社区助餐（午餐）" in listed and "Redeemed" in listed


def test_nothing_left_to_pay_offers_only_done(shop, en, login, db_session):
    sign_in_caregiver(shop, login)
    where = checked_in(en, shop)
    # Insurance pays 14 of 15 yuan: the voucher pays 40 fen, the elder 60; with 15 of 15
    # nothing is left for the voucher, which the service refuses.
    refused = en.post(f"{where}/price", data={"price": "15", "insurance": "15"})
    assert refused.status_code == 422
    assert "Nothing is left for the voucher to pay" in refused.get_data(as_text=True)
    r = db_session.scalar(sa.select(Redemption))
    assert r.price_fen is None
    shop.voucher.policy.ratio_bp = 10_000  # a policy paying all of it
    db_session.flush()
    assert en.post(f"{where}/price", data={"price": "15"}).status_code == 302
    html = en.get(where).get_data(as_text=True)
    assert 'id="done"' in html and 'id="paid-cash"' not in html
    assert en.post(f"{where}/cash").status_code == 302
    db_session.refresh(r)
    assert (r.status, r.payment_method, r.copay_fen) == ("redeemed", "none", 0)


@pytest.mark.parametrize(
    ("typed", "fen"),
    [("15", 1500), ("12.5", 1250), ("12.50", 1250), ("¥12", 1200), ("0.05", 5)],
)
def test_prices_typed_in_yuan_are_read_exactly(shop, en, login, db_session, typed, fen):
    sign_in_caregiver(shop, login)
    where = checked_in(en, shop)
    assert en.post(f"{where}/price", data={"price": typed}).status_code == 302
    assert db_session.scalar(sa.select(Redemption.price_fen)) == fen


@pytest.mark.parametrize("typed", ["15.505", "-15", "fifteen", "", "1e3"])
def test_unreadable_prices_are_refused_and_change_nothing(shop, en, login, db_session, typed):
    sign_in_caregiver(shop, login)
    where = checked_in(en, shop)
    response = en.post(f"{where}/price", data={"price": typed, "insurance": "0"})
    assert response.status_code == 422
    assert "Enter the amount in yuan" in response.get_data(as_text=True)
    assert db_session.scalar(sa.select(Redemption.price_fen)) is None


def test_a_price_above_the_listed_one_is_refused(shop, en, login, db_session):
    sign_in_caregiver(shop, login)
    where = checked_in(en, shop)
    response = en.post(f"{where}/price", data={"price": "15.01"})
    assert response.status_code == 422
    assert "more than the listed price of ¥15.00" in response.get_data(as_text=True)
    assert db_session.scalar(sa.select(Redemption.price_fen)) is None


def test_cancel_before_payment(shop, en, login, db_session):
    sign_in_caregiver(shop, login)
    where = checked_in(en, shop)
    response = en.post(f"{where}/cancel")
    assert response.status_code == 302 and response.headers["Location"] == "/vouchers/scan"
    assert db_session.scalar(sa.select(Redemption.status)) == "cancelled"
    assert money(shop, db_session) == (50_000, 0, 0)


# --------------------------------------------------------------------------- refusals


def test_home_service_without_location_is_refused_and_nothing_is_made(shop, en, login, db_session):
    sign_in_caregiver(shop, login)
    page = scanned(en, shop)
    response = en.post(
        f"{page}/check-in",
        data={"service_id": shop.market.bath.id, "latitude": "", "longitude": ""},
    )
    assert response.status_code == 422
    assert "A home service needs the phone&#39;s location" in response.get_data(as_text=True)
    assert count(db_session, Redemption) == 0
    # Near the home it goes through, with the distance on the redemption's page.
    ok = en.post(
        f"{page}/check-in",
        data={
            "service_id": shop.market.bath.id,
            "latitude": NEAR_HOME[0],
            "longitude": NEAR_HOME[1],
        },
    )
    assert ok.status_code == 302
    assert "111 m from the elder" in en.get(ok.headers["Location"]).get_data(as_text=True)


def test_home_service_refusal_names_the_missing_location_first(shop, login, client, db_session):
    """The notice at the top says why (issue 14 item 3), not "some information is not
    valid", in both languages."""
    sign_in_caregiver(shop, login)
    page = scanned(client, shop)
    for language, reason in (
        ("en", "A home service needs the phone&#39;s location at check-in."),
        ("zh-CN", "上门服务签到时需要手机位置"),
    ):
        client.environ_base["HTTP_ACCEPT_LANGUAGE"] = language
        response = client.post(f"{page}/check-in", data={"service_id": shop.market.bath.id})
        assert response.status_code == 422
        html = response.get_data(as_text=True)
        first_alert = re.search(r'role="alert">\s*<p class="tight">(.*?)</p>', html, re.S)
        assert first_alert.group(1).strip().startswith(reason), first_alert.group(1)
        assert "not valid" not in html and "填写的部分信息不正确" not in html
    assert count(db_session, Redemption) == 0


def station_bath(shop, place="provider"):
    """The demo's station bath: a bathroom at the station, a carer helps."""
    return catalogue.add_service(
        shop.market.station,
        actor=shop.market.station_admin,
        category_code="bathing",
        title="助浴（站内浴室，护理员协助）",
        description="",
        unit="visit",
        price_fen=6000,
        capacity_per_slot=2,
        districts=[shop.market.heping],
        delivery_place=place,
    )


def test_a_service_at_the_providers_premises_checks_in_without_location(
    shop, en, login, db_session
):
    bath = station_bath(shop)
    sign_in_caregiver(shop, login)
    page = scanned(en, shop)
    card = re.search(
        rf'<li[^>]*>(?:(?!</li>).)*?value="{bath.id}".*?</li>',
        en.get(page).get_data(as_text=True),
        re.S,
    )
    assert card is not None
    assert "At the provider's premises" in unescape(card.group(0))
    assert "needs the phone" not in card.group(0) and "needs-location" not in card.group(0)
    home = re.search(
        rf'<li[^>]*>(?:(?!</li>).)*?value="{shop.market.bath.id}".*?</li>',
        en.get(page).get_data(as_text=True),
        re.S,
    )
    assert "Home visit" in home.group(0) and "needs-location" in home.group(0)
    response = en.post(f"{page}/check-in", data={"service_id": bath.id})
    assert response.status_code == 302, response.get_data(as_text=True)
    redemption = db_session.scalar(sa.select(Redemption))
    assert redemption.service_id == bath.id and redemption.check_in_distance_m is None
    receipt = en.get(response.headers["Location"]).get_data(as_text=True)
    assert "At the provider's premises" in unescape(receipt)


def test_home_service_too_far_from_home_is_refused(shop, en, login, db_session):
    sign_in_caregiver(shop, login)
    page = scanned(en, shop)
    response = en.post(
        f"{page}/check-in",
        data={"service_id": shop.market.bath.id, "latitude": FAR[0], "longitude": FAR[1]},
    )
    assert response.status_code == 409
    html = response.get_data(as_text=True)
    assert "from the elder&#39;s home; a home service must be checked in within 500 m" in html
    assert count(db_session, Redemption) == 0


def test_staff_without_a_certificate_is_refused(shop, en, login, db_session):
    login(shop.station_admin)  # the station's admin has no caregiver certificate
    page = scanned(en, shop)
    response = en.post(
        f"{page}/check-in",
        data={
            "service_id": shop.market.bath.id,
            "latitude": NEAR_HOME[0],
            "longitude": NEAR_HOME[1],
        },
    )
    assert response.status_code == 403
    assert "needs a valid caregiver certificate" in response.get_data(as_text=True)
    assert count(db_session, Redemption) == 0


def test_another_staff_members_scan_page_looks_missing(shop, en, login, db_session):
    sign_in_caregiver(shop, login)
    page = scanned(en, shop)
    en.post("/logout")
    login(shop.station_admin)
    assert en.get(page).status_code == 404
    response = en.post(f"{page}/check-in", data={"service_id": shop.market.meals.id})
    assert response.status_code == 404
    assert count(db_session, Redemption) == 0


def test_forged_expired_and_replayed_tokens_are_refused_with_what_to_do(
    shop, en, login, db_session
):
    sign_in_caregiver(shop, login)
    token = make_token(shop.voucher.id)
    forged = token[:-1] + ("0" if token[-1] != "0" else "1")
    response = en.get(f"/r/{forged}")
    assert response.status_code == 422
    assert "This code is not valid. Ask the elder to show the code again." in response.get_data(
        as_text=True
    )
    old = make_token(shop.voucher.id, now=now_utc() - timedelta(minutes=5))
    response = en.get(f"/r/{old}")
    assert response.status_code == 422
    assert "This code has expired" in response.get_data(as_text=True)
    assert count(db_session, TokenUse) == 0

    scanned(en, shop, token)
    en.post("/logout")
    login(shop.station_admin)
    response = en.get(f"/r/{token}")
    assert response.status_code == 409
    assert "This code has already been used" in response.get_data(as_text=True)
    assert count(db_session, TokenUse) == 1


def test_the_family_opening_their_own_code_does_not_use_it(shop, en, login, db_session):
    login(shop.son)
    token = make_token(shop.voucher.id)
    response = en.get(f"/r/{token}")
    assert response.status_code == 403
    assert "This code is for the provider" in response.get_data(as_text=True)
    assert count(db_session, TokenUse) == 0


def test_not_signed_in_goes_to_the_login_and_back(shop, en, db_session):
    token = make_token(shop.voucher.id)
    response = en.get(f"/r/{token}")
    assert response.status_code == 302
    assert response.headers["Location"] == f"/login?next=/r/{token}"
    assert count(db_session, TokenUse) == 0
    signed_in = en.post(
        response.headers["Location"],
        data={"username": shop.caregiver.username, "password": CAREGIVER_PASSWORD},
    )
    assert signed_in.headers["Location"] == f"/r/{token}"
    assert en.get(f"/r/{token}").headers["Location"].startswith("/vouchers/scan/")


# --------------------------------------------------------------------------- ways to read a code


def test_typed_code_with_dashes_and_lowercase_works(shop, en, login):
    pytest.importorskip("vouchers.redemption.qr_decode")
    sign_in_caregiver(shop, login)
    token = make_token(shop.voucher.id)
    typed = qr_tokens.group(token).replace(" ", "-").lower()
    response = en.post("/vouchers/scan/code", data={"code": typed})
    assert response.status_code == 302
    assert response.headers["Location"] == f"/r/{token}"
    bad = en.post("/vouchers/scan/code", data={"code": "no such thing!"})
    assert bad.status_code == 422
    assert "Type the code under the elder" in bad.get_data(as_text=True)


def test_photo_upload_is_decoded_on_the_server(shop, en, login):
    qr_images = pytest.importorskip("vouchers.redemption.qr_images")
    pytest.importorskip("vouchers.redemption.qr_decode")
    sign_in_caregiver(shop, login)
    token = make_token(shop.voucher.id)
    with en.application.test_request_context():
        png = qr_images.qr_png(qr_tokens.qr_url(token))
    from io import BytesIO

    response = en.post(
        "/vouchers/scan/photo",
        data={"photo": (BytesIO(png), "code.png")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 302
    assert response.headers["Location"] == f"/r/{token}"
    blank = en.post(
        "/vouchers/scan/photo",
        data={"photo": (BytesIO(_blank_png()), "x.png")},
        content_type="multipart/form-data",
    )
    assert blank.status_code == 422
    assert "No voucher code could be read" in blank.get_data(as_text=True)


def _blank_png() -> bytes:
    from io import BytesIO

    from PIL import Image

    out = BytesIO()
    Image.new("RGB", (200, 200), "white").save(out, "PNG")
    return out.getvalue()


def test_camera_frames_answer_json(shop, en, login):
    qr_images = pytest.importorskip("vouchers.redemption.qr_images")
    pytest.importorskip("vouchers.redemption.qr_decode")
    from io import BytesIO

    sign_in_caregiver(shop, login)
    token = make_token(shop.voucher.id)
    with en.application.test_request_context():
        png = qr_images.qr_png(qr_tokens.qr_url(token))
    hit = en.post(
        "/vouchers/scan/frame",
        data={"frame": (BytesIO(png), "frame.png")},
        content_type="multipart/form-data",
    )
    assert hit.status_code == 200 and hit.json == {"found": True, "next": f"/r/{token}"}
    miss = en.post(
        "/vouchers/scan/frame",
        data={"frame": (BytesIO(_blank_png()), "frame.png")},
        content_type="multipart/form-data",
    )
    assert miss.status_code == 200 and miss.json == {"found": False}
    assert en.post("/vouchers/scan/frame").status_code == 400


def test_the_scan_page_needs_a_provider_account(shop, en, login):
    login(shop.son)
    assert en.get("/vouchers/scan").status_code == 403
    en.post("/logout")
    sign_in_caregiver(shop, login)
    html = en.get("/vouchers/scan").get_data(as_text=True)
    assert 'capture="environment"' in html
    assert '<script src="/vouchers/static/scan.js"' in html
    assert 'src="http' not in html and "//cdn" not in html  # every asset is the app's own


# --------------------------------------------------------------------------- cards (payments)


def priced(client, shop):
    where = checked_in(client, shop)
    assert client.post(f"{where}/price", data={"price": "15"}).status_code == 302
    return where


def card_form(number, expiry="12/30", cvc="123"):
    return {"card_number": number, "card_expiry": expiry, "card_cvc": cvc}


def test_card_payment_through_the_gateway_redeems(shop, en, login, db_session, gateway_app_config):
    sign_in_caregiver(shop, login)
    where = priced(en, shop)
    assert 'id="card-form"' in en.get(where).get_data(as_text=True)
    response = en.post(f"{where}/card", data=card_form("4242 4242 4242 4242"))
    assert response.status_code == 302 and response.headers["Location"] == where
    r = db_session.scalar(sa.select(Redemption))
    db_session.refresh(r)
    assert (r.status, r.payment_method) == ("redeemed", "card")
    assert money(shop, db_session) == (49_400, 0, 600)


def test_declined_card_shows_the_options_again(shop, en, login, db_session, gateway_app_config):
    sign_in_caregiver(shop, login)
    where = priced(en, shop)
    response = en.post(f"{where}/card", data=card_form("4000000000000341"))
    assert response.status_code == 402
    html = response.get_data(as_text=True)
    assert "The card was declined" in html and 'id="paid-cash"' in html and 'id="card-form"' in html
    assert money(shop, db_session) == (50_000, 0, 0)
    bad = en.post(f"{where}/card", data=card_form("42", "13/99", "x"))
    assert bad.status_code == 422
    assert "Enter the card number" in bad.get_data(as_text=True)
    assert en.post(f"{where}/cash").status_code == 302
    assert db_session.scalar(sa.select(Redemption.status)) == "redeemed"


def test_three_d_secure_goes_to_the_bank_and_back(shop, en, login, db_session, gateway_app_config):
    sign_in_caregiver(shop, login)
    where = priced(en, shop)
    response = en.post(f"{where}/card", data=card_form("4000002760003184"))
    assert response.status_code == 302
    bank = response.headers["Location"]
    assert bank.startswith(gateway_app_config["PAYMENT_GATEWAY_URL"])
    # Before the payer answers, the waiting page refreshes itself.
    waiting = en.get(f"{where}/payment")
    assert waiting.status_code == 200 and 'http-equiv="refresh"' in waiting.get_data(as_text=True)
    back = requests.post(bank, data={"success": "true"}, allow_redirects=False, timeout=5)
    assert back.status_code == 302
    return_url = back.headers["Location"]
    assert f"{where}/payment" in return_url
    done = en.get(return_url)
    assert done.status_code == 302 and done.headers["Location"] == where
    assert db_session.scalar(sa.select(Redemption.status)) == "redeemed"
    assert money(shop, db_session) == (49_400, 0, 600)


def test_reversal_from_the_page_refunds_the_card(shop, en, login, db_session, gateway_app_config):
    sign_in_caregiver(shop, login)
    where = priced(en, shop)
    en.post(f"{where}/card", data=card_form("4242424242424242"))
    html = en.get(where).get_data(as_text=True)
    assert 'id="reverse-form"' in html
    refused = en.post(f"{where}/reverse", data={"reason": "  "})
    assert refused.status_code == 422
    assert "Say why the redemption is reversed." in refused.get_data(as_text=True)
    assert db_session.scalar(sa.select(Redemption.status)) == "redeemed"
    # Issue 14 item 7: the first POST asks, with the amounts, and refunds nothing.
    before = money(shop, db_session)
    asks_first(
        en,
        f"{where}/reverse",
        {"reason": "服务未完成"},
        "Reverse the redemption of ¥15.00?",
        "refunded to the elder's card",
        "服务未完成",
    )
    r = db_session.scalar(sa.select(Redemption))
    db_session.refresh(r)
    assert r.status == "redeemed" and r.refund_id is None
    assert money(shop, db_session) == before
    response = en.post(f"{where}/reverse", data={"reason": "服务未完成", "confirm": "1"})
    assert response.status_code == 302
    r = db_session.scalar(sa.select(Redemption))
    db_session.refresh(r)
    assert r.status == "reversed" and r.refund_id
    assert money(shop, db_session) == (50_000, 0, 0)
    assert 'id="reverse-form"' not in en.get(where).get_data(as_text=True)


# --------------------------------------------------------------------------- printed cards


def test_printed_card_asks_for_the_pin_then_opens_the_voucher(shop, en, login, db_session):
    from vouchers.redemption import cards

    card = cards.issue_card(shop.elder.id, "583920", actor=shop.son)
    sign_in_caregiver(shop, login)
    url = f"/r/c{card.card_code}"
    page = en.get(url)
    assert page.status_code == 200 and 'id="pin-form"' in page.get_data(as_text=True)
    assert count(db_session, TokenUse) == 0
    wrong = en.post(url, data={"pin": "111111"})
    assert wrong.status_code == 422
    assert "Tries left today: 4" in wrong.get_data(as_text=True)
    right = en.post(url, data={"pin": "583920"})
    assert right.status_code == 302 and right.headers["Location"].startswith("/vouchers/scan/")
    assert "¥500.00" in en.get(right.headers["Location"]).get_data(as_text=True)


def test_five_wrong_pins_lock_the_card(shop, en, login, db_session):
    from vouchers.redemption import cards

    card = cards.issue_card(shop.elder.id, "583920", actor=shop.son)
    sign_in_caregiver(shop, login)
    url = f"/r/c{card.card_code}"
    for _ in range(4):
        assert en.post(url, data={"pin": "000001"}).status_code == 422
    locked = en.post(url, data={"pin": "000001"})
    assert locked.status_code == 403
    assert "This card is locked for today" in locked.get_data(as_text=True)
    # The right PIN does not open a locked card either.
    assert en.post(url, data={"pin": "583920"}).status_code == 403
    assert count(db_session, TokenUse) == 0


def test_gateway_down_keeps_the_hold_and_says_what_happens(
    app, shop, en, login, db_session, stoppable_localstripe
):
    from eldercare.dev_gateway import TEST_SECRET_KEY

    before = {k: app.config.get(k) for k in ("PAYMENT_GATEWAY_URL", "PAYMENT_GATEWAY_SECRET_KEY")}
    app.config.update(
        PAYMENT_GATEWAY_URL=stoppable_localstripe.url, PAYMENT_GATEWAY_SECRET_KEY=TEST_SECRET_KEY
    )
    try:
        sign_in_caregiver(shop, login)
        where = priced(en, shop)
        stoppable_localstripe.stop()
        response = en.post(f"{where}/card", data=card_form("4242424242424242"))
        assert response.status_code == 503
        assert "The payment service cannot be reached" in response.get_data(as_text=True)
        assert db_session.scalar(sa.select(Redemption.status)) == "pending_payment"
        assert money(shop, db_session) == (49_400, 600, 0)
        waiting = en.get(f"{where}/payment")
        assert waiting.status_code == 200
        # No payment was even created: the page waits (the every-minute job settles it).
        assert 'http-equiv="refresh"' in waiting.get_data(as_text=True)
        stoppable_localstripe.start()
    finally:
        app.config.update(before)


def test_the_bureau_sees_a_redemption_without_the_staff_buttons(shop, en, login, db_session):
    sign_in_caregiver(shop, login)
    where = checked_in(en, shop)
    en.post("/logout")
    login(shop.market.officer)
    page = en.get(where)
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and "社区助餐（午餐）" in html
    assert 'id="check-out"' not in html and 'id="price-form"' not in html
    assert en.post(f"{where}/cash").status_code == 403
    assert db_session.scalar(sa.select(Redemption.status)) == "checked_in"
    en.post("/logout")
    login(shop.market.home_admin)  # another provider
    assert en.get(where).status_code == 404


# --------------------------------------------------------------------------- issue 9


def test_a_double_tap_and_the_status_page_during_an_in_flight_charge_release_nothing(
    shop, en, login, db_session, gateway_app_config, monkeypatch
):
    """The gateway's confirm is paused; meanwhile the desk taps "Charge" again and the
    waiting page refreshes. Neither may give the hold back nor start a second attempt: the
    intent still reads "requires a payment method" only because the first confirm has not
    landed yet."""
    from vouchers.redemption.gateway import Gateway

    sign_in_caregiver(shop, login)
    where = priced(en, shop)
    real_confirm = Gateway.confirm_payment_intent
    seen = {}

    def paused_confirm(self, intent_id, **kwargs):
        if not seen:  # the first confirm, before it reaches the gateway
            seen["again"] = en.post(f"{where}/card", data=card_form("4242424242424242"))
            seen["poll"] = en.get(f"{where}/payment")
        return real_confirm(self, intent_id, **kwargs)

    monkeypatch.setattr(Gateway, "confirm_payment_intent", paused_confirm)
    first = en.post(f"{where}/card", data=card_form("4242424242424242"))
    assert seen["again"].status_code == 302
    assert seen["again"].headers["Location"] == f"{where}/payment"
    assert seen["poll"].status_code == 200
    assert 'http-equiv="refresh"' in seen["poll"].get_data(as_text=True)
    assert first.status_code == 302 and first.headers["Location"] == where
    r = db_session.scalar(sa.select(Redemption))
    db_session.refresh(r)
    assert (r.status, r.payment_method) == ("redeemed", "card")
    kinds = db_session.scalars(sa.select(JournalEntry.kind)).all()
    assert "release" not in kinds and kinds.count("capture") == 1
    assert money(shop, db_session) == (49_400, 0, 600)


def test_the_card_button_disables_itself_on_submit(shop, en, login, db_session, gateway_app_config):
    sign_in_caregiver(shop, login)
    html = en.get(priced(en, shop)).get_data(as_text=True)
    assert 'id="card-form"' in html and "data-submit-once" in html
    assert "submit_once.js" in html
    with en.get("/static/submit_once.js") as script:
        assert script.status_code == 200 and b"disabled" in script.get_data()


def test_only_the_three_d_secure_return_releases_a_failed_authentication(
    shop, en, login, db_session, gateway_app_config
):
    sign_in_caregiver(shop, login)
    where = priced(en, shop)
    bank = en.post(f"{where}/card", data=card_form("4000002760003184")).headers["Location"]
    back = requests.post(bank, data={"success": "false"}, allow_redirects=False, timeout=5)
    return_url = back.headers["Location"]
    assert "/payment/return" in return_url
    # The waiting page, refreshing, does not give the hold back...
    assert en.get(f"{where}/payment").status_code == 200
    assert db_session.scalar(sa.select(Redemption.status)) == "pending_payment"
    # ...the payer's return from the bank does.
    done = en.get(return_url)
    assert done.status_code == 302 and done.headers["Location"] == where
    assert db_session.scalar(sa.select(Redemption.status)) == "checked_in"
    assert money(shop, db_session) == (50_000, 0, 0)


def _stuck(app, shop, en, login, db_session, server):
    """A card payment whose hold is stuck: the gateway went away during the charge."""
    from eldercare.dev_gateway import TEST_SECRET_KEY

    app.config.update(PAYMENT_GATEWAY_URL=server.url, PAYMENT_GATEWAY_SECRET_KEY=TEST_SECRET_KEY)
    sign_in_caregiver(shop, login)
    where = priced(en, shop)
    server.stop()
    assert en.post(f"{where}/card", data=card_form("4242424242424242")).status_code == 503
    server.start()
    en.post("/logout")
    return where, db_session.scalar(sa.select(Redemption))


def test_the_bureau_resolves_a_stuck_payment_with_a_reason(
    app, shop, en, login, db_session, stoppable_localstripe
):
    from eldercare.audit import AuditLog

    before = {k: app.config.get(k) for k in ("PAYMENT_GATEWAY_URL", "PAYMENT_GATEWAY_SECRET_KEY")}
    try:
        where, r = _stuck(app, shop, en, login, db_session, stoppable_localstripe)
        resolve = f"/vouchers/bureau/redemptions/{r.id}/resolve"
        # Not for the provider, nor for anyone else but the bureau.
        login(shop.caregiver, CAREGIVER_PASSWORD)
        assert en.get(resolve).status_code == 403
        assert en.post(resolve, data={"reason": "x"}).status_code == 403
        en.post("/logout")
        login(shop.market.officer)
        assert 'id="resolve-payment"' in en.get(where).get_data(as_text=True)
        page = en.get(resolve)
        assert page.status_code == 200 and 'id="resolve-form"' in page.get_data(as_text=True)
        refused = en.post(resolve, data={"reason": "  "})
        assert refused.status_code == 422
        assert "Say why" in refused.get_data(as_text=True)
        assert db_session.scalar(sa.select(Redemption.status)) == "pending_payment"
        done = en.post(resolve, data={"reason": "网关故障，已电话确认未扣款"})
        assert done.status_code == 302 and done.headers["Location"] == where
        db_session.refresh(r)
        assert r.status == "checked_in" and "网关故障" in r.failure_reason
        assert money(shop, db_session) == (50_000, 0, 0)
        row = db_session.scalar(
            sa.select(AuditLog).where(AuditLog.action == "redemption.resolve_stuck_payment")
        )
        assert row is not None and row.actor_user_id == shop.market.officer.id
        assert "网关故障" in str(row.after)
        # Nothing is stuck any more: the action answers with what to do, changing nothing.
        assert en.post(resolve, data={"reason": "again"}).status_code == 409
    finally:
        app.config.update(before)


def test_resolving_a_payment_the_card_did_pay_redeems_it_and_other_districts_see_nothing(
    shop, en, login, factory, db_session, gateway_app_config
):
    """The charge went through but nothing recorded it (the desk's phone died): the
    bureau's resolve asks the gateway first and completes the redemption instead of giving
    the hold back. An officer of another district, or the elder, cannot reach it."""
    from vouchers.redemption import payments
    from vouchers.redemption import steps as redemptions
    from vouchers.redemption.gateway import gateway

    r = redemptions.check_in(
        shop.voucher,
        scan_digest="stuck",
        staff_user=shop.caregiver,
        service_id=shop.market.meals.id,
    )
    redemptions.set_price(r, price_fen=1500, staff_user=shop.caregiver)
    redemptions.hold(r, method="card")
    db_session.commit()
    gw = gateway()
    intent = payments._ensure_intent(r, gw)
    method = gw.create_card_payment_method("4242424242424242", 12, 2030, "123")
    gw.confirm_payment_intent(
        intent["id"], payment_method=method["id"], idempotency_key="desk", return_url="http://x/"
    )
    resolve = f"/vouchers/bureau/redemptions/{r.id}/resolve"
    elsewhere = factory.user(
        "officer.elsewhere", roles=["bureau_officer"], district=factory.district("210103")
    )
    db_session.commit()
    login(elsewhere)
    assert en.get(resolve).status_code == 404
    assert en.post(resolve, data={"reason": "x"}).status_code == 404
    en.post("/logout")
    login(shop.elder_user)
    assert en.post(resolve, data={"reason": "x"}).status_code == 403
    en.post("/logout")
    assert db_session.scalar(sa.select(Redemption.status)) == "pending_payment"
    login(shop.market.officer)
    done = en.post(resolve, data={"reason": "机构手机没电，老人已刷卡"})
    assert done.status_code == 302
    db_session.refresh(r)
    assert (r.status, r.payment_method) == ("redeemed", "card")
    assert money(shop, db_session) == (49_400, 0, 600)


# --- issue 10 item 12: a quantity of units -------------------------------------------------


def test_ten_meals_are_priced_and_the_receipt_shows_the_quantity(shop, en, login, db_session):
    sign_in_caregiver(shop, login)
    where = checked_in(en, shop)
    form = en.get(where).get_data(as_text=True)
    assert 'name="quantity"' in form and 'value="1"' in form
    too_much = en.post(f"{where}/price", data={"price": "150.01", "quantity": "10"})
    assert too_much.status_code == 422
    assert "10 × ¥15.00" in too_much.get_data(as_text=True)
    assert db_session.scalar(sa.select(Redemption.price_fen)) is None
    assert en.post(f"{where}/price", data={"price": "150", "quantity": "10"}).status_code == 302
    assert en.post(f"{where}/cash").status_code == 302
    receipt = en.get(where).get_data(as_text=True)
    assert "Quantity" in receipt and "10 × ¥15.00" in receipt
    assert db_session.scalar(sa.select(Redemption.quantity)) == 10


@pytest.mark.parametrize("typed", ["0", "-2", "1.5", "ten", "101", "1e1"])
def test_unreadable_quantities_are_refused_and_change_nothing(shop, en, login, db_session, typed):
    sign_in_caregiver(shop, login)
    where = checked_in(en, shop)
    response = en.post(f"{where}/price", data={"price": "15", "quantity": typed})
    assert response.status_code == 422
    assert "Enter how many units, a whole number from 1 to 100." in response.get_data(as_text=True)
    assert db_session.scalar(sa.select(Redemption.price_fen)) is None


def test_a_receipt_without_check_out_says_check_out_is_optional_and_the_family_reads_who_paid(
    shop, client, login, db_session
):
    """Issue 14 item 10: paid without checking out, the page said only "Checked out: not
    yet", as if a step were missing; and the family read "You paid" for the elder's part."""
    sign_in_caregiver(shop, login)
    where = checked_in(client, shop)
    assert client.post(f"{where}/price", data={"price": "15", "insurance": ""}).status_code == 302
    assert client.post(f"{where}/cash").status_code == 302
    r = db_session.scalar(sa.select(Redemption))
    db_session.refresh(r)
    assert (r.status, r.checked_out_at) == ("redeemed", None)

    receipt = client.get(where, headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert 'id="receipt"' in receipt
    assert "Check-out is optional" in receipt and ">Not yet<" not in receipt
    zh = client.get(where, headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    assert "签退不是必需的" in zh

    elder_page = f"/vouchers/elder/{shop.elder.id}"
    client.post("/logout")
    login(shop.son)  # a family agent: the elder paid, not the reader
    family = client.get(elder_page, headers={"Accept-Language": "zh-CN"}).get_data(as_text=True)
    assert "您自付" not in family and f"{shop.elder.name}自付" in family
    family_en = client.get(elder_page, headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "You paid" not in family_en and f"{shop.elder.name} paid" in family_en
    client.post("/logout")
    login(shop.elder_user)  # the elder's own account still reads "you"
    own = client.get(elder_page, headers={"Accept-Language": "en"}).get_data(as_text=True)
    assert "You paid" in own
