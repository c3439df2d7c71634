"""Take-up has one definition (vouchers.insight.take_up) for the dashboard and the forecast:
eligible elders and users are elders, not vouchers, and users are always among the eligible.
The forecast counted users over every used voucher (revoked ones too) against eligible
elders without the revoked, so take-up could pass 100%, and the dashboard (revoked
included) disagreed with it. (An elder has one voucher a month: vouchers are unique by
month and resident, so "vouchers, not elders" differs only in the wording.)"""

from __future__ import annotations

import random

from eldercare.timeutil import local_today
from tests.marketplace.conftest import market  # noqa: F401  (fixture)
from tests.vouchers.insight.test_forecast_pages import _redeem, _voucher
from vouchers.insight import figures
from vouchers.insight import forecast as fc


def _both(district, month):
    """(eligible, users) of the month as the forecast's history and the dashboard say."""
    [last] = fc.history(district, 1, today=fc.add_months(month, 1)).months
    [row] = figures.take_up(district.id, month)
    return (last.eligible, last.users), (row["holders"], row["users"])


def test_a_revoked_voucher_used_counts_once_among_users_and_eligible(
    market,  # noqa: F811
    factory,
    db_session,
):
    month = fc.add_months(local_today().replace(day=1), -1)
    heping, shop, staff = market.heping, market.station, market.station_admin
    twice, revoked_used, revoked_unused, idle = (
        factory.resident(heping, name=n) for n in ("甲老人", "乙老人", "丙老人", "丁老人")
    )
    vouchers = [
        _voucher(twice, month, kind="institutional"),
        _voucher(revoked_used, month, "revoked"),
        _voucher(revoked_unused, month, "revoked"),
        _voucher(idle, month),
    ]
    db_session.add_all(vouchers)
    db_session.flush()
    _redeem(db_session, vouchers[0], shop, staff, 5_000, 0)
    _redeem(db_session, vouchers[0], shop, staff, 3_000, 0)
    _redeem(db_session, vouchers[1], shop, staff, 5_000, 0)
    db_session.flush()
    # Eligible: 甲 (used twice: one elder), 乙 (used before the revocation), 丁; not 丙,
    # revoked unused (death, lost eligibility). Users: 甲 and 乙.
    assert _both(heping, month) == ((3, 2), (3, 2))


def test_users_never_outnumber_the_eligible(market, factory, db_session):  # noqa: F811
    """Random small months: elders with no voucher or one of any kind and status, used,
    reversed or not at all; the two pages agree and users <= eligible."""
    month = fc.add_months(local_today().replace(day=1), -1)
    heping, shop, staff = market.heping, market.station, market.station_admin
    elders = [factory.resident(heping, name=f"老人{i}") for i in range(6)]
    for seed in range(12):
        rng = random.Random(seed)
        with db_session.begin_nested() as savepoint:
            for elder in elders:
                # At most one voucher a month per elder (unique by month and resident).
                for kind in rng.sample(["home_community", "institutional"], rng.randint(0, 1)):
                    status = rng.choice(["active", "expired", "revoked"])
                    v = _voucher(elder, month, status, kind=kind)
                    db_session.add(v)
                    db_session.flush()
                    for _ in range(rng.randint(0, 2)):
                        outcome = rng.choice(["redeemed", "reversed"])
                        _redeem(db_session, v, shop, staff, 3_000, 0, status=outcome)
            db_session.flush()
            forecast_says, dashboard_says = _both(heping, month)
            assert forecast_says == dashboard_says, seed
            eligible, users = forecast_says
            assert 0 <= users <= eligible <= len(elders), seed
            savepoint.rollback()
