"""Statements for the documents' tests, made directly (not by a settlement run): a Statement
with the payee copied from its provider, totals from its lines, and the lines of the
redemptions given (made with ``conftest.spend``, or in bulk with ``bulk_redemptions``).

The freeze triggers refuse lines added to an approved statement, so a statement is built
'prepared', its lines inserted, then approved with the hash of its lines. No ledger
postings: the documents read statements only.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from eldercare.db import db
from eldercare.timeutil import now_utc
from marketplace.models import Provider
from vouchers.models import Redemption, Voucher
from vouchers.settlement.models import Statement, StatementLine
from vouchers.settlement.statements.hashing import statement_hash


def make_statement(
    provider: Provider,
    redemptions,
    *,
    status: str = "approved",
    preparer=None,
    approver=None,
    second=None,
    seq: int | None = None,
    card: bool = False,
    paid: bool = False,
) -> Statement:
    """A statement of ``redemptions`` (all of one voucher month) for ``provider``.

    ``card``: the lines' co-payments count as collected by card (the card co-payment
    total). ``status`` 'prepared' still stores ``lines_hash`` (what the verification page
    compares); 'approved' and 'paid' are frozen by the triggers once set."""
    ids = [r.id for r in redemptions]
    rows = db.session.execute(
        sa.select(Redemption, Voucher.month, Voucher.district_id)
        .join(Voucher, Voucher.id == Redemption.voucher_id)
        .where(Redemption.id.in_(ids))
        .order_by(Redemption.id)
    ).all()
    months = {month for _r, month, _d in rows}
    assert len(months) == 1, "a statement is of one voucher month"
    month = months.pop()
    if seq is None:  # the next of the provider's month, as supplementary statements are
        seq = 1 + (
            db.session.scalar(
                sa.select(sa.func.max(Statement.seq)).where(
                    Statement.provider_id == provider.id, Statement.month == month
                )
            )
            or 0
        )
    now = now_utc()
    statement = Statement(
        provider_id=provider.id,
        month=month,
        seq=seq,
        status="prepared",
        payee_account_name=provider.bank_account_name,
        payee_bank_name=provider.bank_name,
        payee_account_number=provider.bank_account_number,
        prepared_by_user_id=preparer.id if preparer else None,
        prepared_at=now - timedelta(hours=2),
    )
    db.session.add(statement)
    db.session.flush()
    lines = [
        {
            "redemption_id": r.id,
            "statement_id": statement.id,
            "district_id": district_id,
            "price_fen": r.price_fen,
            "insurance_fen": r.insurance_fen,
            "subsidy_fen": r.subsidy_fen,
            "copay_fen": r.copay_fen,
            "payment_method": "card" if card and r.copay_fen else (r.payment_method or "none"),
            "card_copay_fen": r.copay_fen if card else 0,
        }
        for r, _month, district_id in rows
    ]
    return _finish(statement, lines, status, approver, second, paid, now)


def _finish(statement, lines, status, approver, second, paid, now) -> Statement:
    if lines:
        db.session.execute(sa.insert(StatementLine), lines)
    statement.line_count = len(lines)
    statement.subsidy_fen = sum(x["subsidy_fen"] for x in lines)
    statement.card_copay_fen = sum(x["card_copay_fen"] for x in lines)
    db.session.flush()
    statement.lines_hash = statement_hash(statement)
    if status in ("approved", "paid", "awaiting_second"):
        statement.approved_by_user_id = approver.id
        statement.approved_at = now - timedelta(hours=1)
    if second is not None:
        statement.second_approved_by_user_id = second.id
        statement.second_approved_at = now - timedelta(minutes=30)
    if paid or status == "paid":
        statement.paid_at = now
    statement.status = status
    db.session.flush()
    return statement


def bulk_redemptions(
    shop,
    count: int,
    *,
    provider=None,
    service=None,
    subsidy_fen: int = 500,
    copay_fen: int = 1000,
):
    """``count`` redeemed redemptions of the shop's voucher at ``provider`` (the station),
    inserted in one statement (the documents do not care that the voucher's balance did not
    pay them)."""
    voucher, provider = shop.voucher, provider or shop.market.station
    prefix = f"bulk-{voucher.id}-{provider.id}-"
    start = now_utc() - timedelta(days=1)
    rows = [
        {
            "voucher_id": voucher.id,
            "resident_id": voucher.resident_id,
            "provider_id": provider.id,
            "staff_user_id": shop.caregiver.id,
            "service_id": (service or shop.market.meals).id,
            "scan_digest": f"{prefix}{i}",
            "status": "redeemed",
            "checked_in_at": start + timedelta(seconds=i),
            "checked_out_at": start + timedelta(seconds=i, minutes=30),
            "check_in_distance_m": 120 + i % 50,
            "quantity": 1,
            "price_fen": subsidy_fen + copay_fen,
            "insurance_fen": 0,
            "subsidy_fen": subsidy_fen,
            "copay_fen": copay_fen,
            "payment_method": "cash",
            "redeemed_at": start + timedelta(seconds=i, minutes=1),
        }
        for i in range(count)
    ]
    db.session.execute(sa.insert(Redemption), rows)
    return db.session.scalars(
        sa.select(Redemption)
        .where(Redemption.scan_digest.like(f"{prefix}%"))
        .order_by(Redemption.id)
    ).all()
