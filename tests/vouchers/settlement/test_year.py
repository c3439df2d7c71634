"""A year of the programme, month by month, through the real services: issue, redeem (cash
and card), reverse, expire, settle, approve, pay through the bank (one failed line, paid in
the next batch), one clawback; at the end the books balance to the fen, every redemption
and statement is accounted for exactly once and every settled month reconciles.

Time moves with the ``clock`` fixture: every module's ``now_utc`` (and so ``local_today``)
reads the simulated moment, so each month's services run as they would on that day."""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime, time, timedelta

import pytest
import sqlalchemy as sa

from eldercare import timeutil
from eldercare.db import db
from tests.vouchers.settlement.builders import result_csv
from tests.vouchers.settlement.conftest import month_after, spend
from vouchers.issuance import monthly as issuance
from vouchers.models import JournalEntry, Redemption, Voucher
from vouchers.pool import ledger
from vouchers.redemption import steps as redemption
from vouchers.settlement.bank import bank_files, bank_results
from vouchers.settlement.models import BankTransfer, Statement, StatementLine
from vouchers.settlement.reconcile import reconcile
from vouchers.settlement.statements import approval, periods, run

MONTHS = 12
FAILED_IN = 3  # the month whose batch has its statement line failed by the bank
CLAWBACK_IN = 6  # the month in which the bureau reverses a settled redemption


class Clock:
    """The simulated moment; ``at(day, hour)`` moves it (Asia/Shanghai wall time)."""

    def __init__(self):
        self.moment: datetime | None = None

    def now(self) -> datetime:
        return self.moment or datetime.now(UTC)

    def at(self, day: date, hour: int = 10) -> datetime:
        local = datetime.combine(day, time(hour), tzinfo=timeutil.SHANGHAI)
        assert self.moment is None or local >= self.moment, "time only moves forward"
        self.moment = local.astimezone(UTC)
        return self.moment

    @property
    def today(self) -> date:
        return timeutil.local_today()


@pytest.fixture
def clock(monkeypatch):
    """Every ``now_utc`` the application imported reads the clock (``local_today`` calls
    ``timeutil.now_utc``, so it follows). Column defaults keep the real time: they only
    stamp rows."""
    real, clock = timeutil.now_utc, Clock()
    monkeypatch.setattr(timeutil, "now_utc", clock.now)
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in ("eldercare", "vouchers", "marketplace", "assessment"):
            if getattr(module, "now_utc", None) is real:
                monkeypatch.setattr(module, "now_utc", clock.now)
    return clock


def _voucher(resident_id: int, month: date) -> Voucher | None:
    return db.session.scalar(
        sa.select(Voucher).where(
            Voucher.resident_id == resident_id, Voucher.month == month, Voucher.status == "active"
        )
    )


def _card(shop, price_fen: int) -> Redemption:
    """A card redemption through the redemption steps (hold, then the gateway's capture):
    its co-payment enters the books through ``gateway:clearing``."""
    shop.counter += 1
    r = redemption.check_in(
        shop.voucher,
        scan_digest=f"year-card-{shop.counter}",
        staff_user=shop.caregiver,
        service_id=shop.market.meals.id,
    )
    redemption.set_price(r, price_fen=price_fen, staff_user=shop.caregiver)
    redemption.hold(r, method="card")
    assert redemption.capture(r)
    return r


def _result(batch, fail: set[int]) -> bytes:
    return result_csv(
        [
            (
                t.reference,
                t.payee_account_number,
                t.amount_fen,
                "失败" if t.statement_id in fail else "成功",
                "户名不符" if t.statement_id in fail else "",
            )  # fmt: skip
            for t in sorted(batch.transfers, key=lambda t: t.line_no)
        ]
    )


def test_a_year_month_by_month_ends_balanced_and_accounted_for(shop, bureau, clock, db_session):
    start = shop.today.replace(day=1)
    station = shop.market.station
    months = [start]
    for _ in range(MONTHS):
        months.append(month_after(months[-1]))
    statements_paid_by_bank: list[int] = []
    failed_statement = clawed = None
    settled_months: list[date] = []

    for i, month in enumerate(months[:MONTHS]):
        # The 1st: this month's vouchers (the scheme's elder has had this month's already).
        # The first month is the real one, and the scheme was made today: it runs now.
        if i:
            clock.at(month, hour=9)
        issuance.issue_monthly(month)
        shop.voucher = _voucher(shop.elder.id, month)
        assert shop.voucher is not None, f"no voucher for {month:%Y-%m}"
        # The 2nd and 3rd: two cash lunches, one card purchase; one lunch reversed the same
        # day by the bureau (back onto the voucher).
        if i:
            clock.at(month + timedelta(days=1))
        kept = [spend(shop, 1500 - 10 * i), spend(shop, 1200)]
        if i:
            clock.at(month + timedelta(days=2))
        card = _card(shop, 1500)
        assert card.payment_method == "card" and card.copay_fen > 0
        undone = spend(shop, 900)
        balance = shop.voucher.balance_fen
        redemption.reverse(undone, actor=bureau.approver, reason="重复扫码")
        db_session.refresh(shop.voucher)
        assert shop.voucher.balance_fen == balance + undone.subsidy_fen
        assert all(r.status == "redeemed" for r in kept)

        # The 10th: last month has ended and its reversal window has closed.
        clock.at(month + timedelta(days=9))
        if i == 0:
            continue
        previous = months[i - 1]
        issuance.expire_month(previous)
        if i == CLAWBACK_IN:
            # A redemption of a month already approved (and paid) is clawed back.
            clawed = db_session.scalar(
                sa.select(Redemption)
                .join(StatementLine, StatementLine.redemption_id == Redemption.id)
                .join(Statement, Statement.id == StatementLine.statement_id)
                .where(Statement.status == "paid", Redemption.status == "redeemed")
                .order_by(Redemption.id)
                .limit(1)
            )
            redemption.reverse(clawed, actor=bureau.approver, reason="服务未实际提供")
            assert ledger.balances([f"provider:{station.id}:receivable"]) == {
                f"provider:{station.id}:receivable": clawed.subsidy_fen
            }
        assert periods.settles_from(previous) <= clock.today
        report = run.run_settlement(previous, actor=bureau.officer)
        assert report["statements_created"] == 1 and report["lines_added"] == 3
        settled_months.append(previous)
        statement = db_session.scalar(
            sa.select(Statement).where(Statement.month == previous, Statement.status == "prepared")
        )
        approval.approve(statement, actor=bureau.approver)
        assert statement.status == "approved"
        if i == CLAWBACK_IN:
            assert statement.clawback_fen == clawed.subsidy_fen  # netted at once
        batch = bank_files.create_batch(actor=bureau.officer)
        in_batch = {t.statement_id for t in batch.transfers if t.kind == "statement"}
        assert statement.id in in_batch
        if failed_statement is not None:
            # Last month's failed line is in this batch, once.
            assert failed_statement in in_batch
        fail = {statement.id} if i == FAILED_IN else set()
        outcome = bank_results.import_result(
            batch, _result(batch, fail), f"result-{month:%Y%m}.csv", actor=bureau.officer
        )
        assert len(outcome.failed) == len(fail) and not outcome.exceptions
        statements_paid_by_bank += sorted(in_batch - fail)
        failed_statement = statement.id if fail else None
        db_session.flush()
        check = ledger.verify_ledger()
        assert check.ok, (f"{month:%Y-%m}", check)

    # ---- a year on --------------------------------------------------------------------
    check = ledger.verify_ledger()
    assert check.ok, check
    balances = ledger.balances()
    assert sum(balances.values()) == 0
    copay_side = {
        k: v
        for k, v in balances.items()
        if k in ("copay:card", "gateway:clearing", "copay:paid_out")
        or (k.startswith("provider:") and k.endswith(":copay"))
    }
    assert sum(copay_side.values()) == 0
    funded = -(balances["funding:central"] + balances["funding:local"])
    assert funded == sum(
        v for k, v in balances.items() if not k.startswith("funding:") and k not in copay_side
    )
    assert clawed is not None and failed_statement is None

    # Every statement: approved once, paid exactly once (one paid transfer, one pay entry).
    statements = db_session.scalars(sa.select(Statement).order_by(Statement.month)).all()
    assert [s.month for s in statements] == settled_months
    assert all(s.status == "paid" for s in statements)
    assert sorted(statements_paid_by_bank) == sorted(s.id for s in statements)
    for s in statements:
        paid = db_session.scalar(
            sa.select(sa.func.count()).where(
                BankTransfer.statement_id == s.id, BankTransfer.status == "paid"
            )
        )
        pays = db_session.scalar(
            sa.select(sa.func.count()).where(
                JournalEntry.kind == "pay",
                JournalEntry.cause_type == "statements",
                JournalEntry.cause_id == str(s.id),
            )
        )
        assert (paid, pays) == (1, 1), s.id
    failed_ones = db_session.scalars(
        sa.select(BankTransfer.statement_id).where(BankTransfer.status == "failed")
    ).all()
    assert len(failed_ones) == 1
    assert balances["settled"] == sum(s.subsidy_fen - s.clawback_fen for s in statements)
    assert balances["copay:paid_out"] == sum(s.card_copay_fen for s in statements)

    # Every redemption: reversed, or in exactly one statement, or of the last month (its
    # cut-off has not come yet).
    rows = db_session.execute(
        sa.select(
            Redemption.id,
            Redemption.status,
            Voucher.month,
            sa.select(sa.func.count())
            .where(StatementLine.redemption_id == Redemption.id)
            .scalar_subquery(),
        ).join(Voucher, Voucher.id == Redemption.voucher_id)
    ).all()
    assert len(rows) == 4 * MONTHS
    for rid, status, month, lines in rows:
        if rid == clawed.id:
            assert (status, lines) == ("reversed", 1)  # clawed back from its paid statement
        elif status == "reversed":
            assert lines == 0
        elif month in settled_months:
            assert (status, lines) == ("redeemed", 1), rid
        else:
            assert month == months[MONTHS - 1] and lines == 0, rid
    # The reconciliation of every settled month is green (the gateway is not configured
    # here: card purchases went through the redemption steps, not a payment intent).
    for month in settled_months:
        result = reconcile.reconcile_month(month, actor=bureau.officer)
        assert result.ok, (f"{month:%Y-%m}", result.findings["mismatches"])
        findings = result.findings
        assert findings["identity"]["ok"] and findings["bank"]["ok"]
        assert findings["statements"]["ok"] and findings["gateway"]["status"] == "not_checked"
    # Every month but the last (still current) expired.
    assert not db_session.scalar(
        sa.select(sa.func.count()).where(
            Voucher.status == "active", Voucher.month < months[MONTHS - 1]
        )
    )
