"""Approved statements for the bank tests, through the real flow: a settlement run of the
redemptions' month on the day it may first be settled, then approval by another person.

``books_balanced()`` is ``ledger.verify_ledger().ok``, printing the findings when it fails
(pytest shows them under the failed assertion)."""

from __future__ import annotations

import sqlalchemy as sa

from eldercare.db import db
from marketplace.models import Provider
from vouchers.models import Redemption, Voucher
from vouchers.pool import ledger
from vouchers.settlement.models import Statement, StatementLine
from vouchers.settlement.statements import approval, periods, run


def approved_statement(
    provider: Provider, redemptions: list[Redemption], *, preparer, approver, second=None
):
    """Run the redemptions' month (as on its ``settles_from`` day) and approve the
    provider's statement that took them (``second`` too, when the threshold asks for two).
    The statement holds exactly the given redemptions: the caller settles what it spent."""
    ids = sorted(r.id for r in redemptions)
    month = db.session.scalar(
        sa.select(Voucher.month)
        .join(Redemption, Redemption.voucher_id == Voucher.id)
        .where(Redemption.id == ids[0])
    )
    run.run_settlement(month, actor=preparer, today=periods.settles_from(month))
    statement = db.session.scalar(
        sa.select(Statement)
        .join(StatementLine, StatementLine.statement_id == Statement.id)
        .where(
            Statement.provider_id == provider.id,
            StatementLine.redemption_id == ids[0],
            Statement.status == "prepared",
        )
    )
    assert statement is not None, f"the run took no line of redemption {ids[0]}"
    lines = sorted(
        db.session.scalars(
            sa.select(StatementLine.redemption_id).where(StatementLine.statement_id == statement.id)
        )
    )
    assert lines == ids, f"statement {statement.id} holds {lines}, expected {ids}"
    approval.approve(statement, actor=approver)
    if statement.status == "awaiting_second":
        assert second is not None, "above the threshold: pass a second approver"
        approval.approve(statement, actor=second)
    assert statement.status == "approved"
    return db.session.get(Statement, statement.id)


def books_balanced() -> bool:
    """``ledger.verify_ledger().ok``; when not, the findings are printed."""
    check = ledger.verify_ledger()
    if not check.ok:
        print("verify_ledger found:", check)
    return check.ok


def result_csv(rows: list[tuple], *, titles=None, trailer=None) -> bytes:
    """A bank result file: ``rows`` are (reference, account number, fen, status, reason);
    the trailer is computed unless given."""
    import csv
    import io
    from decimal import Decimal

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(titles or ["业务参考号", "收款账号", "金额(元)", "状态", "失败原因"])
    total = 0
    for ref, number, fen, status, reason in rows:
        writer.writerow([ref, number, f"{Decimal(fen) / 100:.2f}", status, reason])
        total += fen
    writer.writerow(trailer or ["T", len(rows), f"{Decimal(total) / 100:.2f}"])
    return ("\ufeff" + out.getvalue()).encode()
