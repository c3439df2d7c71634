"""A small world built by hand for the report, every row with its own time, so that each
figure of March 2026 and of the year 2026 is known exactly (see ``EXPECTED`` in the tests).

Rows are inserted directly (not through the services, which stamp "now"): the report reads
tables, and the point is to know what it must find."""

from __future__ import annotations

from datetime import UTC, date, datetime
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from assessment.models import Agency, Assessment, FeeRefund
from eldercare.db import db
from marketplace.models import Provider
from vouchers.integrity.models import RedemptionFlag
from vouchers.models import JournalEntry, JournalLine, Redemption, Voucher, VoucherPolicy
from vouchers.pool import ledger
from vouchers.settlement.models import ReconciliationRun, SettlementException

SH = ZoneInfo("Asia/Shanghai")


def sh(*args) -> datetime:
    """A Shanghai wall-clock time, as the aware datetime the tables store (in UTC)."""
    return datetime(*args, tzinfo=SH).astimezone(UTC)


def _policy_id(kind: str) -> int:
    return db.session.scalar(
        sa.select(VoucherPolicy.id).where(VoucherPolicy.kind == kind).order_by(VoucherPolicy.id)
    )


def _entry(kind: str, when: datetime, lines: list[tuple[str, int]]) -> None:
    entry = JournalEntry(kind=kind, occurred_at=when, memo=f"report test {kind}")
    db.session.add(entry)
    db.session.flush()
    for code, amount in lines:
        account = ledger.account(code, create_name=code)
        db.session.add(JournalLine(entry_id=entry.id, account_id=account.id, amount_fen=amount))
    db.session.flush()


def build(factory) -> SimpleNamespace:
    w = SimpleNamespace()
    w.a = factory.district("210102")
    w.b = factory.district("210103")
    w.staff = factory.user("report.staff", roles=["provider_staff"])
    code_a = ledger.district_account_code(w.a.code)
    code_b = ledger.district_account_code(w.b.code)

    # -- funds: two top-ups in March, one a minute into April (Shanghai), one the last
    # evening of February; allocations in March, one taken partly back.
    _entry(
        "topup",
        sh(2026, 3, 5, 10),
        [("funding:central", -1_000_000), ("pool:available", 1_000_000)],
    )
    _entry("topup", sh(2026, 3, 20, 10), [("funding:local", -500_000), ("pool:available", 500_000)])
    _entry("topup", sh(2026, 4, 1, 0, 1), [("funding:central", -7), ("pool:available", 7)])
    _entry("topup", sh(2026, 2, 28, 23, 30), [("funding:local", -9), ("pool:available", 9)])
    _entry("allocation", sh(2026, 3, 6, 9), [("pool:available", -300_000), (code_a, 300_000)])
    _entry("allocation", sh(2026, 3, 7, 9), [("pool:available", 50_000), (code_a, -50_000)])
    _entry("allocation", sh(2026, 3, 8, 9), [("pool:available", -200_000), (code_b, 200_000)])

    # -- elders and their assessments
    e1 = factory.resident(w.a, name="赵一")
    e2 = factory.resident(w.a, name="钱二")
    e3 = factory.resident(w.b, name="孙三")
    e4 = factory.resident(w.a, name="李四")  # never assessed here (imported history)
    w.elders = (e1, e2, e3, e4)

    def assessment(resident, level, reviewed, effective):
        row = Assessment(
            resident_id=resident.id,
            type="first",
            status="approved",
            applied_via="bureau",
            level=level,
            base_level=level,
            total=40,
            reviewed_at=reviewed,
            effective_from=effective,
            valid_until=date(2027, 12, 31),
        )
        db.session.add(row)
        return row

    a1 = assessment(e1, "severe", sh(2025, 12, 1, 10), date(2025, 12, 1))
    a1b = assessment(e1, "moderate", sh(2026, 4, 20, 10), date(2026, 5, 1))
    a2 = assessment(e2, "moderate", sh(2026, 3, 10, 10), date(2026, 3, 10))
    a3 = assessment(e3, "complete", sh(2026, 2, 10, 10), date(2026, 2, 10))
    # Not approved: never counted.
    db.session.add(
        Assessment(resident_id=e4.id, type="first", status="recorded", applied_via="bureau")
    )
    db.session.flush()

    # -- vouchers and redemptions
    home, inst = _policy_id("home_community"), _policy_id("institutional")

    def voucher(resident, month, fen, kind="home_community", status="active"):
        row = Voucher(
            resident_id=resident.id,
            month=month,
            kind=kind,
            policy_id=home if kind == "home_community" else inst,
            district_id=resident.district_id,
            face_value_fen=fen,
            balance_fen=0,
            held_fen=0,
            status=status,
            issued_at=datetime(month.year, month.month, 1, tzinfo=SH),
        )
        db.session.add(row)
        db.session.flush()
        return row

    march, february = date(2026, 3, 1), date(2026, 2, 1)
    v1 = voucher(e1, march, 50_000)
    v2 = voucher(e2, march, 50_000)
    v3 = voucher(e3, march, 80_000, kind="institutional")
    v4 = voucher(e4, march, 50_000, status="revoked")
    v6 = voucher(e1, february, 50_000, status="expired")
    w.provider_a = _provider(w.a, "甲站", "active", date(2026, 12, 31))
    _provider(w.a, "乙站", "active", date(2026, 3, 15))  # lapsed mid-March
    _provider(w.b, "丙站", "suspended", date(2027, 12, 31))
    _provider(w.b, "丁站", "active", date(2027, 12, 31))

    counter = iter(range(1, 100))

    def redemption(v, status, subsidy, when):
        row = Redemption(
            voucher_id=v.id,
            resident_id=v.resident_id,
            provider_id=w.provider_a.id,
            staff_user_id=w.staff.id,
            scan_digest=f"report-{next(counter)}",
            status=status,
            checked_in_at=when,
            quantity=1,
            price_fen=subsidy * 2,
            insurance_fen=0,
            subsidy_fen=subsidy,
            copay_fen=subsidy,
            ratio_bp=5000,
            payment_method="cash",
            redeemed_at=when if status in ("redeemed", "reversed") else None,
            reversed_at=when if status == "reversed" else None,
        )
        db.session.add(row)
        db.session.flush()
        return row

    r1 = redemption(v1, "redeemed", 2000, sh(2026, 3, 2, 9))
    r2 = redemption(v1, "redeemed", 3000, sh(2026, 3, 3, 9))
    r3 = redemption(v2, "redeemed", 1500, sh(2026, 3, 4, 9))
    redemption(v2, "reversed", 1000, sh(2026, 3, 5, 9))
    r5 = redemption(v3, "redeemed", 4000, sh(2026, 3, 6, 9))
    redemption(v4, "cancelled", 700, sh(2026, 3, 7, 9))
    redemption(v6, "redeemed", 2500, sh(2026, 2, 20, 9))
    redemption(v1, "failed", 900, sh(2026, 3, 8, 9))

    # -- agencies and fee refunds
    for name, district, status in (
        ("甲评估", w.a, "active"),
        ("市评估", None, "active"),
        ("丙评估", w.b, "revoked"),
    ):
        db.session.add(
            Agency(
                name=name,
                licence_number=f"RPT-{name}",
                district_id=district.id if district else None,
                certified_until=date(2027, 12, 31),
                status=status,
            )
        )

    def refund(case, resident, fen, paid_at):
        db.session.add(
            FeeRefund(
                assessment_id=case.id,
                resident_id=resident.id,
                district_id=resident.district_id,
                amount_fen=fen,
                owed_on=date(2026, 3, 1),
                status="paid" if paid_at else "owed",
                paid_at=paid_at,
            )
        )

    refund(a2, e2, 10_000, sh(2026, 3, 12, 10))
    refund(a3, e3, 5_000, sh(2026, 3, 31, 23))
    refund(a1b, e1, 3_000, sh(2026, 4, 1, 1))
    refund(a1, e1, 2_000, None)

    # -- flags
    def flag(r, rule, raised, status="open", decided=None):
        db.session.add(
            RedemptionFlag(
                redemption_id=r.id,
                rule=rule,
                evidence={},
                status=status,
                raised_at=raised,
                decided_at=decided,
            )
        )

    flag(r1, "bureau", sh(2026, 3, 2, 12), "cleared", sh(2026, 3, 5, 12))
    flag(r3, "bureau", sh(2026, 3, 3, 12))
    flag(r5, "odd_hours", sh(2026, 2, 27, 12), "rejected", sh(2026, 3, 4, 12))
    flag(r2, "odd_hours", sh(2026, 3, 30, 12), "rejected", sh(2026, 4, 2, 12))

    # -- reconciliation: March run twice (the last is ok), a books finding still open
    for ok, finished in ((False, sh(2026, 4, 2, 3)), (True, sh(2026, 4, 3, 3))):
        db.session.add(
            ReconciliationRun(
                month=march,
                started_at=finished,
                finished_at=finished,
                ok=ok,
                findings={
                    "mismatches": [],
                    "districts": [{"district_id": w.a.id, "ok": True}],
                    "gateway": {"status": "ok"},
                },
            )
        )
    db.session.add(
        SettlementException(
            source="reconciliation",
            kind="identity.total",
            fingerprint="report-test-books",
            month=None,
            district_id=None,
            evidence={},
            status="open",
        )
    )
    w.last_run_at = sh(2026, 4, 3, 3)
    db.session.flush()
    return w


def _provider(district, name, status, until) -> Provider:
    row = Provider(
        name=name,
        credit_code=f"91210102MA0{ord(name[0]):07d}",
        type="community_station",
        status=status,
        certified_until=until,
        district_id=district.id,
        address="三好街 1 号",
        latitude=41.78,
        longitude=123.43,
        contact_name="张",
        contact_phone="024-12345678",
        bank_account_name=name,
        bank_name="中国银行",
        bank_account_number="6217000010001234567",
    )
    db.session.add(row)
    db.session.flush()
    return row


def build_more(factory, w, *, elders: int) -> None:
    """``elders`` more elders of district A, each with a voucher in every month of 2026, a
    redemption on it and an approved assessment: rows, not new kinds of rows."""
    policy = _policy_id("home_community")
    for n in range(elders):
        resident = factory.resident(w.a, name="周五")
        db.session.add(
            Assessment(
                resident_id=resident.id,
                type="first",
                status="approved",
                applied_via="bureau",
                level="moderate",
                reviewed_at=sh(2026, 1, 5, 10),
                effective_from=date(2026, 1, 5),
            )
        )
        for month in range(1, 13):
            voucher = Voucher(
                resident_id=resident.id,
                month=date(2026, month, 1),
                kind="home_community",
                policy_id=policy,
                district_id=w.a.id,
                face_value_fen=50_000,
                balance_fen=0,
                held_fen=0,
                status="expired",
            )
            db.session.add(voucher)
            db.session.flush()
            db.session.add(
                Redemption(
                    voucher_id=voucher.id,
                    resident_id=resident.id,
                    provider_id=w.provider_a.id,
                    staff_user_id=w.staff.id,
                    scan_digest=f"report-more-{n}-{month}",
                    status="redeemed",
                    checked_in_at=sh(2026, month, 3, 9),
                    redeemed_at=sh(2026, month, 3, 9),
                    quantity=1,
                    price_fen=2000,
                    insurance_fen=0,
                    subsidy_fen=1000,
                    copay_fen=1000,
                    ratio_bp=5000,
                    payment_method="cash",
                )
            )
    db.session.flush()
