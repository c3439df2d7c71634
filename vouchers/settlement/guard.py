"""What a reversal does to settlement (set as ``vouchers.redemption.steps.settlement_guard``
when settlement is registered; redemption never imports settlement).

A reversal of a redemption:
- not in any statement: nothing here; it reverses as before;
- in a statement not yet approved: its line leaves that statement (totals updated) and it
  reverses as before (the subsidy goes back);
- in an approved or paid statement (settled): a clawback. The redemption becomes
  'reversed', nothing goes back onto the (past) voucher, the provider owes the subsidy back
  (``books.post_clawback``), netted at its next approval; the card co-payment is not
  refunded through the gateway (the provider was paid it and refunds the elder directly).

Locks (the lock order in ``vouchers.pool.ledger``): the redemption's row (the caller's),
then the month row FOR SHARE, so a settlement run of the month (FOR UPDATE) either finished
before (the line is there) or starts after the reversal commits (the redemption is no longer
'redeemed'); then the statement row, by a conditional UPDATE that also finds out whether an
approval committed meanwhile.
"""

from __future__ import annotations

import sqlalchemy as sa

from eldercare import audit
from eldercare.db import db
from vouchers.models import Voucher
from vouchers.redemption import steps
from vouchers.settlement import books, periods
from vouchers.settlement.models import FROZEN_STATUSES, Statement, StatementLine

OPEN = ("prepared", "awaiting_second")


def _line(redemption_id: int):
    return db.session.execute(
        sa.select(
            StatementLine.statement_id,
            StatementLine.subsidy_fen,
            StatementLine.card_copay_fen,
            Statement.status,
            Statement.provider_id,
        )
        .join(Statement, Statement.id == StatementLine.statement_id)
        .where(StatementLine.redemption_id == redemption_id)
    ).first()


def settled_statement(redemption_id: int) -> int | None:
    """The approved or paid statement the redemption is a line of, or None (reads only: a
    statement once approved stays so)."""
    line = _line(redemption_id)
    return line.statement_id if line is not None and line.status in FROZEN_STATUSES else None


class SettlementGuard:
    """The object ``steps.settlement_guard`` holds (see ``steps.SettlementGuardProtocol``)."""

    def is_settled(self, redemption) -> bool:
        return settled_statement(redemption.id) is not None

    def before_reversal(self, redemption) -> str | None:
        """Called by ``steps.reverse`` after the redemption's row is locked and the checks:
        "settled" (clawback), "open" (its line was taken out of an unapproved statement) or
        None (in no statement)."""
        month = db.session.scalar(
            sa.select(Voucher.month).where(Voucher.id == redemption.voucher_id)
        )
        periods.lock_month(month, share=True)
        line = _line(redemption.id)
        if line is None:
            return None
        if line.status in FROZEN_STATUSES:
            return "settled"
        # Locks the statement row; an approval that committed meanwhile makes it match
        # nothing (PostgreSQL re-checks the condition on the row as the approval left it).
        moved = db.session.execute(
            sa.update(Statement)
            .where(Statement.id == line.statement_id, Statement.status.in_(OPEN))
            .values(
                line_count=Statement.line_count - 1,
                subsidy_fen=Statement.subsidy_fen - line.subsidy_fen,
                card_copay_fen=Statement.card_copay_fen - line.card_copay_fen,
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        if not moved:
            status = db.session.scalar(
                sa.select(Statement.status).where(Statement.id == line.statement_id)
            )
            # Approved meanwhile: settled. Rejected meanwhile: its lines went with it.
            return "settled" if status in FROZEN_STATUSES else None
        db.session.execute(
            sa.delete(StatementLine)
            .where(StatementLine.redemption_id == redemption.id)
            .execution_options(synchronize_session=False)
        )
        audit.record(
            "statement.line_removed",
            object_type="statements",
            object_id=line.statement_id,
            after={"redemption": redemption.id, "subsidy_fen": line.subsidy_fen},
        )
        return "open"

    def clawback(self, redemption, actor, reason: str) -> None:
        """Books and audit of a settled redemption's reversal (its status is the caller's)."""
        statement_id = settled_statement(redemption.id)
        books.post_clawback(redemption, provider_id=redemption.provider_id, actor_id=actor.id)
        district_id = db.session.scalar(
            sa.select(Voucher.district_id).where(Voucher.id == redemption.voucher_id)
        )
        audit.record(
            "redemption.clawback",
            object_type="redemptions",
            object_id=redemption.id,
            district_id=district_id,
            actor=actor,
            before={"status": "redeemed"},
            after={
                "status": "reversed",
                "statement": statement_id,
                "subsidy_fen": redemption.subsidy_fen,
                "reason": reason,
            },
        )


def install() -> None:
    steps.settlement_guard = SettlementGuard()


install()
