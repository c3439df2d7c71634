"""Approved statements for the bank tests, made directly.

The settlement run and approval (``vouchers.settlement.run`` / ``approval``) are built in
parallel; until they are merged, ``approved_statement`` stands in for "run, then approve":
it writes a statement of the given redemptions with its lines, the payee copied from the
provider, the totals from the lines and ``lines_hash`` from ``hashing.statement_hash``, and
posts the approval entry of BRIEF books §3 (no clawback). Replace it with the real run and
approval once they are merged.
"""

from __future__ import annotations

import sqlalchemy as sa

from eldercare.db import db
from eldercare.timeutil import now_utc
from marketplace.models import Provider
from vouchers.models import Redemption, Voucher
from vouchers.pool import ledger
from vouchers.settlement.hashing import statement_hash
from vouchers.settlement.models import Statement, StatementLine


def approved_statement(provider: Provider, redemptions: list[Redemption], *, preparer, approver):
    rows = db.session.execute(
        sa.select(Redemption, Voucher)
        .join(Voucher, Voucher.id == Redemption.voucher_id)
        .where(Redemption.id.in_([r.id for r in redemptions]))
        .order_by(Redemption.id)
    ).all()
    month = rows[0][1].month
    seq = 1 + (
        db.session.scalar(
            sa.select(sa.func.max(Statement.seq)).where(
                Statement.provider_id == provider.id, Statement.month == month
            )
        )
        or 0
    )
    db.session.refresh(provider)
    lines = [
        StatementLine(
            redemption_id=r.id,
            district_id=v.district_id,
            price_fen=r.price_fen,
            insurance_fen=r.insurance_fen or 0,
            subsidy_fen=r.subsidy_fen,
            copay_fen=r.copay_fen,
            payment_method=r.payment_method or "none",
            card_copay_fen=r.copay_fen if r.payment_method == "card" else 0,
        )
        for r, v in rows
    ]
    statement = Statement(
        provider_id=provider.id,
        month=month,
        seq=seq,
        status="prepared",
        line_count=len(lines),
        subsidy_fen=sum(x.subsidy_fen for x in lines),
        card_copay_fen=sum(x.card_copay_fen for x in lines),
        clawback_fen=0,
        payee_account_name=provider.bank_account_name,
        payee_bank_name=provider.bank_name,
        payee_account_number=provider.bank_account_number,
        prepared_by_user_id=preparer.id,
    )
    db.session.add(statement)
    db.session.flush()
    for line in lines:
        line.statement_id = statement.id
    db.session.add_all(lines)
    db.session.flush()
    lines_hash = statement_hash(statement)
    db.session.execute(
        sa.update(Statement)
        .where(Statement.id == statement.id)
        .values(
            status="approved",
            lines_hash=lines_hash,
            approved_by_user_id=approver.id,
            approved_at=now_utc(),
        )
    )
    db.session.refresh(statement)
    payable = f"provider:{provider.id}:payable"
    ledger.account(payable, create_name=f"{provider.name}: subsidy owed")
    entries = [("redeemed:unsettled", -statement.subsidy_fen), (payable, statement.subsidy_fen)]
    if statement.card_copay_fen:
        copay = f"provider:{provider.id}:copay"
        ledger.account(copay, create_name=f"{provider.name}: card co-payments owed")
        entries += [
            ("gateway:clearing", -statement.card_copay_fen),
            (copay, statement.card_copay_fen),
        ]
    sid = statement.id
    ledger.post(
        "settle",
        f"statement {sid} approved",
        entries,
        cause=("statements", sid),
        actor_id=approver.id,
    )
    return db.session.get(Statement, sid)


def books_balanced() -> bool:
    """``ledger.verify_ledger().ok``, allowing for one thing this branch does not have yet:
    until the settlement run is merged, the sub-ledger of ``redeemed:unsettled`` still counts
    redemptions that are in approved statements (the run's change to ``_subledgers`` takes
    them out). Everything else must hold exactly; after the merge this is ``.ok``."""
    check = ledger.verify_ledger()
    if check.ok:
        return True
    in_statements = db.session.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(StatementLine.subsidy_fen), 0))
        .join(Statement, Statement.id == StatementLine.statement_id)
        .where(Statement.status.in_(("approved", "paid")))
    )
    return (
        not check.unbalanced_entries
        and not check.drifted_accounts
        and check.total_fen == 0
        and not check.negative_accounts
        and not check.closed_vouchers_with_balance
        and not check.capture_mismatches
        and all(
            m["account"] == "redeemed:unsettled"
            and m["subledger_fen"] - m["ledger_fen"] == in_statements
            for m in check.subledger_mismatches
        )
    )


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
