"""A signed webhook links nothing by itself (issue 13, item 8): the platform settles only an
intent it created itself (its id recorded on the payment attempt), as the gateway reports it
when asked. An intent created at the gateway by anyone else, whatever its metadata says,
changes nothing, is acknowledged as not the platform's and audited."""

import json
import time
from datetime import timedelta

import requests
import sqlalchemy as sa

from eldercare.audit import AuditLog
from eldercare.db import db
from eldercare.timeutil import now_utc
from tests.vouchers.conftest import GATEWAY_WEBHOOK_SECRET
from tests.vouchers.test_payments import NEEDS_3DS, captures, money, pay, priced
from vouchers.models import PaymentAttempt
from vouchers.redemption import payments
from vouchers.redemption import steps as redemption
from vouchers.redemption.gateway import gateway, outcome
from vouchers.redemption.webhooks import sign


def _send(client, intent: dict, event_id: str, kind="payment_intent.succeeded"):
    """A correctly signed event carrying ``intent`` (its metadata too) as its object."""
    body = json.dumps({"id": event_id, "type": kind, "data": {"object": intent}}).encode()
    header = sign(body, GATEWAY_WEBHOOK_SECRET, int(time.time()))
    return client.post("/api/v1/payments/webhook", data=body, headers={"Stripe-Signature": header})


def _hold_before_the_intent(shop, db_session):
    """A card hold whose attempt is recorded but whose intent the gateway never answered
    with (the gateway was down, or the process died, between the two)."""
    r = priced(shop)
    redemption.hold(r, method="card")
    db_session.commit()
    attempt = PaymentAttempt(
        redemption_id=r.id, idempotency_key=payments._key(r, "create"), amount_fen=r.copay_fen
    )
    db_session.add(attempt)
    db_session.commit()
    return r, attempt


def _paid_at_the_gateway(intent_id: str) -> dict:
    gw = gateway()
    method = gw.create_card_payment_method("4242424242424242", 12, 2030, "123")
    return gw.confirm_payment_intent(
        intent_id,
        payment_method=method["id"],
        idempotency_key=f"pay-{intent_id}",
        return_url="http://127.0.0.1/r",
    )


def _audited(action: str) -> list[dict]:
    rows = db.session.scalars(sa.select(AuditLog).where(AuditLog.action == action)).all()
    return [json.loads(row.after_json or "{}") for row in rows]


def test_an_intent_the_platform_did_not_create_links_and_settles_nothing(
    shop, client, db_session, gateway_app_config
):
    r, attempt = _hold_before_the_intent(shop, db_session)
    before = money(shop, db_session)
    # Someone with access to the gateway account makes an intent of the right amount whose
    # metadata names the open redemption and its attempt, pays it, and the gateway signs
    # the event as it signs every other.
    foreign = gateway().create_payment_intent(
        r.copay_fen,
        idempotency_key="not-the-platforms-1",
        description="co-payment",
        metadata={"redemption": r.id, "attempt": attempt.idempotency_key},
    )
    foreign = _paid_at_the_gateway(foreign["id"])
    assert outcome(foreign) == "succeeded"

    answer = _send(client, foreign, "evt_foreign_1")
    assert answer.status_code == 200
    assert answer.get_json() == {"received": True, "result": "not_ours"}
    db_session.refresh(r)
    db_session.refresh(attempt)
    assert (r.status, r.payment_intent_id, attempt.intent_id) == ("pending_payment", None, None)
    assert money(shop, db_session) == before
    assert captures(db_session) == 0
    [audited] = _audited("payment.webhook_foreign_intent")
    assert audited["intent"] == foreign["id"] and audited["event"] == "evt_foreign_1"
    assert audited["metadata"] == {"redemption": str(r.id), "attempt": attempt.idempotency_key}
    # Sent again: recorded once, still nothing linked.
    assert _send(client, foreign, "evt_foreign_1").get_json()["result"] == "duplicate"
    # The platform's own recovery (the every-minute job) finds its intent by the attempt's
    # idempotency key, never by metadata: the foreign charge stays off the redemption.
    payments.settle_stale_holds(now_utc() + timedelta(minutes=16))
    db_session.refresh(attempt)
    assert attempt.intent_id not in (None, foreign["id"])
    assert r.payment_intent_id != foreign["id"] and captures(db_session) == 0


def test_an_event_naming_one_intent_settles_only_what_the_gateway_says_of_it(
    shop, client, db_session, gateway_app_config
):
    """The event's object is only a pointer: its status and metadata are not read."""
    r = priced(shop)
    assert pay(shop, r, NEEDS_3DS) == "requires_action"
    forged = {"id": r.payment_intent_id, "status": "succeeded", "metadata": {"redemption": "1"}}
    assert _send(client, forged, "evt_forged_status").get_json()["result"] == "requires_action"
    db_session.refresh(r)
    assert r.status == "pending_payment" and captures(db_session) == 0


def test_the_platforms_own_intent_still_settles_by_webhook(
    shop, client, db_session, gateway_app_config
):
    r = priced(shop)
    assert pay(shop, r, NEEDS_3DS) == "requires_action"
    url = payments.next_action_for(r)
    requests.post(url, data={"success": "true"}, allow_redirects=False, timeout=5)
    intent = gateway().retrieve_payment_intent(r.payment_intent_id)
    answer = _send(client, intent, "evt_genuine_1")
    assert answer.status_code == 200 and answer.get_json()["result"] == "succeeded"
    db_session.refresh(r)
    assert (r.status, r.payment_method) == ("redeemed", "card")
    assert money(shop, db_session) == (49_400, 0, 0, 600, True)
    assert _audited("payment.webhook_foreign_intent") == []
