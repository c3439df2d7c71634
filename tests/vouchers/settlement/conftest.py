"""Settlement tests: the voucher scheme of tests/vouchers (its fixtures apply here), bureau
staff for maker-checker, and a few redemptions to settle.

The scheme's month is the real current month (Asia/Shanghai); settlement may run for it from
``settles_from(month)`` on, so tests pass that day as ``today``."""

from __future__ import annotations

from datetime import date, timedelta
from types import SimpleNamespace

import pytest

from vouchers.redemption import steps as redemption


def month_after(month: date) -> date:
    return date(month.year + (month.month == 12), month.month % 12 + 1, 1)


def settle_day(month: date, window_days: int = 7) -> date:
    """The first day a month may be settled: its last day + the reversal window + 1."""
    return month_after(month) + timedelta(days=window_days)


@pytest.fixture
def bureau(factory):
    """City-wide bureau staff: a maker and two checkers."""
    return SimpleNamespace(
        officer=factory.user("settle.officer", roles=["bureau_officer"]),
        approver=factory.user("settle.approver", roles=["bureau_approver"]),
        second=factory.user("settle.second", roles=["bureau_approver"]),
    )


def spend(shop, price_fen: int = 1500, now=None, service=None):
    """One cash redemption of the shop's voucher (lunch, 15 yuan by default)."""
    shop.counter += 1
    r = redemption.check_in(
        shop.voucher,
        scan_digest=f"settle-{shop.counter}",
        staff_user=shop.caregiver,
        service_id=(service or shop.market.meals).id,
        now=now,
    )
    redemption.set_price(r, price_fen=price_fen, staff_user=shop.caregiver, now=now)
    redemption.pay_cash(r, staff_user=shop.caregiver, now=now)
    return r
