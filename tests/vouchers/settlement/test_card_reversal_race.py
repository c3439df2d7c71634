"""A card redemption's reversal racing the approval of its statement (found while writing
the state machine; reported, not fixed here: the fix is a design decision of the statements
and co-payment parts).

``payments.reverse`` asks ``settlement_guard.is_settled`` with no lock, refunds the card
co-payment through the gateway when the redemption is not settled, and only then
``steps.reverse`` locks the redemption and the month. An approval that commits in between
(the gateway call takes as long as the network) makes the reversal a clawback of the
subsidy, while the co-payment has been refunded to the elder AND moved to what the provider
is owed (paid by the next bank batch): the platform pays the co-payment twice, and the
books record neither the refund nor anything the provider owes back for it."""

from __future__ import annotations

import sqlalchemy as sa

from tests.vouchers.settlement.conftest import settle_day
from tests.vouchers.settlement.test_card import refunded_fen
from tests.vouchers.test_payments import pay, priced
from vouchers.pool import ledger
from vouchers.redemption import payments
from vouchers.redemption.gateway import Gateway
from vouchers.settlement import books
from vouchers.settlement.models import Statement
from vouchers.settlement.statements import approval
from vouchers.settlement.statements.run import run_settlement


def test_an_approval_during_the_refund_does_not_pay_the_co_payment_twice(
    shop, bureau, db_session, gateway_app_config, monkeypatch
):
    r = priced(shop)
    assert pay(shop, r) == "succeeded"
    month = shop.voucher.month
    run_settlement(month, actor=bureau.officer, today=settle_day(month))
    statement = db_session.scalar(sa.select(Statement))
    real_refund = Gateway.create_refund

    def refund_then_approval_commits(self, *args, **kwargs):
        refund = real_refund(self, *args, **kwargs)
        approval.approve(statement, actor=bureau.approver)  # another request, meanwhile
        return refund

    monkeypatch.setattr(Gateway, "create_refund", refund_then_approval_commits)
    payments.reverse(r, actor=bureau.officer, reason="未提供服务 / not delivered")
    assert r.status == "reversed" and statement.status == "approved"
    copay = books.copay_code(statement.provider_id)
    owed_to_provider = ledger.balances([copay])[copay]
    refunded_to_elder = refunded_fen(r)
    # The co-payment (¥9.00) goes back to the elder or to the provider, not to both.
    assert refunded_to_elder + owed_to_provider == r.copay_fen, (
        refunded_to_elder,
        owed_to_provider,
    )
