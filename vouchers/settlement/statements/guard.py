"""What a reversal does to settlement (set as ``vouchers.redemption.steps.settlement_guard``
when settlement is registered; redemption never imports settlement).

A reversal of a redemption:
- not in any statement: nothing here; it reverses as before;
- in a statement not yet approved: its line leaves that statement (totals updated; one
  awaiting its second approver goes back to 'prepared', its first approval cleared) and it
  reverses as before (the subsidy goes back);
- in an approved or paid statement (settled): a clawback. The redemption becomes
  'reversed', nothing goes back onto the (past) voucher, the provider owes the subsidy back
  (``books.post_clawback``), netted at its next approval; the card co-payment is not
  refunded through the gateway (the provider was paid it and refunds the elder directly).

Locks (the lock order in ``vouchers.pool.ledger``): the redemption's row (the caller's),
then the month row FOR SHARE, so a settlement run of the month (FOR UPDATE) either finished
before (the line is there) or starts after the reversal commits (the redemption is no longer
'redeemed'); then the statement row, locked and read again, which also finds out whether an
approval committed meanwhile.

A flag raised on a redemption (``vouchers.integrity.flags.raise_flag``) takes its line out
the same way (``hold_out``, the same ``take_out``), so a flagged redemption is never approved
while its flag is open; in an approved statement it stays (settled: rejecting the flag
claws it back).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm.util import identity_key

from eldercare import audit
from eldercare.db import db
from vouchers.models import Voucher
from vouchers.redemption import steps
from vouchers.settlement import books
from vouchers.settlement.models import FROZEN_STATUSES, Statement, StatementLine
from vouchers.settlement.statements import periods

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


def _statement_locked(statement_id: int):
    """The statement's status and first approver, its row locked (PostgreSQL waits for an
    approval or a rejection in progress and then reads the row as it left it)."""
    return db.session.execute(
        sa.select(Statement.status, Statement.approved_by_user_id, Statement.approved_at)
        .where(Statement.id == statement_id)
        .with_for_update()
    ).one()


def take_out(redemption, *, actor=None, why: str) -> str | None:
    """Take the redemption's line out of its statement if that is not yet approved: the one
    mechanism a reversal and a flag share. With the redemption's row locked (the caller's),
    the month row FOR SHARE, so a settlement run of the month (FOR UPDATE) either finished
    before (the line is there) or starts after we commit (and then skips the redemption:
    no longer 'redeemed', or held by its open flag); then the statement row.

    "settled" (the line is in an approved or paid statement: nothing changes here), "open"
    (the line left an unapproved statement, totals updated, audited with ``actor``) or None
    (in no statement). A statement awaiting its second approver that loses a line goes back
    to 'prepared' and its first approval is cleared (audited): both approvers must see the
    same lines."""
    month = db.session.scalar(sa.select(Voucher.month).where(Voucher.id == redemption.voucher_id))
    periods.lock_month(month, share=True)
    line = _line(redemption.id)
    if line is None:
        return None
    if line.status in FROZEN_STATUSES:
        return "settled"
    state = _statement_locked(line.statement_id)
    if state.status in FROZEN_STATUSES:
        return "settled"  # approved while we waited for its row
    if state.status not in OPEN:
        return None  # rejected meanwhile: its lines went with it
    values = {
        "line_count": Statement.line_count - 1,
        "subsidy_fen": Statement.subsidy_fen - line.subsidy_fen,
        "card_copay_fen": Statement.card_copay_fen - line.card_copay_fen,
    }
    if state.status == "awaiting_second":
        values |= {"status": "prepared", "approved_by_user_id": None, "approved_at": None}
    db.session.execute(
        sa.update(Statement)
        .where(Statement.id == line.statement_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    db.session.execute(
        sa.delete(StatementLine)
        .where(StatementLine.redemption_id == redemption.id)
        .execution_options(synchronize_session=False)
    )
    audit.record(
        "statement.line_removed",
        object_type="statements",
        object_id=line.statement_id,
        actor=actor,
        after={"redemption": redemption.id, "subsidy_fen": line.subsidy_fen, "why": why},
    )
    if state.status == "awaiting_second":
        audit.record(
            "statement.approval_cleared",
            object_type="statements",
            object_id=line.statement_id,
            actor=actor,
            before={"status": "awaiting_second", "approved_by": state.approved_by_user_id},
            after={"status": "prepared", "redemption": redemption.id, "why": why},
        )
    # Loaded copies of the statement read the new totals and status on their next access.
    loaded = db.session.identity_map.get(identity_key(Statement, line.statement_id))
    if loaded is not None:
        db.session.expire(loaded)
    return "open"


class SettlementGuard:
    """The object ``steps.settlement_guard`` holds (see ``steps.SettlementGuardProtocol``)."""

    def is_settled(self, redemption) -> bool:
        return settled_statement(redemption.id) is not None

    def before_reversal(self, redemption, actor=None) -> str | None:
        """Called by ``steps.reverse`` after the redemption's row is locked and the checks:
        "settled" (clawback), "open" (its line was taken out of an unapproved statement) or
        None (in no statement)."""
        return take_out(redemption, actor=actor, why="reversed")

    def hold_out(self, redemption, actor=None) -> str | None:
        """Called by ``vouchers.integrity.flags.raise_flag`` with the redemption's row
        locked: the same as a reversal does to its line ("open": taken out of an unapproved
        statement; "settled": already in an approved one, the flag only marks it)."""
        return take_out(redemption, actor=actor, why="flagged")

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
