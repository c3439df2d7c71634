"""Card co-payments against a real localstripe: paid, declined, 3-D Secure, the gateway
stopping mid-payment, webhooks (good and forged), and refunds on reversal."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from types import SimpleNamespace

import pytest
import requests
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eldercare import stored_text
from eldercare.accounts import User
from eldercare.db import db
from eldercare.dev_gateway import TEST_SECRET_KEY
from eldercare.timeutil import now_utc
from tests.vouchers.conftest import GATEWAY_WEBHOOK_SECRET
from vouchers.errors import CardDeclined, GatewayError, GatewayUnavailable
from vouchers.models import JournalEntry, PaymentAttempt, Redemption, Voucher
from vouchers.pool import ledger
from vouchers.redemption import payments
from vouchers.redemption import steps as redemption
from vouchers.redemption.gateway import gateway, outcome
from vouchers.redemption.webhooks import sign

VISA = payments.Card("4242424242424242", 12, 2030, "123")
DECLINED = payments.Card("4000000000000341", 12, 2030, "123")
NEEDS_3DS = payments.Card("4000002760003184", 12, 2030, "123")
RETURN_URL = "http://127.0.0.1/vouchers/return"


def priced(shop, digest="card-scan"):
    r = redemption.check_in(
        shop.voucher, scan_digest=digest, staff_user=shop.caregiver, service_id=shop.market.meals.id
    )
    redemption.set_price(r, price_fen=1500, staff_user=shop.caregiver)
    return r  # subsidy ¥6.00, co-payment ¥9.00


def pay(shop, r, card=VISA):
    return payments.pay_by_card(r, card=card, staff_user=shop.caregiver, return_url=RETURN_URL)


def money(shop, db_session):
    db_session.refresh(shop.voucher)
    b = ledger.balances()
    return (
        shop.voucher.balance_fen,
        shop.voucher.held_fen,
        b["vouchers:held"],
        b["redeemed:unsettled"],
        ledger.verify_ledger().ok,
    )


def captures(db_session):
    return db_session.scalar(
        sa.select(sa.func.count()).select_from(JournalEntry).where(JournalEntry.kind == "capture")
    )


def test_card_payment_redeems_and_the_gateway_charged_the_co_payment(
    shop, db_session, gateway_app_config
):
    r = priced(shop)
    assert pay(shop, r) == "succeeded"
    assert (r.status, r.payment_method) == ("redeemed", "card")
    intent = gateway().retrieve_payment_intent(r.payment_intent_id)
    assert (intent["amount"], intent["currency"], intent["status"]) == (900, "cny", "succeeded")
    assert money(shop, db_session) == (49_400, 0, 0, 600, True)
    # Submitting the same form again neither charges nor redeems again.
    assert pay(shop, r) == "succeeded"
    assert captures(db_session) == 1


def test_declined_card_redeems_nothing_and_gives_the_hold_back(
    shop, db_session, gateway_app_config
):
    r = priced(shop)
    with pytest.raises(CardDeclined):
        pay(shop, r, DECLINED)
    assert r.status == "checked_in" and "declined" in stored_text.render(r.failure_reason, "en")
    assert money(shop, db_session) == (50_000, 0, 0, 0, True)
    assert captures(db_session) == 0
    # Another card on the same intent then pays.
    assert pay(shop, r) == "succeeded"
    assert money(shop, db_session) == (49_400, 0, 0, 600, True)


def test_three_d_secure_waits_for_the_payer_then_settles(shop, db_session, gateway_app_config):
    r = priced(shop)
    assert pay(shop, r, NEEDS_3DS) == "requires_action"
    assert r.status == "pending_payment"
    assert money(shop, db_session) == (49_400, 600, 600, 0, True)
    url = payments.next_action_for(r)
    assert url and url.startswith(gateway_app_config["PAYMENT_GATEWAY_URL"])
    # The payer authenticates on the bank's page, which sends the browser back to us.
    done = requests.post(url, data={"success": "true"}, allow_redirects=False, timeout=5)
    assert done.status_code == 302
    assert payments.settle_from_gateway(r) == "succeeded"
    assert r.status == "redeemed"
    assert money(shop, db_session) == (49_400, 0, 0, 600, True)


def test_failed_three_d_secure_gives_the_hold_back(shop, db_session, gateway_app_config):
    r = priced(shop)
    assert pay(shop, r, NEEDS_3DS) == "requires_action"
    requests.post(
        payments.next_action_for(r), data={"success": "false"}, allow_redirects=False, timeout=5
    )
    # A poll or a webhook does not give the hold back (an attempt may be on its way)...
    assert payments.settle_from_gateway(r) == "processing"
    assert r.status == "pending_payment"
    # ...the payer's return from the bank's page does.
    assert payments.settle_from_gateway(r, release_on_failure=True) == "failed"
    assert r.status == "checked_in"
    assert money(shop, db_session) == (50_000, 0, 0, 0, True)


@contextmanager
def pointed_at(app, server):
    before = {k: app.config.get(k) for k in ("PAYMENT_GATEWAY_URL", "PAYMENT_GATEWAY_SECRET_KEY")}
    app.config.update(PAYMENT_GATEWAY_URL=server.url, PAYMENT_GATEWAY_SECRET_KEY=TEST_SECRET_KEY)
    try:
        yield
    finally:
        app.config.update(before)


def test_gateway_down_before_the_charge_keeps_the_hold_until_it_can_be_cancelled(
    app, shop, db_session, stoppable_localstripe
):
    with pointed_at(app, stoppable_localstripe):
        r = priced(shop)
        stoppable_localstripe.stop()
        with pytest.raises(GatewayUnavailable):
            pay(shop, r)
        assert r.status == "pending_payment"
        later = now_utc() + timedelta(minutes=16)
        # Still down: the job cannot know whether a charge happened, so the hold stays.
        assert payments.settle_stale_holds(later)["unreachable"] == 1
        assert money(shop, db_session) == (49_400, 600, 600, 0, True)
        stoppable_localstripe.start()
        assert payments.settle_stale_holds(later)["released"] == 1
        assert r.status == "failed"
        assert outcome(gateway().retrieve_payment_intent(r.payment_intent_id)) == "canceled"
        assert money(shop, db_session) == (50_000, 0, 0, 0, True)


def test_charged_but_not_recorded_is_completed_by_the_job(
    app, shop, db_session, stoppable_localstripe
):
    """The card was charged and then our process died before recording it: the reconciling
    job finds the payment succeeded and redeems; the elder is never charged for nothing."""
    with pointed_at(app, stoppable_localstripe):
        r = priced(shop)
        redemption.hold(r, method="card")
        db_session.commit()
        gw = gateway()
        intent = payments._ensure_intent(r, gw)
        method = gw.create_card_payment_method("4242424242424242", 12, 2030, "123")
        gw.confirm_payment_intent(
            intent["id"], payment_method=method["id"], idempotency_key="x", return_url=RETURN_URL
        )
        # ...crash here. Fifteen minutes later:
        assert payments.settle_stale_holds(now_utc() + timedelta(minutes=14)) == {
            "refunded": 0,
            "closed": 0,
            "captured": 0,
            "released": 0,
            "waiting": 0,
            "unreachable": 0,
            "errors": 0,
        }
        assert payments.settle_stale_holds(now_utc() + timedelta(minutes=16))["captured"] == 1
        assert r.status == "redeemed"
        assert money(shop, db_session) == (49_400, 0, 0, 600, True)


def _event(intent_id, kind="payment_intent.succeeded", event_id="evt_1"):
    return json.dumps(
        {
            "id": event_id,
            "type": kind,
            "data": {"object": {"id": intent_id, "object": "payment_intent"}},
        }
    ).encode()


def test_webhook_with_a_bad_signature_is_ignored(shop, client, db_session, gateway_app_config):
    r = priced(shop)
    assert pay(shop, r, NEEDS_3DS) == "requires_action"
    requests.post(
        payments.next_action_for(r), data={"success": "true"}, allow_redirects=False, timeout=5
    )
    body = _event(r.payment_intent_id)
    for header in (sign(body, "whsec_wrong", int(time.time())), "", "t=1,v1=00"):
        answer = client.post(
            "/api/v1/payments/webhook", data=body, headers={"Stripe-Signature": header}
        )
        assert answer.status_code == 400
        assert answer.get_json()["error"]["code"] == "bad_signature"
    db_session.refresh(r)
    assert r.status == "pending_payment"

    good = sign(body, GATEWAY_WEBHOOK_SECRET, int(time.time()))
    answer = client.post("/api/v1/payments/webhook", data=body, headers={"Stripe-Signature": good})
    assert answer.status_code == 200 and answer.get_json()["result"] == "succeeded"
    db_session.refresh(r)
    assert r.status == "redeemed"
    again = client.post("/api/v1/payments/webhook", data=body, headers={"Stripe-Signature": good})
    assert again.get_json()["result"] == "duplicate"
    assert captures(db_session) == 1


def test_a_stale_failure_event_cannot_release_a_later_attempt(
    shop, client, db_session, gateway_app_config
):
    """The first card's payment_failed arrives after a second card succeeded: the intent is
    asked, not the event believed, so the redemption stays redeemed."""
    r = priced(shop)
    with pytest.raises(CardDeclined):
        pay(shop, r, DECLINED)
    assert pay(shop, r) == "succeeded"
    body = _event(r.payment_intent_id, "payment_intent.payment_failed", "evt_late")
    good = sign(body, GATEWAY_WEBHOOK_SECRET, int(time.time()))
    client.post("/api/v1/payments/webhook", data=body, headers={"Stripe-Signature": good})
    db_session.refresh(r)
    assert r.status == "redeemed"
    assert money(shop, db_session) == (49_400, 0, 0, 600, True)


def test_reversal_refunds_the_card_and_returns_the_subsidy(shop, db_session, gateway_app_config):
    r = priced(shop)
    pay(shop, r)
    payments.reverse(r, actor=shop.station_admin, reason="服务未完成")
    assert r.status == "reversed" and r.refund_id
    assert money(shop, db_session) == (50_000, 0, 0, 0, True)
    intent = gateway().retrieve_payment_intent(r.payment_intent_id)
    charge = intent["latest_charge"]
    charge = (
        charge if isinstance(charge, dict) else gateway()._request("GET", f"/v1/charges/{charge}")
    )
    assert charge["amount_refunded"] == 900


def test_the_card_form_refuses_bad_details(app_ctx):
    from eldercare.errors import InvalidInput

    for number, expiry, cvc in [
        ("4242", "12/28", "123"),
        ("4242424242424242", "13/28", "123"),
        ("4242424242424242", "12/28", "12x"),
        ("", "", ""),
    ]:
        with pytest.raises(InvalidInput):
            payments.Card.from_form(number, expiry, cvc)
    assert payments.Card.from_form("4242 4242 4242 4242", "12/28", "123").exp_year == 2028


def _confirm_at_gateway(r, number="4242424242424242"):
    gw = gateway()
    method = gw.create_card_payment_method(number, 12, 2030, "123")
    return gw.confirm_payment_intent(
        r.payment_intent_id,
        payment_method=method["id"],
        idempotency_key=f"t-{method['id']}",
        return_url=RETURN_URL,
    )


def _held_with_intent(shop, db_session):
    r = priced(shop)
    redemption.hold(r, method="card")
    db_session.commit()
    payments._ensure_intent(r, gateway())
    return r


def test_a_charge_that_lands_after_an_early_release_is_still_redeemed(
    shop, db_session, gateway_app_config
):
    """A poll gave the hold back a moment before the card went through: the charge wins."""
    r = _held_with_intent(shop, db_session)
    redemption.release(r, reason="an early poll", retry=True)
    intent = _confirm_at_gateway(r)
    assert payments.apply_intent(r, intent) == "succeeded"
    assert r.status == "redeemed"
    assert money(shop, db_session) == (49_400, 0, 0, 600, True)


def test_a_charge_that_lands_after_cash_was_taken_is_refunded(shop, db_session, gateway_app_config):
    r = _held_with_intent(shop, db_session)
    redemption.release(r, reason="an early poll", retry=True)
    redemption.pay_cash(r, staff_user=shop.caregiver)  # staff took cash meanwhile
    intent_id = r.payment_intent_id
    intent = _confirm_at_gateway(r)
    assert payments.apply_intent(r, intent) == "refunded"
    assert (r.status, r.payment_method) == ("redeemed", "cash")
    charge = gateway().retrieve_payment_intent(intent_id)["latest_charge"]
    charge = (
        charge if isinstance(charge, dict) else gateway()._request("GET", f"/v1/charges/{charge}")
    )
    assert charge["amount_refunded"] == 900  # the elder paid once
    assert money(shop, db_session) == (49_400, 0, 0, 600, True)


def test_a_new_price_after_a_declined_card_is_charged_at_the_new_amount(
    shop, db_session, gateway_app_config
):
    r = priced(shop)
    with pytest.raises(CardDeclined):
        pay(shop, r, DECLINED)
    redemption.set_price(r, price_fen=1000, staff_user=shop.caregiver)  # ¥4 + ¥6
    assert pay(shop, r) == "succeeded"
    intent = gateway().retrieve_payment_intent(r.payment_intent_id)
    assert (intent["amount"], r.copay_fen, r.subsidy_fen) == (600, 600, 400)
    assert money(shop, db_session) == (49_600, 0, 0, 400, True)


def test_one_hold_the_job_cannot_settle_does_not_block_the_others(
    shop, db_session, gateway_app_config
):
    broken = _held_with_intent(shop, db_session)
    broken.payment_intent_id = "pi_unknown_to_the_gateway"
    db_session.commit()
    second = redemption.check_in(
        shop.voucher,
        scan_digest="second",
        staff_user=shop.caregiver,
        service_id=shop.market.meals.id,
    )
    redemption.set_price(second, price_fen=1500, staff_user=shop.caregiver)
    redemption.hold(second, method="card")
    db_session.commit()
    payments._ensure_intent(second, gateway())
    report = payments.settle_stale_holds(now_utc() + timedelta(minutes=16))
    assert (report["errors"], report["released"]) == (1, 1)
    db_session.refresh(second)
    assert second.status == "failed"


# -- a charge always ends redeemed or refunded, whichever path sees it (issue 9, defect 2)


def _webhook(client, intent_id, event_id, kind="payment_intent.succeeded"):
    """The event as the gateway sends it: the whole intent (metadata too) as its object."""
    intent = gateway().retrieve_payment_intent(intent_id)
    body = json.dumps({"id": event_id, "type": kind, "data": {"object": intent}}).encode()
    header = sign(body, GATEWAY_WEBHOOK_SECRET, int(time.time()))
    answer = client.post(
        "/api/v1/payments/webhook", data=body, headers={"Stripe-Signature": header}
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)
    return answer.get_json()["result"]


def _settle_by(path, client, r):
    """The intent of ``r`` settled by the webhook or by the every-minute job."""
    if path == "webhook":
        return _webhook(client, r.payment_intent_id, f"evt-{path}-{r.payment_intent_id}")
    return payments.settle_stale_holds(now_utc() + timedelta(minutes=16))


def _refunded(intent_id):
    intent = gateway().retrieve_payment_intent(intent_id)
    charge = intent["latest_charge"]
    charge = (
        charge if isinstance(charge, dict) else gateway()._request("GET", f"/v1/charges/{charge}")
    )
    return charge["amount_refunded"]


@pytest.mark.parametrize("path", ["webhook", "job"])
def test_a_charge_landing_after_an_early_release_is_redeemed_by_the_webhook_and_the_job(
    path, shop, client, db_session, gateway_app_config
):
    r = _held_with_intent(shop, db_session)
    redemption.release(r, reason="an early poll", retry=True)
    db_session.commit()
    _confirm_at_gateway(r)  # the confirm that was in flight lands
    _settle_by(path, client, r)
    db_session.refresh(r)
    assert (r.status, r.payment_method) == ("redeemed", "card")
    assert _refunded(r.payment_intent_id) == 0
    assert money(shop, db_session) == (49_400, 0, 0, 600, True)
    assert captures(db_session) == 1


@pytest.mark.parametrize("path", ["webhook", "job"])
def test_a_charge_landing_after_cash_was_taken_is_refunded_by_the_webhook_and_the_job(
    path, shop, client, db_session, gateway_app_config
):
    r = _held_with_intent(shop, db_session)
    redemption.release(r, reason="an early poll", retry=True)
    redemption.pay_cash(r, staff_user=shop.caregiver)
    db_session.commit()
    intent_id = r.payment_intent_id
    _confirm_at_gateway(r)
    _settle_by(path, client, r)
    db_session.refresh(r)
    assert (r.status, r.payment_method) == ("redeemed", "cash")
    assert _refunded(intent_id) == 900  # the elder paid once, in cash
    assert money(shop, db_session) == (49_400, 0, 0, 600, True)
    assert captures(db_session) == 1


# -- intents dropped on purpose stay dropped (defect 5)


def test_a_late_webhook_for_an_intent_dropped_at_a_new_price_does_not_reattach_it(
    shop, client, db_session, gateway_app_config
):
    """Declined, then re-priced: the first intent (¥9) is dropped. Its late event must not
    attach it again, or the next charge would confirm it at the old amount."""
    r = priced(shop)
    with pytest.raises(CardDeclined):
        pay(shop, r, DECLINED)
    old = r.payment_intent_id
    redemption.set_price(r, price_fen=1000, staff_user=shop.caregiver)  # co-payment ¥6
    db_session.commit()
    _webhook(client, old, "evt-late-failure", "payment_intent.payment_failed")
    db_session.refresh(r)
    assert r.payment_intent_id != old
    assert pay(shop, r) == "succeeded"
    assert r.payment_intent_id != old
    intent = gateway().retrieve_payment_intent(r.payment_intent_id)
    assert (intent["amount"], intent["status"]) == (600, "succeeded")
    assert gateway().retrieve_payment_intent(old)["status"] != "succeeded"
    assert money(shop, db_session) == (49_600, 0, 0, 400, True)


def test_a_dropped_intent_that_is_charged_late_is_refunded_not_reattached(
    shop, client, db_session, gateway_app_config
):
    r = _held_with_intent(shop, db_session)
    redemption.release(r, reason="declined", retry=True)
    old = r.payment_intent_id
    redemption.set_price(r, price_fen=1000, staff_user=shop.caregiver)
    db_session.commit()
    gw = gateway()
    method = gw.create_card_payment_method("4242424242424242", 12, 2030, "123")
    gw.confirm_payment_intent(  # the old intent, charged late at the old amount
        old, payment_method=method["id"], idempotency_key="late-old", return_url=RETURN_URL
    )
    _webhook(client, old, "evt-late-success")
    db_session.refresh(r)
    assert r.payment_intent_id is None and r.status == "checked_in"
    assert _refunded(old) == 900
    # Sent again (another event id), it neither re-attaches nor refunds twice.
    _webhook(client, old, "evt-late-success-again")
    db_session.refresh(r)
    assert r.payment_intent_id is None and _refunded(old) == 900
    assert pay(shop, r) == "succeeded"
    assert gateway().retrieve_payment_intent(r.payment_intent_id)["amount"] == 600
    assert money(shop, db_session) == (49_600, 0, 0, 400, True)


def test_a_succeeded_intent_with_a_refund_is_not_counted_as_paid(
    shop, db_session, gateway_app_config
):
    r = _held_with_intent(shop, db_session)
    _confirm_at_gateway(r)
    # Part of it was given back at the gateway (by hand, another tool): not a full payment.
    gateway().create_refund(r.payment_intent_id, 100, idempotency_key="by-hand")
    intent_id = r.payment_intent_id
    assert payments.settle_from_gateway(r) == "refunded"
    assert r.status == "checked_in" and r.payment_intent_id is None
    assert _refunded(intent_id) == 900  # the rest was refunded too
    assert money(shop, db_session) == (50_000, 0, 0, 0, True)
    assert captures(db_session) == 0
    # A fresh attempt then pays.
    assert pay(shop, r) == "succeeded" and r.payment_intent_id != intent_id


# -- a refusal to create an intent releases the hold (defect 6)


def test_a_4xx_when_creating_the_intent_releases_the_hold_in_the_job(
    shop, db_session, gateway_app_config
):
    """The gateway refuses the create (here: the key was used before with other
    parameters): no intent exists under this key, so waiting cannot help."""
    r = priced(shop)
    redemption.hold(r, method="card")
    db_session.commit()
    gateway().create_payment_intent(  # the key taken by another request
        123, idempotency_key=payments._key(r, "create"), description="other"
    )
    report = payments.settle_stale_holds(now_utc() + timedelta(minutes=16))
    assert (report["released"], report["errors"]) == (1, 0)
    db_session.refresh(r)
    assert r.status == "checked_in"
    assert "refused to start" in stored_text.render(r.failure_reason, "en")
    assert money(shop, db_session) == (50_000, 0, 0, 0, True)
    # The next charge uses a new key, and pays.
    assert pay(shop, r) == "succeeded"
    assert money(shop, db_session) == (49_400, 0, 0, 600, True)


def test_a_4xx_when_creating_the_intent_releases_the_hold_at_the_desk(
    shop, db_session, gateway_app_config
):
    r = priced(shop)
    redemption.new_idempotency_key(r)
    gateway().create_payment_intent(
        123, idempotency_key=payments._key(r, "create"), description="other"
    )
    with pytest.raises(GatewayError):
        pay(shop, r)
    db_session.refresh(r)
    assert r.status == "checked_in"
    assert money(shop, db_session) == (50_000, 0, 0, 0, True)


# -- on PostgreSQL, with real commits from several threads


def _private_card_world(private_app, localstripe):
    """The demo city on the test's own database, card payments on, and a priced card
    redemption of elder.wang's lunch (co-payment ¥9). Its id and the caregiver's."""
    from tests.vouchers.test_redemption_race import _world

    private_app.config.update(
        PAYMENT_GATEWAY_URL=localstripe,
        PAYMENT_GATEWAY_SECRET_KEY=TEST_SECRET_KEY,
        PAYMENT_WEBHOOK_SECRET=GATEWAY_WEBHOOK_SECRET,
    )
    voucher_id, staff_id, meal_id = _world(private_app)
    with private_app.app_context():
        staff = db.session.get(User, staff_id)
        r = redemption.check_in(
            db.session.get(Voucher, voucher_id),
            scan_digest="pg-card",
            staff_user=staff,
            service_id=meal_id,
        )
        redemption.set_price(r, price_fen=1500, staff_user=staff)
        db.session.commit()
        rid = r.id
        db.session.remove()
    return rid, staff_id


def _in_app(app, work):
    with app.app_context():
        try:
            return work()
        finally:
            db.session.remove()


def _wait_for_a_lock_wait(app):
    """Until some other session of this database waits on a row lock (bounded)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        waiting = _in_app(
            app,
            lambda: db.session.scalar(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ),
        )
        if waiting:
            return
        time.sleep(0.02)
    raise AssertionError("no session ever waited on the lock")


@pytest.mark.postgres
def test_two_paths_settling_a_late_charge_at_once_redeem_it_and_refund_nothing(
    private_app, localstripe, monkeypatch
):
    """The hold was given back early; the charge then lands and the webhook and the poll see
    it at the same moment. The first holds again and captures; the second, whose re-hold
    fails, must see (locked) that this very charge is now the payment, and not refund it."""
    rid, staff_id = _private_card_world(private_app, localstripe)

    def prepare():
        r = db.session.get(Redemption, rid)
        redemption.hold(r, method="card")
        db.session.commit()
        payments._ensure_intent(r, gateway())
        redemption.release(r, reason="an early poll", retry=True)
        db.session.commit()
        return _confirm_at_gateway(r)

    intent = _in_app(private_app, prepare)
    assert outcome(intent) == "succeeded"
    captured, go = threading.Event(), threading.Event()
    real_capture = redemption.capture

    def paused_capture(r, **kwargs):
        done = real_capture(r, **kwargs)
        if done and threading.current_thread().name == "first":
            captured.set()  # captured, not yet committed
            assert go.wait(60)
        return done

    monkeypatch.setattr(redemption, "capture", paused_capture)

    def settle():
        return payments.apply_intent(db.session.get(Redemption, rid), intent)

    results = {}
    first = threading.Thread(
        target=lambda: results.update(first=_in_app(private_app, settle)), name="first"
    )
    second = threading.Thread(
        target=lambda: results.update(second=_in_app(private_app, settle)), name="second"
    )
    first.start()
    assert captured.wait(60)
    second.start()
    _wait_for_a_lock_wait(private_app)  # the second is stuck behind the first's row lock
    go.set()
    first.join(60)
    second.join(60)
    assert results == {"first": "succeeded", "second": "succeeded"}

    def outcome_now():
        r = db.session.get(Redemption, rid)
        charge = gateway().retrieve_payment_intent(intent["id"])["latest_charge"]
        kinds = db.session.scalars(
            sa.select(JournalEntry.kind).where(
                JournalEntry.cause_type == "redemptions", JournalEntry.cause_id == str(rid)
            )
        ).all()
        return r.status, r.payment_method, charge["amount_refunded"], kinds

    assert _in_app(private_app, outcome_now) == (
        "redeemed",
        "card",
        0,  # nothing refunded: the elder paid once, by card
        ["hold", "release", "hold", "capture"],
    )
    assert _in_app(private_app, lambda: ledger.verify_ledger().ok)


@pytest.mark.postgres
def test_two_charges_submitted_at_once_make_one_attempt_and_release_nothing(
    private_app, localstripe, monkeypatch
):
    """A double tap on "Charge" from two requests at the same moment: one holds and
    charges; the other waits for it. One intent, one confirm, no release."""
    rid, staff_id = _private_card_world(private_app, localstripe)
    start = threading.Barrier(2)

    def charge():
        r = db.session.get(Redemption, rid)
        staff = db.session.get(User, staff_id)
        start.wait(30)
        return pay(SimpleNamespace(caregiver=staff), r)

    with ThreadPoolExecutor(max_workers=2) as threads:
        results = sorted(threads.map(lambda _: _in_app(private_app, charge), range(2)))
    assert results[-1] == "succeeded" and results[0] in ("processing", "succeeded")

    def books():
        r = db.session.get(Redemption, rid)
        if r.status == "pending_payment":  # the loser's look came before the capture
            payments.settle_from_gateway(r)
        attempts = db.session.scalars(
            sa.select(PaymentAttempt.state).where(PaymentAttempt.redemption_id == rid)
        ).all()
        kinds = db.session.scalars(
            sa.select(JournalEntry.kind).where(
                JournalEntry.cause_type == "redemptions", JournalEntry.cause_id == str(rid)
            )
        ).all()
        return r.status, attempts, kinds

    status, attempts, kinds = _in_app(private_app, books)
    assert (status, attempts) == ("redeemed", ["succeeded"])
    assert kinds == ["hold", "capture"]


# -- the attempts as a state machine: whatever happens, every charge is redeemed or refunded

# A card is declined first more often than not, so that there are intents to drop and to
# charge late; what follows is any mix.
OPERATIONS = st.tuples(
    st.sampled_from(["decline", "decline", "pay"]),
    st.lists(
        st.sampled_from(
            ["decline", "pay", "reprice", "cash", "late_charge", "late_charge", "webhook", "job"]
            + ["poll"]
        ),
        min_size=2,
        max_size=6,
    ),
).map(lambda ops: [ops[0], *ops[1]])


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(operations=OPERATIONS, picks=st.lists(st.integers(0, 5), min_size=7, max_size=7))
def test_every_charge_ends_as_the_payment_or_refunded(
    operations, picks, shop, client, db_session, gateway_app_config
):
    """Any sequence of declines, charges, new prices, cash, old intents charged late (as an
    in-flight confirm landing), webhooks, job runs and polls; then the gateway's events and a
    job run. Every intent that took money is either the redemption's one card payment, or
    refunded in full; the books balance."""
    shop.counter += 1
    r = priced(shop, digest=f"machine-{shop.counter}")
    db_session.commit()
    gw = gateway()

    def intents():
        return db_session.scalars(
            sa.select(PaymentAttempt.intent_id).where(
                PaymentAttempt.redemption_id == r.id, PaymentAttempt.intent_id.is_not(None)
            )
        ).all()

    for step, (operation, pick) in enumerate(zip(operations, picks, strict=False)):
        db_session.refresh(r)
        try:
            if operation in ("decline", "pay") and r.status == "checked_in":
                pay(shop, r, DECLINED if operation == "decline" else VISA)
            elif operation == "reprice" and r.status == "checked_in":
                redemption.set_price(
                    r, price_fen=1000 + 500 * (step % 2), staff_user=shop.caregiver
                )
            elif operation == "cash" and r.status == "checked_in":
                redemption.pay_cash(r, staff_user=shop.caregiver)
            elif operation == "late_charge" and intents():
                old = intents()[pick % len(intents())]
                if gw.retrieve_payment_intent(old)["status"] == "requires_payment_method":
                    method = gw.create_card_payment_method("4242424242424242", 12, 2030, "123")
                    gw.confirm_payment_intent(
                        old,
                        payment_method=method["id"],
                        idempotency_key=f"late-{old}",
                        return_url=RETURN_URL,
                    )
            elif operation == "webhook" and intents():
                _webhook(client, intents()[pick % len(intents())], f"evt-{r.id}-{step}")
            elif operation == "job":
                payments.settle_stale_holds(now_utc() + timedelta(minutes=16))
            elif operation == "poll":
                payments.settle_from_gateway(r)
        except CardDeclined:
            pass
        db_session.commit()

    for n, intent_id in enumerate(intents()):  # the gateway's events, however late
        _webhook(client, intent_id, f"evt-{r.id}-final-{n}")
    payments.settle_stale_holds(now_utc() + timedelta(minutes=16))
    db_session.refresh(r)
    paying = []
    for attempt in db_session.scalars(
        sa.select(PaymentAttempt).where(PaymentAttempt.redemption_id == r.id)
    ):
        if attempt.intent_id is None:
            continue
        intent = gw.retrieve_payment_intent(attempt.intent_id)
        if intent["status"] != "succeeded":
            assert attempt.state != "succeeded"
            continue
        refunded = _refunded(attempt.intent_id)
        if attempt.state == "succeeded":
            paying.append(attempt.intent_id)
            assert refunded == 0 and intent["amount_received"] == r.copay_fen
        else:
            assert (attempt.state, refunded) == ("refunded", intent["amount_received"])
    if paying:
        assert paying == [r.payment_intent_id]
        assert (r.status, r.payment_method) == ("redeemed", "card")
    else:
        assert not (r.status == "redeemed" and r.payment_method == "card")
    assert r.status != "pending_payment"
    assert ledger.verify_ledger().ok
