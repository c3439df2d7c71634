"""Demo data of settlement: the month before last settled, approved, paid and reconciled
green, and the latest month whose reversal window has closed ready to settle.

A month may be settled only from ``periods.settles_from`` (the 8th of the next month by
default), so the months are chosen from today: the latest month whose cut-off has passed is
"ready" (redemptions, no statements), the one before it is "settled". On 4 December that is
October ready and September settled; on the 8th it moves on by one.

Those months are in the past, so their vouchers are issued now (``issuance.try_issue``, as
the bureau's manual issue does; eligibility is judged today, when the demo's elders are
assessed) and spent with ``now=`` a day in their month, at three providers, in cash and
with no co-payment. Then the real settlement run (``bureau.officer``), approval
(``bureau.approver``), bank batch, an imported bank result with every line paid, and a
reconciliation. Everything goes through the services, so the ledger, the audit trail, the
statements and their hashes are the real ones. Runs after the vouchers step; rerunning
changes nothing that is there.
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, time, timedelta
from decimal import Decimal

import sqlalchemy as sa

from eldercare.accounts import User
from eldercare.db import db
from eldercare.demo import DEMO_PASSWORD
from eldercare.timeutil import SHANGHAI, local_today
from marketplace import bookings, catalogue
from marketplace import staff as staff_service
from marketplace.models import Provider, ProviderStaff
from marketplace.providers import staff_record
from vouchers.integrity import demo as integrity_demo
from vouchers.issuance import monthly as issuance
from vouchers.models import Redemption, Voucher
from vouchers.redemption import steps as redemption
from vouchers.settlement.bank import bank_files, bank_results, result_files
from vouchers.settlement.models import BankBatch, ReconciliationRun, Statement
from vouchers.settlement.reconcile.reconcile import reconcile_month
from vouchers.settlement.statements import approval, periods, run

ELDERS = 3  # the first demo elders (by resident id) with a voucher this month
# (provider admin's username, staff username, display name, certificate): where they eat.
COUNTERS = [
    ("provider.admin", "provider.staff", None, None),
    ("provider.beishichang", "beishichang.staff", "北市场服务站 护理员 吴敏", "YLHLY-2101-0051"),
    ("provider.beiling", "beiling.staff", "北陵服务中心 护理员 郑丽", "YLHLY-2105-0063"),
]
# Service days in the month (lunch at 11:30); the lunch price decides cash or no co-payment.
DAYS = (6, 13, 20)
HISTORY_MONTHS = 11  # the settled month and the ten before it: with the ready one, a year
EARLIER_DAYS = (13,)  # one lunch a month before the settled month keeps the demo quick


def demo_months(today: date) -> tuple[date, date]:
    """(settled, ready): the month before the latest settleable one, and that one."""
    ready = issuance.previous_month(issuance.month_of(today))
    while periods.settles_from(ready) > today:
        ready = issuance.previous_month(ready)
    return issuance.previous_month(ready), ready


def _user(username: str) -> User | None:
    return db.session.scalar(sa.select(User).where(User.username == username))


def _counters(today: date) -> list[tuple[User, Provider]]:
    """(staff user, provider) of each counter, inviting the missing caregivers."""
    found = []
    for admin_name, username, display, certificate in COUNTERS:
        admin = _user(admin_name)
        record = admin and staff_record(admin)
        if not record:
            continue
        provider = db.session.get(Provider, record.provider_id)
        if not provider.is_certified_on(today):
            continue
        user = _user(username)
        if user is None and display is not None:
            staff_service.invite_staff(
                provider,
                username=username,
                display_name=display,
                password=DEMO_PASSWORD,
                certificate_number=certificate,
                certificate_valid_until=today + timedelta(days=700),
                today=today,
            )
            user = _user(username)
        works_there = user is not None and db.session.scalar(
            sa.select(ProviderStaff.id).where(
                ProviderStaff.user_id == user.id, ProviderStaff.provider_id == provider.id
            )
        )
        if works_there:
            found.append((user, provider))
    return found


def _meal(provider: Provider):
    return next(
        s for s in catalogue.services_of(provider) if s.category_code == "meal_help" and s.active
    )


def _spend_month(month: date, residents: list[int], counters, approver: User, days=DAYS) -> int:
    """Each elder's lunches of ``month``, one a week at each counter in turn: booked by the
    elder the day before, accepted by the caregiver, and redeemed at the booking (the price
    is the booking's: the demo's catalogue is listed only from the day the demo was built)."""
    made = 0
    for index, resident_id in enumerate(residents):
        elder = db.session.scalar(sa.select(User).where(User.resident_id == resident_id))
        outcome = issuance.try_issue(resident_id, month, actor_id=approver.id, reason="manual")
        voucher = outcome.voucher
        if voucher is None or elder is None:
            continue
        for turn, day in enumerate(days):
            staff_user, provider = counters[(index + turn) % len(counters)]
            # Not "demo-…": tests find the vouchers step's lunch by that prefix.
            digest = f"settlement-demo-{month:%Y-%m}-{resident_id}-{day}"
            if db.session.scalar(sa.select(Redemption.id).where(Redemption.scan_digest == digest)):
                continue
            lunch = datetime.combine(month.replace(day=day), time(11, 30), tzinfo=SHANGHAI)
            booking = bookings.book(
                _meal(provider),
                resident=elder.resident,
                booked_by=elder,
                slot_start=lunch,
                now=lunch - timedelta(hours=20),
            )
            bookings.accept(booking, staff_user, now=lunch - timedelta(hours=19))
            r = redemption.check_in(
                voucher,
                scan_digest=digest,
                staff_user=staff_user,
                booking_id=booking.id,
                now=lunch,
            )
            redemption.set_price(r, price_fen=booking.price_fen, staff_user=staff_user, now=lunch)
            redemption.pay_cash(r, staff_user=staff_user, now=lunch + timedelta(minutes=40))
            made += 1
    return made


def _result_file(batch: BankBatch) -> bytes:
    """The bank's answer to the batch: every line paid (result_files' layout)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(result_files.TITLE_TEXT.split(","))
    for t in batch.transfers:
        amount = f"{Decimal(t.amount_fen) / 100:.2f}"
        writer.writerow([t.reference, t.payee_account_number, amount, "成功", ""])
    total = f"{Decimal(sum(t.amount_fen for t in batch.transfers)) / 100:.2f}"
    writer.writerow(["T", len(batch.transfers), total])
    return ("\ufeff" + out.getvalue()).encode()


def _settle_and_pay(month: date, officer: User, approver: User, today: date) -> None:
    if db.session.scalar(sa.select(Statement.id).where(Statement.month == month).limit(1)):
        return  # settled by an earlier run (or by hand): leave it as it is
    run.run_settlement(month, actor=officer, today=today)
    for statement in db.session.scalars(
        sa.select(Statement).where(Statement.month == month).order_by(Statement.id)
    ):
        approval.approve(statement, actor=approver)
    batch = bank_files.create_batch(actor=officer, today=today)
    bank_results.import_result(
        batch, _result_file(batch), f"{batch.reference}-result.csv", actor=officer
    )
    db.session.flush()


def build_demo() -> dict:
    today = local_today()
    officer, approver = _user("bureau.officer"), _user("bureau.approver")
    counters = _counters(today)
    this_month = issuance.month_of(today)
    residents = list(
        db.session.scalars(
            sa.select(Voucher.resident_id)
            .where(Voucher.month == this_month, Voucher.status == "active")
            .order_by(Voucher.resident_id)
            .limit(ELDERS)
        )
    )
    if officer is None or approver is None or not counters or not residents:
        return {}
    settled, ready = demo_months(today)
    # A year of history for the bureau's dashboard and reports: the months before the
    # settled one, settled and paid the same way (never before the pilot's first policy:
    # a month with no voucher policy in force issues nothing and is skipped).
    earlier = [settled]
    for _ in range(HISTORY_MONTHS - 1):
        earlier.insert(0, issuance.previous_month(earlier[0]))
    earlier.pop()
    paid_months = [*earlier, settled]
    made = sum(_spend_month(m, residents, counters, approver, EARLIER_DAYS) for m in earlier)
    made += sum(_spend_month(m, residents, counters, approver) for m in (settled, ready))
    # Redemptions of the settled month that trip anomaly rules, and the officer's decisions
    # on two of them: the run below leaves the ones still held out of its statements.
    anomalies = integrity_demo.seed(settled, residents, officer)
    for month in (*paid_months, ready):  # the month-end step: the rest returns to the pool
        issuance.expire_month(month)
    for month in paid_months:
        _settle_and_pay(month, officer, approver, today)
        if made or not db.session.scalar(
            sa.select(ReconciliationRun.id).where(ReconciliationRun.month == month).limit(1)
        ):
            reconcile_month(month, actor=officer)
    return {
        "settlement_settled_month": f"{settled:%Y-%m}",
        "settlement_ready_month": f"{ready:%Y-%m}",
        "settlement_redemptions": made,
        **anomalies,
        "accounts": [
            {"username": username, "password": DEMO_PASSWORD, "roles": "provider_staff"}
            for _, username, display, _ in COUNTERS
            if display is not None
        ],
    }
