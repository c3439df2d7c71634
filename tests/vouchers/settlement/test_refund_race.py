"""A card co-payment is refunded to the elder or paid to the provider, never both (review
defect 1).

A reversal used to ask "settled?" with no lock, refund at the gateway, and only then lock and
take the line out of its statement: an approval committing during the gateway call made the
reversal a clawback that ignored the refund, while the approved statement still owed the
co-payment to the provider. Now the reversal is decided and committed under settlement's
locks first and the gateway is asked after: an approval during the gateway call finds the
line gone."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from eldercare.accounts import User
from eldercare.db import db
from tests.vouchers.settlement.conftest import settle_day
from tests.vouchers.settlement.test_card import refunded_fen
from tests.vouchers.test_payments import (
    RETURN_URL,
    VISA,
    _in_app,
    _private_card_world,
    pay,
    priced,
)
from vouchers.models import PaymentAttempt, Redemption, Voucher
from vouchers.pool import ledger
from vouchers.redemption import payments
from vouchers.redemption.gateway import Gateway
from vouchers.settlement import books
from vouchers.settlement.models import Statement, StatementLine
from vouchers.settlement.statements import approval
from vouchers.settlement.statements.run import run_settlement


def _approve_during_refund(monkeypatch, approve):
    """The gateway's refund call runs ``approve`` first (another approver, meanwhile)."""
    real = Gateway.create_refund
    seen = []

    def refund_meanwhile(self, *args, **kwargs):
        seen.append(approve())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Gateway, "create_refund", refund_meanwhile)
    return seen


def test_an_approval_during_the_refund_call_does_not_also_owe_the_copay(
    shop, bureau, db_session, gateway_app_config, monkeypatch
):
    r = priced(shop)
    assert pay(shop, r) == "succeeded"
    month = shop.voucher.month
    run_settlement(month, actor=bureau.officer, today=settle_day(month))
    statement = db.session.scalar(sa.select(Statement))
    assert statement.card_copay_fen == 900
    seen = _approve_during_refund(
        monkeypatch, lambda: approval.approve(statement, actor=bureau.approver).status
    )
    payments.reverse(r, actor=bureau.officer, reason="not delivered")
    db.session.refresh(statement)
    db.session.refresh(r)
    copay = books.copay_code(statement.provider_id)
    assert seen == ["approved"]  # the approval did happen while the gateway was asked
    assert r.status == "reversed" and r.refund_id
    assert refunded_fen(r) == 900  # the elder got the co-payment back ...
    assert db.session.get(StatementLine, r.id) is None  # ... so the statement lost the line
    assert statement.card_copay_fen == 0
    assert ledger.balances([copay])[copay] == 0  # and the provider is owed nothing of it
    assert ledger.verify_ledger().ok


def test_a_refund_the_gateway_does_not_take_is_left_decided_for_the_job(
    shop, bureau, db_session, gateway_app_config, monkeypatch
):
    """The reversal is committed before the gateway is asked: a failed call leaves the
    attempt 'refunding' (booked), and the every-minute job sends it under the same key."""
    from vouchers.errors import GatewayUnavailable

    r = priced(shop)
    assert pay(shop, r) == "succeeded"
    real = Gateway.create_refund

    def down(self, *args, **kwargs):
        raise GatewayUnavailable()

    monkeypatch.setattr(Gateway, "create_refund", down)
    payments.reverse(r, actor=shop.station_admin, reason="服务未完成")
    db.session.refresh(r)
    attempt = db.session.scalar(
        sa.select(PaymentAttempt).where(PaymentAttempt.intent_id == r.payment_intent_id)
    )
    assert r.status == "reversed" and r.refund_id is None
    assert (attempt.state, attempt.refund_fen) == ("refunding", 900)
    monkeypatch.setattr(Gateway, "create_refund", real)
    payments.settle_stale_holds()
    db.session.refresh(r)
    db.session.refresh(attempt)
    assert attempt.state == "refunded" and r.refund_id == attempt.refund_id
    assert refunded_fen(r) == 900
    assert ledger.verify_ledger().ok


@pytest.mark.postgres
def test_an_approval_committing_in_another_session_during_the_refund_pays_once(
    private_app, localstripe, monkeypatch
):
    """The same race with real commits: the approval runs in its own thread and session
    while the reversing session is inside the gateway's refund call."""
    rid, staff_id = _private_card_world(private_app, localstripe)

    def paid_and_settled():
        r = db.session.get(Redemption, rid)
        staff = db.session.get(User, staff_id)
        assert payments.pay_by_card(r, card=VISA, staff_user=staff, return_url=RETURN_URL) == (
            "succeeded"
        )
        month = db.session.get(Voucher, r.voucher_id).month
        officer = db.session.scalar(sa.select(User).where(User.username == "bureau.officer"))
        run_settlement(month, actor=officer, today=settle_day(month))
        db.session.commit()
        line = db.session.get(StatementLine, rid)
        return line.statement_id

    statement_id = _in_app(private_app, paid_and_settled)

    def approve_elsewhere():
        outcome = {}

        def work():
            user = db.session.scalar(sa.select(User).where(User.username == "bureau.approver"))
            approval.approve(db.session.get(Statement, statement_id), actor=user)
            db.session.commit()
            outcome["status"] = db.session.get(Statement, statement_id).status

        thread = threading.Thread(target=lambda: _in_app(private_app, work))
        thread.start()
        thread.join(60)  # a reversal holding the statement's row would keep it waiting
        return outcome.get("status", "still waiting")

    seen = _approve_during_refund(monkeypatch, approve_elsewhere)

    def reverse():
        officer = db.session.scalar(sa.select(User).where(User.username == "bureau.officer"))
        payments.reverse(db.session.get(Redemption, rid), actor=officer, reason="not delivered")
        db.session.commit()  # as the request does

    _in_app(private_app, reverse)
    assert seen == ["approved"]

    def outcome():
        r = db.session.get(Redemption, rid)
        statement = db.session.get(Statement, statement_id)
        copay = books.copay_code(statement.provider_id)
        return (
            r.status,
            refunded_fen(r),
            statement.card_copay_fen,
            ledger.balances([copay]).get(copay, 0),
            ledger.verify_ledger().ok,
        )

    # Refunded to the elder and owed to the provider: 900 both, before the fix.
    assert _in_app(private_app, outcome) == ("reversed", 900, 0, 0, True)
