"""No lock is held across a call to the gateway (issue 9 review).

A payment path that locked rows (the redemption, the voucher, ledger accounts every payment
needs) or an advisory lock and then waited on the gateway (30 s timeouts while the gateway
is down) would make other money steps wait too. Each test here wraps the gateway client's
request method and records, at every call, how many locks the calling session held: advisory
locks, and its transaction id, which PostgreSQL holds from a transaction's first write or
row lock to its end; all must be zero.

Also here: a refund decided under the lock and made after it ("refunding", finished by the
job when the call is interrupted), the gateway's API version and what a charge's refunds
are read from, and the 3-D Secure return releasing once per confirm."""

from datetime import timedelta
from types import SimpleNamespace

import pytest
import requests
import sqlalchemy as sa

from eldercare.accounts import User
from eldercare.audit import AuditLog
from eldercare.db import db
from eldercare.timeutil import now_utc
from tests.vouchers.test_payments import (
    DECLINED,
    NEEDS_3DS,
    VISA,
    _confirm_at_gateway,
    _held_with_intent,
    _in_app,
    _private_card_world,
    _refunded,
    captures,
    money,
    pay,
    pointed_at,
    priced,
)
from vouchers.errors import CardDeclined, GatewayUnavailable
from vouchers.models import JournalEntry, PaymentAttempt, Redemption
from vouchers.redemption import payments
from vouchers.redemption import steps as redemption
from vouchers.redemption.gateway import Gateway, amount_refunded, gateway

LATER = timedelta(minutes=16)
LOCKS_HELD = sa.text(
    "SELECT count(*) FROM pg_locks WHERE locktype IN ('advisory', 'transactionid')"
    " AND pid = pg_backend_pid()"
)


def watch_gateway_calls(monkeypatch) -> list[tuple[str, str, int]]:
    """Every gateway request from now on: (method, path, locks held by the session that
    made it). Recorded, not asserted in place: the job catches every exception."""
    calls = []
    real = Gateway._request

    def watched(self, method, path, **kwargs):
        with db.session.no_autoflush:
            calls.append((method, path, db.session.scalar(LOCKS_HELD)))
        return real(self, method, path, **kwargs)

    monkeypatch.setattr(Gateway, "_request", watched)
    return calls


def pay_returning_to_the_page(shop, r, card):
    """As the card form pays: the bank sends the payer back to the return endpoint."""
    return payments.pay_by_card(
        r,
        card=card,
        staff_user=shop.caregiver,
        return_url=f"http://localhost/vouchers/redemptions/{r.id}/payment/return",
    )


def under_a_lock(calls):
    return [call for call in calls if call[2]]


def _staff(staff_id):
    return SimpleNamespace(caregiver=db.session.get(User, staff_id))


def _declined_then(private_app, rid, staff_id, then):
    """A declined card (the attempt stays open on the redemption), then ``then(r, staff)``;
    the intent's id."""

    def work():
        r = db.session.get(Redemption, rid)
        with pytest.raises(CardDeclined):
            pay(_staff(staff_id), r, DECLINED)
        then(r, db.session.get(User, staff_id))
        db.session.commit()
        return db.session.get(Redemption, rid).payment_intent_id or _attempt(rid).intent_id

    return _in_app(private_app, work)


def _attempt(rid):
    return db.session.scalar(sa.select(PaymentAttempt).where(PaymentAttempt.redemption_id == rid))


def _cash(r, staff):
    redemption.pay_cash(r, staff_user=staff)


# -- defect 1: the every-minute job closing an attempt left open


@pytest.mark.postgres
def test_the_job_closes_an_attempt_left_open_after_cash_with_no_lock_across_the_gateway(
    private_app, localstripe, monkeypatch
):
    """The everyday fallback: a declined card, then cash. Fifteen minutes later the job
    cancels the card's intent at the gateway, holding no lock while it asks."""
    rid, staff_id = _private_card_world(private_app, localstripe)
    intent_id = _declined_then(private_app, rid, staff_id, _cash)
    calls = watch_gateway_calls(monkeypatch)
    report = _in_app(private_app, lambda: payments.settle_stale_holds(now_utc() + LATER))
    assert (report["closed"], report["errors"]) == (1, 0), report
    assert calls and under_a_lock(calls) == [], calls

    def after():
        r = db.session.get(Redemption, rid)
        intent = gateway().retrieve_payment_intent(intent_id)
        return r.status, r.payment_method, _attempt(rid).state, intent["status"]

    assert _in_app(private_app, after) == ("redeemed", "cash", "superseded", "canceled")


@pytest.mark.postgres
def test_the_job_refunds_a_late_charge_after_cash_with_no_lock_across_the_gateway(
    private_app, localstripe, monkeypatch
):
    """Declined, cash taken, and the card's intent then charged after all (a confirm that
    was still on its way): the job refunds it, asking and refunding with no lock held."""
    rid, staff_id = _private_card_world(private_app, localstripe)
    intent_id = _declined_then(private_app, rid, staff_id, _cash)
    _in_app(private_app, lambda: _confirm_at_gateway(db.session.get(Redemption, rid)))
    calls = watch_gateway_calls(monkeypatch)
    report = _in_app(private_app, lambda: payments.settle_stale_holds(now_utc() + LATER))
    assert (report["refunded"], report["errors"]) == (1, 0), report
    assert ("POST", "/v1/refunds") in [call[:2] for call in calls]
    assert under_a_lock(calls) == [], calls

    def after():
        r = db.session.get(Redemption, rid)
        attempt = _attempt(rid)
        return r.status, r.payment_method, attempt.state, bool(attempt.refund_id)

    assert _in_app(private_app, after) == ("redeemed", "cash", "refunded", True)
    assert _in_app(private_app, lambda: _refunded(intent_id)) == 900


# -- defect 2: the refund of a charge that cannot pay (decided under the lock, made after)


@pytest.mark.postgres
def test_a_late_charge_settled_by_a_poll_is_refunded_with_no_lock_across_the_gateway(
    private_app, localstripe, monkeypatch
):
    rid, staff_id = _private_card_world(private_app, localstripe)
    intent_id = _declined_then(private_app, rid, staff_id, _cash)
    intent = _in_app(private_app, lambda: _confirm_at_gateway(db.session.get(Redemption, rid)))
    calls = watch_gateway_calls(monkeypatch)
    result = _in_app(
        private_app, lambda: payments.apply_intent(db.session.get(Redemption, rid), intent)
    )
    assert result == "refunded"
    assert ("POST", "/v1/refunds") in [call[:2] for call in calls]
    assert under_a_lock(calls) == [], calls
    assert _in_app(private_app, lambda: (_attempt(rid).state, _refunded(intent_id))) == (
        "refunded",
        900,
    )


def test_an_interrupted_refund_is_recorded_as_refunding_and_finished_by_the_job(
    app, shop, db_session, stoppable_localstripe
):
    """The refund is decided (and audited) before the gateway is asked; when the call does
    not get through the attempt stays "refunding", and the every-minute job finishes it:
    refunded once, its refund id recorded."""
    with pointed_at(app, stoppable_localstripe):
        r = _held_with_intent(shop, db_session)
        redemption.release(r, reason="an early poll", retry=True)
        redemption.pay_cash(r, staff_user=shop.caregiver)
        db_session.commit()
        intent = _confirm_at_gateway(r)
        stoppable_localstripe.set_faults("before", 3)  # the refund's three tries all fail
        assert payments.apply_intent(r, intent) == "refunded"
        attempt = db_session.scalar(
            sa.select(PaymentAttempt).where(PaymentAttempt.intent_id == intent["id"])
        )
        assert (attempt.state, attempt.refund_fen, attempt.refund_id) == ("refunding", 900, None)
        decided = db_session.scalars(
            sa.select(AuditLog.action).where(
                AuditLog.object_type == "redemptions", AuditLog.object_id == str(r.id)
            )
        ).all()
        assert "redemption.refund_orphan" in decided
        assert _refunded(intent["id"]) == 0
        # The charge is not paid by anything else meanwhile.
        assert (r.status, r.payment_method) == ("redeemed", "cash")

        report = payments.settle_stale_holds(now_utc())  # any run, not only a late one
        assert report["refunded"] == 1
        db_session.refresh(attempt)
        assert attempt.state == "refunded" and attempt.refund_id
        assert _refunded(intent["id"]) == 900
        # Run again, nothing more is refunded.
        assert payments.settle_stale_holds(now_utc())["refunded"] == 0
        assert _refunded(intent["id"]) == 900
        assert money(shop, db_session) == (49_400, 0, 0, 600, True)


# -- defect 3: the bureau's "resolve stuck payment"


@pytest.mark.postgres
def test_resolving_a_stuck_payment_asks_the_gateway_before_it_audits(
    private_app, localstripe, monkeypatch
):
    """A hold whose charge went through but was partly refunded by hand: resolving it
    refunds the rest and gives the hold back, with no lock held across any gateway call,
    and the operator's audit row commits with the settlement."""
    rid, staff_id = _private_card_world(private_app, localstripe)

    def charged_and_partly_refunded():
        r = db.session.get(Redemption, rid)
        redemption.hold(r, method="card")
        db.session.commit()
        payments._ensure_intent(r, gateway())
        _confirm_at_gateway(r)
        gateway().create_refund(
            r.payment_intent_id, 100, idempotency_key=f"by-hand-{r.payment_intent_id}"
        )
        return r.payment_intent_id

    intent_id = _in_app(private_app, charged_and_partly_refunded)
    calls = watch_gateway_calls(monkeypatch)

    def resolve():
        bureau = db.session.scalar(sa.select(User).where(User.username == "bureau.officer"))
        return payments.resolve_stuck_payment(
            db.session.get(Redemption, rid), actor=bureau, reason="卡已部分退款"
        )

    assert _in_app(private_app, resolve) == "checked_in"
    assert ("POST", "/v1/refunds") in [call[:2] for call in calls]
    assert under_a_lock(calls) == [], calls

    def after():
        actions = db.session.scalars(
            sa.select(AuditLog.action).where(
                AuditLog.object_type == "redemptions", AuditLog.object_id == str(rid)
            )
        ).all()
        return (
            _attempt(rid).state,
            _refunded(intent_id),
            actions.count("redemption.resolve_stuck_payment"),
        )

    assert _in_app(private_app, after) == ("refunded", 900, 1)


# -- defect 4: what the charge's refunds are read from


def test_the_client_pins_the_gateways_api_version(app_ctx, stoppable_localstripe):
    from vouchers.redemption.gateway import STRIPE_VERSION

    gw = Gateway(stoppable_localstripe.url, "sk_test_eldercare_localstripe")
    gw.create_payment_intent(900, idempotency_key="pin-version", description="d")
    gw.list_payment_intents(limit=1)
    versions = {request["stripe_version"] for request in stoppable_localstripe.received()}
    assert versions == {STRIPE_VERSION} and STRIPE_VERSION >= "2022-11-15"


def _without(intent, *keys):
    return {key: value for key, value in intent.items() if key not in keys}


def test_refunds_are_read_from_the_charges_list_when_there_is_no_latest_charge(
    shop, db_session, gateway_app_config
):
    """An answer in an API version before 2022-11-15 has the charges under ``charges``:
    a charge with nothing refunded pays the redemption, and is not refunded."""
    r = _held_with_intent(shop, db_session)
    intent = _without(_confirm_at_gateway(r), "latest_charge")
    assert amount_refunded(intent) == 0
    assert payments.apply_intent(r, intent) == "succeeded"
    assert (r.status, r.payment_method) == ("redeemed", "card")
    assert _refunded(intent["id"]) == 0
    assert money(shop, db_session) == (49_400, 0, 0, 600, True)


def test_a_charge_whose_refunds_cannot_be_told_is_retried_later_never_refunded(
    shop, db_session, gateway_app_config
):
    r = _held_with_intent(shop, db_session)
    intent = _without(_confirm_at_gateway(r), "latest_charge", "charges")
    assert amount_refunded(intent) is None
    with pytest.raises(GatewayUnavailable):
        payments.apply_intent(r, intent)
    db_session.rollback()
    db_session.refresh(r)
    assert r.status == "pending_payment" and _refunded(intent["id"]) == 0
    # Asked again with the whole answer, it pays.
    assert payments.settle_from_gateway(r) == "succeeded"
    assert captures(db_session) == 1


# -- defect 6: the 3-D Secure return releases once per confirm


def test_reloading_the_3ds_return_does_not_release_a_later_confirm_in_flight(
    shop, client, login, db_session, gateway_app_config, monkeypatch
):
    """The payer fails 3-D Secure and comes back: the hold is given back, once. Staff try
    another card, whose confirm is still on its way (here: its answer lost), and the
    return page is reloaded meanwhile: it must not give that hold back."""
    login(shop.caregiver, "caregiver-pass-1")
    r = priced(shop)
    assert pay_returning_to_the_page(shop, r, NEEDS_3DS) == "requires_action"

    back = requests.post(
        payments.next_action_for(r), data={"success": "false"}, allow_redirects=False, timeout=5
    )
    return_url = back.headers["Location"]
    assert client.get(return_url).status_code == 302
    db_session.refresh(r)
    assert r.status == "checked_in"  # the failed authentication gave the hold back

    real_confirm = Gateway.confirm_payment_intent

    def answer_lost(self, *args, **kwargs):
        raise GatewayUnavailable(details={"gateway": "timeout"})

    monkeypatch.setattr(Gateway, "confirm_payment_intent", answer_lost)
    with pytest.raises(GatewayUnavailable):
        pay_returning_to_the_page(shop, r, VISA)
    db_session.commit()
    monkeypatch.setattr(Gateway, "confirm_payment_intent", real_confirm)
    assert client.get(return_url).status_code == 302  # the reload
    db_session.refresh(r)
    assert r.status == "pending_payment"
    # The confirm lands after all, and the payment is settled once.
    _confirm_at_gateway(r)
    assert payments.settle_from_gateway(r) == "succeeded"
    kinds = db_session.scalars(
        sa.select(JournalEntry.kind)
        .where(JournalEntry.cause_type == "redemptions", JournalEntry.cause_id == str(r.id))
        .order_by(JournalEntry.id)
    ).all()
    assert kinds == ["hold", "release", "hold", "capture"]


def test_the_3ds_return_still_releases_the_attempt_that_sent_the_payer_there(
    shop, client, login, db_session, gateway_app_config
):
    """Twice to the bank and back, both failed: each return gives its own hold back."""
    login(shop.caregiver, "caregiver-pass-1")
    r = priced(shop)
    for _ in range(2):
        assert pay_returning_to_the_page(shop, r, NEEDS_3DS) == "requires_action"
        back = requests.post(
            payments.next_action_for(r),
            data={"success": "false"},
            allow_redirects=False,
            timeout=5,
        )
        assert client.get(back.headers["Location"]).status_code == 302
        db_session.refresh(r)
        assert r.status == "checked_in"
    assert money(shop, db_session) == (50_000, 0, 0, 0, True)
