"""Reconciliation against the card gateway (localstripe, this test's own, so no other test's
payments are at it): card payments and refunds the platform recorded match what the gateway
lists; an intent created directly at the gateway that the platform does not know is caught."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from eldercare.db import db
from eldercare.dev_gateway import TEST_SECRET_KEY
from tests.vouchers.conftest import GATEWAY_WEBHOOK_SECRET
from vouchers.redemption import payments
from vouchers.redemption import steps as redemption
from vouchers.redemption.gateway import gateway
from vouchers.settlement.models import SettlementException
from vouchers.settlement.reconcile import gateway as recon_gateway
from vouchers.settlement.reconcile import reconcile

VISA = payments.Card("4242424242424242", 12, 2030, "123")


@pytest.fixture
def own_gateway(app, stoppable_localstripe, monkeypatch):
    """Card payments through this test's localstripe; nothing is too young to be checked."""
    settings = {
        "PAYMENT_GATEWAY_URL": stoppable_localstripe.url,
        "PAYMENT_GATEWAY_SECRET_KEY": TEST_SECRET_KEY,
        "PAYMENT_WEBHOOK_SECRET": GATEWAY_WEBHOOK_SECRET,
        "PAYMENT_GATEWAY_TIMEOUT": 5.0,
    }
    before = {key: app.config[key] for key in settings if key in app.config}
    app.config.update(settings)
    monkeypatch.setattr(recon_gateway, "GRACE", timedelta(0))
    monkeypatch.setattr(recon_gateway, "PAGE", 2)  # three intents: the listing pages
    yield stoppable_localstripe
    for key in settings:
        app.config.pop(key, None)
    app.config.update(before)


def _card_redemption(shop, digest):
    r = redemption.check_in(
        shop.voucher, scan_digest=digest, staff_user=shop.caregiver, service_id=shop.market.meals.id
    )
    redemption.set_price(r, price_fen=1500, staff_user=shop.caregiver)
    payments.pay_by_card(r, card=VISA, staff_user=shop.caregiver, return_url="http://t/r")
    return r


def test_the_gateway_matches_then_an_unknown_intent_is_caught(shop, own_gateway):
    paid = _card_redemption(shop, "recon-card-1")
    reversed_ = _card_redemption(shop, "recon-card-2")
    _card_redemption(shop, "recon-card-3")
    payments.reverse(reversed_, actor=shop.station_admin, reason="服务未完成")
    db.session.commit()
    month = shop.voucher.month
    run = reconcile.reconcile_month(month)
    db.session.commit()
    assert run.findings["gateway"]["status"] == "ok", run.findings["gateway"]
    assert run.findings["gateway"]["intents_listed"] == 3
    assert run.findings["gateway"]["platform_payments"] == 3
    assert paid.status == "redeemed"

    # Somebody charges through the platform's gateway account behind its back.
    gw = gateway()
    stray = gw.create_payment_intent(
        4321,
        idempotency_key="stray-1",
        description="not the platform's",
        metadata={"redemption": 999999, "attempt": "stray"},
    )
    run = reconcile.reconcile_month(month)
    db.session.commit()
    assert not run.ok and run.findings["gateway"]["status"] == "mismatch"
    [found] = [m for m in run.findings["mismatches"] if m["check"] == "gateway"]
    assert found["kind"] == "gateway.unknown_intent"
    assert found["evidence"]["intent"] == stray["id"] and found["evidence"]["amount_fen"] == 4321
    reconcile.reconcile_month(month)
    db.session.commit()
    count = db.session.scalar(
        sa.select(sa.func.count()).where(SettlementException.kind == "gateway.unknown_intent")
    )
    assert count == 1


def test_a_payment_the_gateway_does_not_have_is_caught(shop, own_gateway):
    r = _card_redemption(shop, "recon-card-9")
    db.session.execute(
        sa.text("UPDATE payment_attempts SET amount_fen = amount_fen + 1 WHERE redemption_id = :r"),
        {"r": r.id},
    )
    db.session.commit()
    run = reconcile.reconcile_month(shop.voucher.month)
    kinds = {m["kind"] for m in run.findings["mismatches"]}
    assert "gateway.amount" in kinds


def test_with_card_payments_off_the_gateway_is_not_checked(shop):
    run = reconcile.reconcile_month(shop.voucher.month)
    assert run.findings["gateway"] == {"status": "not_checked"} and run.ok


def test_an_unknown_intent_fails_the_command_and_turns_the_page_red(
    shop, own_gateway, app, client, login, bureau
):
    _card_redemption(shop, "recon-card-5")
    db.session.commit()
    month = f"{shop.voucher.month:%Y-%m}"
    assert app.test_cli_runner().invoke(args=["reconcile", "--month", month]).exit_code == 0
    gateway().create_payment_intent(
        700, idempotency_key="stray-2", description="stray", metadata={"attempt": "x"}
    )
    red = app.test_cli_runner().invoke(args=["reconcile", "--month", month])
    assert red.exit_code == 1 and "gateway.unknown_intent" in red.output
    login(bureau.officer)
    html = client.get(f"/settlement/reconcile?month={month}").get_data(as_text=True)
    assert 'data-state="red"' in html and 'id="check-gateway" data-status="red"' in html
