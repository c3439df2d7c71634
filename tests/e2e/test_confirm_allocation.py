"""A district allocation in a real Chromium (issue 14 item 7): the first click on the
pool page moves nothing and shows the amount again, the district and the balances after;
the confirmation's button moves the money. The bureau approver of the demo city, on a
phone-sized page, in English."""

from __future__ import annotations

import sqlalchemy as sa
from playwright.sync_api import expect

from eldercare.db import db
from eldercare.residents import District
from tests.e2e.helpers import contrast_failures, overflow, path_of, sign_in, small_targets
from vouchers.pool import ledger

DISTRICT_CODE = "210106"  # 铁西区 (Tiexi): the other browser tests leave it alone


def _balances(app) -> tuple[int, int, int]:
    """(pool not yet allocated, the district's allocation left, journal entries)."""
    with app.app_context():
        balances = ledger.balances()
        entries = db.session.scalar(sa.text("SELECT count(*) FROM journal_entries"))
        found = (
            balances.get("pool:available", 0),
            balances.get(ledger.district_account_code(DISTRICT_CODE), 0),
            entries,
        )
        db.session.remove()
    return found


def _district(app) -> tuple[int, str]:
    with app.app_context():
        district = db.session.scalar(sa.select(District).where(District.code == DISTRICT_CODE))
        found = (district.id, district.name_en)
        db.session.remove()
    return found


def test_the_first_click_asks_with_the_amount_and_only_the_confirmation_moves_it(
    new_page, live_server_app
):
    page = new_page(locale="en")
    district_id, name = _district(live_server_app)
    sign_in(page, "bureau.approver")
    page.goto("/vouchers/bureau/pool")
    pool_before, left_before, entries_before = _balances(live_server_app)

    page.select_option("#allocate-district", str(district_id))
    page.fill("#allocate-amount", "100000")
    page.fill("#allocate-memo", "e2e confirmation")
    with page.expect_navigation():
        page.click("#allocate-form button[type=submit]")

    expect(page.locator("h1")).to_have_text(f"Allocate ¥100,000.00 to {name}?")
    facts = page.locator("#confirm-facts")
    expect(facts).to_contain_text("¥100,000.00")
    expect(facts).to_contain_text(name)
    expect(facts).to_contain_text(f"¥{(pool_before - 10_000_000) / 100:,.2f}")
    expect(facts).to_contain_text(f"¥{(left_before + 10_000_000) / 100:,.2f}")
    expect(page.locator("#confirm-nothing-yet")).to_be_visible()
    # Nothing moved on the first click.
    assert _balances(live_server_app) == (pool_before, left_before, entries_before)
    # The page fits the phone and its two controls are real targets.
    scroll, client = overflow(page)
    assert scroll <= client
    checked, bad = small_targets(page, "main a, main button")
    assert checked >= 2 and bad == []
    assert contrast_failures(page)[1] == []
    back = page.locator("#confirm-back")
    expect(back).to_have_attribute("href", "/vouchers/bureau/pool#allocate-heading")

    with page.expect_navigation():
        page.click("#confirm-button")
    assert path_of(page) == "/vouchers/bureau/pool"
    expect(page.locator(".flash.success")).to_contain_text(f"¥100,000.00 allocated to {name}")
    pool_after, left_after, entries_after = _balances(live_server_app)
    assert pool_after == pool_before - 10_000_000
    assert left_after == left_before + 10_000_000
    assert entries_after == entries_before + 1


def test_the_card_controls_are_buttons_and_stopping_the_card_asks_first(new_page, live_server_app):
    """The family's printed card section (王秀英's card from the demo): "Set a new PIN" and
    "The card is lost" look like buttons, not text links; "Stop the card working" asks, and
    going back leaves the card working."""
    page = new_page(locale="en")
    sign_in(page, "family.zhang")
    with live_server_app.app_context():
        from eldercare.accounts import User
        from vouchers.models import VoucherCard

        wang = db.session.scalar(sa.select(User).where(User.username == "elder.wang")).resident
        wang_id = wang.id
        card = db.session.scalar(sa.select(VoucherCard).where(VoucherCard.resident_id == wang_id))
        assert card is not None and card.status == "active"
        code = card.card_code
        db.session.remove()
    page.goto(f"/vouchers/elder/{wang_id}#card")
    for name in ("Set a new PIN", "The card is lost: print a new one"):
        summary = page.locator("#card summary", has_text=name)
        look = summary.evaluate(
            "(el) => { const s = getComputedStyle(el); const r = el.getBoundingClientRect();"
            " return [s.textDecorationLine, s.borderTopStyle, r.height]; }"
        )
        assert look[0] == "none" and look[1] == "solid" and look[2] >= 44, (name, look)

    with page.expect_navigation():
        page.click("#card button.danger")
    expect(page.locator("h1")).to_have_text("Stop the printed card?")
    expect(page.locator("#confirm-consequence")).to_contain_text(f"ending {code[-4:]}")
    with page.expect_navigation():
        page.click("#confirm-back")
    assert path_of(page) == f"/vouchers/elder/{wang_id}#card"
    with live_server_app.app_context():
        status = db.session.scalar(
            sa.select(VoucherCard.status).where(VoucherCard.card_code == code)
        )
        db.session.remove()
    assert status == "active"
