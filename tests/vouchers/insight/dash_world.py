"""A small hand-made world for the dashboard's tests: two districts, three elders, this
month and the one before, vouchers and redemptions written as rows (the figures read rows,
not the services), the pool funded and allocated through the real services, the last
month's expiry posted as ``expire_month`` posts it, and two open flags.

Every figure the tests expect is worked out by hand in ``EXPECTED`` below."""

from __future__ import annotations

import itertools
from datetime import timedelta
from types import SimpleNamespace

from eldercare.db import db
from eldercare.timeutil import local_today
from vouchers.insight import figures
from vouchers.integrity.models import RedemptionFlag
from vouchers.models import Redemption, Voucher
from vouchers.pool import funding, ledger
from vouchers.pool.policy import policy_on

_scan = itertools.count(1)


def _voucher(resident, month, face, status="active", kind="home_community"):
    policy = policy_on(kind, month)
    voucher = Voucher(
        resident_id=resident.id,
        month=month,
        kind=kind,
        policy_id=policy.id,
        district_id=resident.district_id,
        face_value_fen=face,
        balance_fen=0 if status == "expired" else face,
        held_fen=0,
        status=status,
    )
    db.session.add(voucher)
    db.session.flush()
    return voucher


def _redemption(voucher, service, staff, price, subsidy, *, status="redeemed", at=None):
    r = Redemption(
        voucher_id=voucher.id,
        resident_id=voucher.resident_id,
        provider_id=service.provider_id,
        staff_user_id=staff.id,
        service_id=service.id,
        scan_digest=f"dash-{next(_scan):06d}-{voucher.id}",
        status=status,
        quantity=1,
        price_fen=price,
        insurance_fen=0,
        subsidy_fen=subsidy,
        copay_fen=price - subsidy,
        ratio_bp=4000,
        payment_method="cash",
        redeemed_at=at,
        checked_in_at=at,
    )
    db.session.add(r)
    db.session.flush()
    return r


def _expiry(month, district, returned):
    code = ledger.district_account_code(district.code)
    ledger.post(
        "expire",
        f"expiry {month:%Y-%m} {district.code}",
        [("vouchers:outstanding", -returned), (code, returned)],
        cause=("expiry", f"{month:%Y-%m}/{district.code}/000000000000"),
    )


def build(market, factory):
    w = SimpleNamespace(market=market)
    w.month = local_today().replace(day=1)
    w.before = figures.months_ending(w.month, 2)[0]
    in_month = figures.month_start(w.month) + timedelta(hours=1)
    in_before = figures.month_start(w.before) + timedelta(days=1)
    heping, shenhe = market.heping, market.shenhe
    w.heping, w.shenhe = heping, shenhe
    approver = market.approver
    funding.top_up(10_000_000, source="central", memo="中央资金 2026-1", actor=approver)
    funding.allocate(heping, 3_000_000, memo="和平区", actor=approver)
    funding.allocate(shenhe, 2_000_000, memo="沈河区", actor=approver)

    e1 = market.elder
    e2 = factory.resident(heping, name="李淑珍")
    e3 = factory.resident(shenhe, name="赵桂兰")
    staff = market.station_admin

    # The month before: one voucher each in both districts, both expired.
    v1p = _voucher(e1, w.before, 50000, "expired")
    _voucher(e3, w.before, 50000, "expired")
    _redemption(v1p, market.meals, staff, 5000, 2000, at=in_before)
    _expiry(w.before, heping, 48000)
    _expiry(w.before, shenhe, 50000)

    # This month.
    v1 = _voucher(e1, w.month, 50000)
    v2 = _voucher(e2, w.month, 50000)
    v3 = _voucher(e3, w.month, 80000, kind="institutional")
    r1 = _redemption(v1, market.meals, staff, 15000, 6000, at=in_month)
    r2 = _redemption(v1, market.cleaning, staff, 12000, 4800, at=in_month)
    r3 = _redemption(v3, market.stay, staff, 100000, 40000, at=in_month)
    _redemption(v2, market.bath, staff, 8000, 3200, status="reversed", at=in_month)
    _redemption(v2, market.bath, staff, 8000, 3200, status="cancelled", at=None)
    db.session.add_all(
        [
            RedemptionFlag(redemption_id=r2.id, rule="bureau", evidence={"reason": "核对"}),
            RedemptionFlag(redemption_id=r3.id, rule="odd_hours", evidence={}),
            RedemptionFlag(
                redemption_id=r1.id,
                rule="odd_hours",
                status="cleared",
                decided_at=in_month,
                reason="ok",
            ),
        ]
    )
    db.session.flush()
    w.officer = market.officer
    w.district_officer = factory.user("officer.heping", roles=["bureau_officer"], district=heping)
    return w


def expected(w) -> dict:
    """The figures, by hand, for the city (None) and for Heping."""
    m, b = f"{w.month:%Y-%m}", f"{w.before:%Y-%m}"
    return {
        None: {
            "monthly": {
                b: dict(issued=2, issued_fen=100000, used=1, used_fen=2000, expired=2,
                        returned_fen=98000),
                m: dict(issued=3, issued_fen=180000, used=3, used_fen=50800, expired=0,
                        returned_fen=0),
            },
            "burn_down": {
                b: dict(funded_fen=0, spent_fen=2000, left_fen=-2000),
                m: dict(funded_fen=10_000_000, spent_fen=52800, left_fen=10_000_000 - 52800),
            },
            "districts": {
                "210102": dict(used=2, subsidy_fen=10800, price_fen=27000),
                "210103": dict(used=1, subsidy_fen=40000, price_fen=100000),
            },
            "categories": {
                "long_term_stay": dict(used=1, subsidy_fen=40000),
                "meal_help": dict(used=1, subsidy_fen=6000),
                "cleaning": dict(used=1, subsidy_fen=4800),
            },
            "take_up": {
                "210102": dict(holders=2, users=1, share_bp=5000),
                "210103": dict(holders=1, users=1, share_bp=10000),
            },
            "open_flags": {
                "bureau": dict(open=1, subsidy_fen=4800),
                "odd_hours": dict(open=1, subsidy_fen=40000),
                "all": dict(open=2, subsidy_fen=44800),  # every rule, each redemption once
            },
        },
        "heping": {
            "monthly": {
                b: dict(issued=1, issued_fen=50000, used=1, used_fen=2000, expired=1,
                        returned_fen=48000),
                m: dict(issued=2, issued_fen=100000, used=2, used_fen=10800, expired=0,
                        returned_fen=0),
            },
            "burn_down": {
                b: dict(funded_fen=0, spent_fen=2000, left_fen=-2000),
                m: dict(funded_fen=3_000_000, spent_fen=12800, left_fen=3_000_000 - 12800),
            },
            "districts": {"210102": dict(used=2, subsidy_fen=10800, price_fen=27000)},
            "categories": {
                "meal_help": dict(used=1, subsidy_fen=6000),
                "cleaning": dict(used=1, subsidy_fen=4800),
            },
            "take_up": {"210102": dict(holders=2, users=1, share_bp=5000)},
            "open_flags": {
                "bureau": dict(open=1, subsidy_fen=4800),
                "all": dict(open=1, subsidy_fen=4800),
            },
        },
    }  # fmt: skip


KEYS = {
    "monthly": "month",
    "burn_down": "month",
    "districts": "district",
    "categories": "category",
    "take_up": "district",
    "open_flags": "rule",
}


def keyed(table: str, rows: list[dict], wanted: dict) -> dict:
    """The rows of ``table`` whose key is among ``wanted``'s, with ``wanted``'s fields only."""
    key = KEYS[table]
    return {
        row[key]: {f: row[f] for f in next(iter(wanted.values()))}
        for row in rows
        if row[key] in wanted
    }
