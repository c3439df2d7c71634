"""Card co-payments in statements, and a settled card redemption's reversal: a clawback of
the subsidy, with no refund through the gateway (the provider was paid the co-payment and
refunds the elder directly)."""

from __future__ import annotations

import sqlalchemy as sa

from eldercare.db import db
from tests.vouchers.settlement.conftest import settle_day
from tests.vouchers.test_payments import pay, priced
from vouchers.pool import ledger
from vouchers.redemption import payments
from vouchers.redemption.gateway import gateway
from vouchers.settlement import books
from vouchers.settlement.models import Statement, StatementLine
from vouchers.settlement.statements import approval
from vouchers.settlement.statements.run import run_settlement


def refunded_fen(r) -> int:
    intent = gateway().retrieve_payment_intent(r.payment_intent_id)
    charge = intent["latest_charge"]
    if not isinstance(charge, dict):
        charge = gateway()._request("GET", f"/v1/charges/{charge}")
    return charge["amount_refunded"]


def test_a_settled_card_redemption_is_clawed_back_without_a_gateway_refund(
    shop, bureau, db_session, gateway_app_config
):
    r = priced(shop)
    assert pay(shop, r) == "succeeded"
    month = shop.voucher.month
    report = run_settlement(month, actor=bureau.officer, today=settle_day(month))
    assert report["card_copay_fen"] == r.copay_fen == 900
    line = db.session.get(StatementLine, r.id)
    assert (line.payment_method, line.card_copay_fen) == ("card", 900)
    statement = db.session.scalar(sa.select(Statement))
    assert statement.card_copay_fen == 900 and statement.payable_fen == r.subsidy_fen + 900
    approval.approve(statement, actor=bureau.approver)
    copay = books.copay_code(statement.provider_id)
    assert ledger.balances([copay])[copay] == 900

    payments.reverse(r, actor=bureau.officer, reason="未提供服务 / not delivered")
    assert r.status == "reversed" and r.refund_id is None
    assert refunded_fen(r) == 0
    receivable = books.receivable_code(statement.provider_id)
    assert ledger.balances([receivable])[receivable] == r.subsidy_fen
