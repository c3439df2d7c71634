"""Which voucher months may be settled, and the month lock.

A redemption belongs to its voucher's month. Month M may be settled from the first day of
M+1 plus the longest reversal window of the voucher policies in force on M's last day: by
then no provider can reverse a redemption of M any more, so what a statement pays no longer
moves (a bureau reversal later is a clawback, ``vouchers.settlement.statements.guard``).

The ``settlement_months`` row is the lock that keeps a run and a reversal of the same month
apart: the run locks it FOR UPDATE, a reversal FOR SHARE (lock order in
``vouchers.pool.ledger``)."""

from __future__ import annotations

from datetime import date, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from eldercare.db import db
from vouchers.models import Redemption, Voucher, VoucherPolicy
from vouchers.settlement.models import SettlementMonth, StatementLine

DEFAULT_WINDOW_DAYS = 7  # when no policy is in force on the month's last day


def month_after(month: date) -> date:
    return date(month.year + (month.month == 12), month.month % 12 + 1, 1)


def first_of(month: date) -> date:
    return month.replace(day=1)


def settles_from(month: date) -> date:
    """The first day ``month`` may be settled."""
    month = first_of(month)
    last_day = month_after(month) - timedelta(days=1)
    window = db.session.scalar(
        sa.select(sa.func.max(VoucherPolicy.reversal_window_days)).where(
            VoucherPolicy.effective_from <= last_day,
            sa.or_(VoucherPolicy.effective_to.is_(None), VoucherPolicy.effective_to > last_day),
        )
    )
    return month_after(month) + timedelta(days=DEFAULT_WINDOW_DAYS if window is None else window)


def settleable_lines(month: date, *, unlined: bool = True) -> sa.Select:
    """The redemptions of ``month`` a run would take: redeemed, not in a statement, no open
    flag. (Joined with the voucher for its month and district.) ``unlined=False`` leaves out
    the "not in a statement" test, for the INSERT of lines, which skips those by the key
    instead (see ``run._add_lines``)."""
    from vouchers.integrity.models import RedemptionFlag

    query = (
        sa.select(
            Redemption.id,
            Redemption.provider_id,
            Voucher.district_id,
            Redemption.price_fen,
            Redemption.insurance_fen,
            Redemption.subsidy_fen,
            Redemption.copay_fen,
            Redemption.payment_method,
        )
        .join(Voucher, Voucher.id == Redemption.voucher_id)
        .where(
            Voucher.month == first_of(month),
            Redemption.status == "redeemed",
            ~sa.exists().where(
                RedemptionFlag.redemption_id == Redemption.id, RedemptionFlag.status == "open"
            ),
        )
    )
    if unlined:
        query = query.where(~sa.exists().where(StatementLine.redemption_id == Redemption.id))
    return query


def has_settleable(month: date) -> bool:
    """One EXISTS: does ``month`` have anything a run would take? (The partial index
    ``ix_redemptions_redeemed_voucher`` of migration 0018 keeps it to redeemed rows.)"""
    query = settleable_lines(month).with_only_columns(sa.literal(1)).limit(1)
    return db.session.scalar(sa.select(sa.exists(query))) or False


def settleable_months(today: date) -> list[date]:
    """Every month, oldest first, whose cut-off has passed and that has redemptions a run
    would take: what the catch-up settles. One cheap EXISTS per voucher month."""
    months = db.session.scalars(sa.select(Voucher.month).distinct().order_by(Voucher.month))
    return [m for m in months if settles_from(m) <= today and has_settleable(m)]


def ensure_month(month: date) -> None:
    """The month's row, created once whatever runs at once (a conflict is ignored)."""
    month = first_of(month)
    if db.session.scalar(sa.select(SettlementMonth.month).where(SettlementMonth.month == month)):
        return  # the usual case: no write (every reversal asks)
    values = {"month": month, "settles_from": settles_from(month), "last_run_lines": 0}
    dialect = db.session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    db.session.execute(
        insert(SettlementMonth).values(**values).on_conflict_do_nothing(index_elements=["month"])
    )


def lock_month(month: date, *, share: bool) -> SettlementMonth:
    """Ensure the month's row and lock it to the end of the transaction (PostgreSQL): FOR
    SHARE for a reversal (reversals of one month do not wait for each other), FOR UPDATE for
    a settlement run (it waits for reversals in progress, and they for it)."""
    ensure_month(month)
    return db.session.scalars(
        sa.select(SettlementMonth)
        .where(SettlementMonth.month == first_of(month))
        .with_for_update(read=share)
        .execution_options(populate_existing=True)
    ).one()
