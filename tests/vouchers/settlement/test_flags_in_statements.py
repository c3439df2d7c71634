"""A flag raised after a settlement run takes the redemption out of its unapproved statement
(review defect 2), through the guard's mechanism a reversal uses; approval refuses a
statement still holding a flagged line; a line leaving a statement awaiting its second
approver sends it back to 'prepared' (defect 4); the guard's audit rows name the actor
(defect 5)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from eldercare.audit import AuditLog
from eldercare.db import db
from eldercare.errors import Conflict
from eldercare.timeutil import now_utc
from tests.vouchers.settlement.conftest import settle_day, spend
from tests.vouchers.settlement.test_approval import low_threshold
from vouchers.integrity import flags
from vouchers.integrity.models import RedemptionFlag
from vouchers.pool import ledger
from vouchers.redemption import steps as redemption
from vouchers.settlement.models import Statement, StatementLine
from vouchers.settlement.statements import approval
from vouchers.settlement.statements.run import run_settlement


def _settled_run(shop, bureau, *prices):
    made = [spend(shop, price) for price in prices]
    month = shop.voucher.month
    run_settlement(month, actor=bureau.officer, today=settle_day(month))
    return made, db.session.scalar(sa.select(Statement))


def _audit(action, statement):
    return db.session.scalars(
        sa.select(AuditLog).where(
            AuditLog.action == action,
            AuditLog.object_type == "statements",
            AuditLog.object_id == str(statement.id),
        )
    ).all()


def test_a_flag_after_the_run_takes_the_line_out_and_it_is_not_approved(app_ctx, shop, bureau):
    (flagged, kept), statement = _settled_run(shop, bureau, 1500, 1200)
    flag = flags.raise_flag(
        flagged, rule="bureau", evidence={"reason": "suspicious"}, actor=bureau.officer
    )
    assert not flag.settled
    db.session.refresh(statement)
    assert db.session.get(StatementLine, flagged.id) is None
    assert statement.line_count == 1 and statement.subsidy_fen == kept.subsidy_fen
    approval.approve(statement, actor=bureau.approver)
    assert statement.status == "approved" and statement.subsidy_fen == kept.subsidy_fen
    assert flag.status == "open" and flagged.status == "redeemed"  # held, not paid
    (removed,) = _audit("statement.line_removed", statement)
    assert removed.actor_user_id == bureau.officer.id
    assert ledger.verify_ledger().ok


def test_a_cleared_flag_lets_the_next_run_settle_it(app_ctx, shop, bureau):
    (flagged,), statement = _settled_run(shop, bureau, 1500)
    flag = flags.raise_flag(flagged, rule="bureau", evidence={"reason": "?"}, actor=bureau.officer)
    flags.clear(flag, reason="checked", actor=bureau.officer)
    month = shop.voucher.month
    assert run_settlement(month, actor=bureau.officer, today=settle_day(month))["lines_added"] == 1
    assert db.session.get(StatementLine, flagged.id).statement_id == statement.id


def test_approval_refuses_a_statement_holding_a_flagged_line(app_ctx, shop, bureau):
    """The backstop: a flag that reached the line some other way (here inserted directly)."""
    (flagged,), statement = _settled_run(shop, bureau, 1500)
    db.session.add(
        RedemptionFlag(
            redemption_id=flagged.id,
            rule="anomaly",
            evidence={},
            status="open",
            raised_at=now_utc(),
        )
    )
    db.session.flush()
    with pytest.raises(Conflict) as refused:
        approval.approve(statement, actor=bureau.approver)
    assert "标记" in str(refused.value)  # "an open flag"
    assert statement.status == "prepared" and statement.approved_by_user_id is None


def test_a_flag_on_an_approved_statement_is_raised_and_says_it_is_settled(app_ctx, shop, bureau):
    (flagged,), statement = _settled_run(shop, bureau, 1500)
    approval.approve(statement, actor=bureau.approver)
    flag = flags.raise_flag(flagged, rule="bureau", evidence={"reason": "?"}, actor=bureau.officer)
    assert flag.settled and flag.status == "open"
    assert db.session.get(StatementLine, flagged.id).statement_id == statement.id


def test_the_flag_page_says_a_flagged_redemption_is_already_settled(shop, bureau, client, login):
    (flagged,), statement = _settled_run(shop, bureau, 1500)
    approval.approve(statement, actor=bureau.approver)
    db.session.commit()
    login(bureau.officer)
    page = client.post(
        f"/vouchers/bureau/redemptions/{flagged.id}/flag",
        data={"reason": "suspicious"},
        headers={"Accept-Language": "en"},
        follow_redirects=True,
    ).get_data(as_text=True)
    assert "settled already" in page


@pytest.mark.parametrize("how", ["reverse", "flag"])
def test_a_line_leaving_a_statement_awaiting_its_second_approver_resets_it(
    app_ctx, shop, bureau, how
):
    low_threshold()
    (gone, kept), statement = _settled_run(shop, bureau, 1500, 1200)
    approval.approve(statement, actor=bureau.approver)
    assert statement.status == "awaiting_second"
    if how == "reverse":
        redemption.reverse(gone, actor=bureau.officer, reason="not delivered")
    else:
        flags.raise_flag(gone, rule="bureau", evidence={"reason": "?"}, actor=bureau.officer)
    db.session.refresh(statement)
    assert statement.status == "prepared"
    assert statement.approved_by_user_id is None and statement.approved_at is None
    assert statement.line_count == 1 and statement.subsidy_fen == kept.subsidy_fen
    (cleared,) = _audit("statement.approval_cleared", statement)
    assert cleared.actor_user_id == bureau.officer.id
    # Both approvals again, on the same content: the first approver may approve it again.
    approval.approve(statement, actor=bureau.approver)
    approval.approve(statement, actor=bureau.second)
    assert statement.status == "approved" and statement.subsidy_fen == kept.subsidy_fen
    assert ledger.verify_ledger().ok


def test_the_guards_audit_row_names_the_reversing_actor(app_ctx, shop, bureau):
    (gone,), statement = _settled_run(shop, bureau, 1500)
    redemption.reverse(gone, actor=bureau.approver, reason="not delivered")
    (removed,) = _audit("statement.line_removed", statement)
    assert removed.actor_user_id == bureau.approver.id
