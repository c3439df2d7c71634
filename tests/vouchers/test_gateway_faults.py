"""Fault tests: the card gateway fails at each step of a co-payment, then recovers (issue 13).

A real localstripe (this test's own) sits behind a small proxy (tests/vouchers/gateway_proxy.py)
that makes one step fail in one way, for every request of that step, while the desk charges
two co-payments (one paid at once, one left waiting at 3-D Secure), reverses the paid one and
the every-minute job runs. Then the fault is cleared (a stopped gateway is started again) and
the job runs again, as it would a minute later. Afterwards, whatever the fault:

- no redemption without its payment and none vice versa: every charge still standing at the
  gateway (taken and not given back) is exactly one card redemption's, for its co-payment, and
  every redemption recorded as paid by card stands on such a charge;
- nothing is left held, no refund is left undecided, the books balance (the ledger check) and
  the platform's own reconciliation against the gateway finds nothing;
- the gateway is usable again: a new co-payment is paid.

Even while the fault lasts, a redemption recorded as paid by card has its charge. The client's
timeout is made small (half a second) so that a gateway that hangs costs little; nothing here
depends on how long anything takes.
"""

from datetime import timedelta

import pytest
import sqlalchemy as sa

from eldercare.db import db
from eldercare.dev_gateway import TEST_SECRET_KEY
from eldercare.timeutil import now_utc
from tests.vouchers.conftest import GATEWAY_WEBHOOK_SECRET
from tests.vouchers.gateway_proxy import MODES, STEPS, FaultProxy
from tests.vouchers.test_payments import NEEDS_3DS, VISA, pay, priced
from vouchers.errors import GatewayError
from vouchers.models import PaymentAttempt, Redemption
from vouchers.pool import ledger_checks
from vouchers.redemption import gateway as gateway_module
from vouchers.redemption import payments
from vouchers.settlement.reconcile import gateway as recon_gateway

TIMEOUT_S = 0.5  # the client's read timeout in these tests
SLOW_S = 1.0  # how late a "slow" request reaches the gateway: after the client gave up


@pytest.fixture
def faulty_gateway(app, stoppable_localstripe, monkeypatch):
    """Card payments through a FaultProxy in front of this test's localstripe."""
    proxy = FaultProxy(
        stoppable_localstripe.url, delay_s=SLOW_S, on_stop=stoppable_localstripe.stop
    ).start()
    settings = {
        "PAYMENT_GATEWAY_URL": proxy.url,
        "PAYMENT_GATEWAY_SECRET_KEY": TEST_SECRET_KEY,
        "PAYMENT_WEBHOOK_SECRET": GATEWAY_WEBHOOK_SECRET,
        "PAYMENT_GATEWAY_TIMEOUT": TIMEOUT_S,
    }
    before = {key: app.config[key] for key in settings if key in app.config}
    app.config.update(settings)
    # The client retries as in production (same idempotency key), without the waits between.
    monkeypatch.setitem(gateway_module.Gateway.__init__.__kwdefaults__, "backoff_s", 0.01)
    monkeypatch.setattr(recon_gateway, "GRACE", timedelta(0))  # check what was just made
    try:
        yield proxy
    finally:
        proxy.stop()
        for key in settings:
            app.config.pop(key, None)
        app.config.update(before)


def _direct(server) -> gateway_module.Gateway:
    """The gateway itself, not through the proxy: what it really holds."""
    return gateway_module.Gateway(server.url, TEST_SECRET_KEY, timeout=10.0)


def _net_charges(server) -> dict[str, int]:
    """Every intent's money still taken (charged and not given back), when there is any."""
    gw = _direct(server)
    taken = {}
    for intent in gw.list_payment_intents(limit=100):
        received = gateway_module.amount_received(intent) or 0
        net = received - (gateway_module.amount_refunded(intent, gw) or 0)
        if net:
            taken[intent["id"]] = net
    return taken


def _paid_by_card(redemptions) -> dict[str, Redemption]:
    return {
        r.payment_intent_id: r
        for r in redemptions
        if r.status == "redeemed" and r.payment_method == "card"
    }


def _assert_each_card_redemption_has_its_charge(server, redemptions) -> None:
    taken = _net_charges(server)
    for intent_id, r in _paid_by_card(redemptions).items():
        assert taken.get(intent_id) == r.copay_fen, (r.id, intent_id, taken)


def _assert_payments_and_redemptions_agree(server, shop, redemptions) -> None:
    for r in redemptions:
        db.session.refresh(r)
    taken = _net_charges(server)
    paid = _paid_by_card(redemptions)
    # No charge without its redemption, no redemption without its charge.
    assert set(taken) == set(paid), (taken, {i: (r.id, r.status) for i, r in paid.items()})
    assert all(taken[i] == r.copay_fen for i, r in paid.items())
    assert [r.status for r in redemptions if r.status == "pending_payment"] == []
    db.session.refresh(shop.voucher)
    assert shop.voucher.held_fen == 0
    open_refunds = db.session.scalar(
        sa.select(sa.func.count())
        .select_from(PaymentAttempt)
        .where(PaymentAttempt.state == "refunding")
    )
    assert open_refunds == 0
    check = ledger_checks.run_check()
    assert check.ok, check.findings
    summary, findings = recon_gateway.gateway_check(shop.voucher.month)
    assert summary["status"] == "ok" and findings == [], findings


def _try(work):
    try:
        return work()
    except GatewayError as error:
        return type(error).__name__


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("step", list(STEPS))
def test_a_gateway_fault_at_each_step_leaves_payments_and_redemptions_in_agreement(
    app, shop, db_session, faulty_gateway, stoppable_localstripe, step, mode
):
    proxy = faulty_gateway
    paid_now, left_at_3ds = priced(shop, "fault-paid"), priced(shop, "fault-3ds")
    later = now_utc() + timedelta(minutes=16)

    proxy.fail(step, mode)
    _try(lambda: pay(shop, paid_now, VISA))
    _try(lambda: pay(shop, left_at_3ds, NEEDS_3DS))  # the payer never comes back
    if paid_now.status == "redeemed":
        _try(lambda: payments.reverse(paid_now, actor=shop.station_admin, reason="服务未完成"))
    payments.settle_stale_holds(later)  # the job, while the gateway still fails
    proxy.wait_idle()
    if stoppable_localstripe.process is None:
        stoppable_localstripe.start()  # same address, same payments
    _assert_each_card_redemption_has_its_charge(stoppable_localstripe, [paid_now, left_at_3ds])
    assert proxy.faults > 0, f"the {step} step was never reached"

    proxy.clear()
    # Recovered: a slow machine must not look like a gateway still failing.
    app.config["PAYMENT_GATEWAY_TIMEOUT"] = 10.0
    for _ in range(2):  # the job's next runs, with the gateway back
        report = payments.settle_stale_holds(later)
        assert report["errors"] == report["unreachable"] == 0, report
    again = priced(shop, "fault-after")
    assert pay(shop, again, VISA) == "succeeded"
    _assert_payments_and_redemptions_agree(
        stoppable_localstripe, shop, [paid_now, left_at_3ds, again]
    )
