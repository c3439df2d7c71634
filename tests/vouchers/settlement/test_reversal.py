"""Reversals and settlement: after the window (bureau only), out of an unapproved
statement, and clawed back from the provider once approved, netted at its next approval."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from eldercare.audit import AuditLog
from eldercare.db import db
from eldercare.timeutil import now_utc
from tests.vouchers.settlement.conftest import settle_day, spend
from vouchers.errors import ReversalWindowClosed
from vouchers.models import Voucher
from vouchers.pool import ledger
from vouchers.redemption import steps as redemption
from vouchers.settlement import books
from vouchers.settlement.models import Statement, StatementLine
from vouchers.settlement.statements import approval
from vouchers.settlement.statements.run import run_settlement


def settle(shop, bureau):
    month = shop.voucher.month
    run_settlement(month, actor=bureau.officer, today=settle_day(month))
    return db.session.scalars(
        sa.select(Statement).where(Statement.status == "prepared").order_by(Statement.id.desc())
    ).first()


def test_the_bureau_may_reverse_after_the_window_a_provider_may_not(app_ctx, shop, bureau):
    r = spend(shop)
    later = now_utc() + timedelta(days=40)
    with pytest.raises(ReversalWindowClosed):
        redemption.reverse(r, actor=shop.caregiver, reason="late", now=later)
    redemption.reverse(r, actor=bureau.officer, reason="核查发现未服务 / not delivered", now=later)
    assert r.status == "reversed"
    assert ledger.verify_ledger().ok


def test_a_reversal_takes_its_line_out_of_an_unapproved_statement(app_ctx, shop, bureau):
    keep, undo = spend(shop, 1500), spend(shop, 1200)
    statement = settle(shop, bureau)
    balance = shop.voucher.balance_fen
    redemption.reverse(undo, actor=shop.caregiver, reason="wrong elder")
    db.session.refresh(statement)
    assert set(db.session.scalars(sa.select(StatementLine.redemption_id))) == {keep.id}
    assert (statement.line_count, statement.subsidy_fen) == (1, keep.subsidy_fen)
    assert db.session.get(Voucher, shop.voucher.id).balance_fen == balance + undo.subsidy_fen
    approval.approve(statement, actor=bureau.approver)
    assert ledger.verify_ledger().ok


def test_a_clawback_after_approval_is_netted_at_the_next_approval(app_ctx, shop, bureau):
    clawed = spend(shop, 1500)
    statement = settle(shop, bureau)
    approval.approve(statement, actor=bureau.approver)
    voucher_balance = db.session.get(Voucher, shop.voucher.id).balance_fen
    receivable = books.receivable_code(statement.provider_id)
    payable = books.payable_code(statement.provider_id)

    redemption.reverse(clawed, actor=bureau.officer, reason="服务未提供 / not delivered")
    assert clawed.status == "reversed"
    assert db.session.get(Voucher, shop.voucher.id).balance_fen == voucher_balance  # nothing back
    assert ledger.balances([receivable])[receivable] == clawed.subsidy_fen
    # The line stays in the frozen statement; the books still balance.
    assert db.session.scalar(sa.select(StatementLine.statement_id)) == statement.id
    assert ledger.verify_ledger().ok
    trail = db.session.scalar(
        sa.select(AuditLog).where(
            AuditLog.action == "redemption.clawback", AuditLog.object_id == str(clawed.id)
        )
    )
    assert trail is not None and f'"statement":{statement.id}' in trail.after_json.replace(" ", "")

    spend(shop, 1200)
    supplementary = settle(shop, bureau)
    paid_before = ledger.balances([payable])[payable]
    approval.approve(supplementary, actor=bureau.approver)
    netted = min(clawed.subsidy_fen, supplementary.subsidy_fen)
    assert supplementary.clawback_fen == netted
    assert supplementary.payable_fen == supplementary.subsidy_fen - netted
    after = ledger.balances([receivable, payable])
    assert after[receivable] == clawed.subsidy_fen - netted
    assert after[payable] == paid_before + supplementary.subsidy_fen - netted
    assert ledger.verify_ledger().ok
