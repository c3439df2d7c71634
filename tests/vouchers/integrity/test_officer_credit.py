"""The provider's credit score counts confirmed findings (vouchers.ports.confirmed_findings):
a redemption whose flag a bureau officer rejected, or that bureau staff reversed without a
flag, each once; open and cleared flags and the provider's own reversals count nothing."""

from datetime import timedelta

import sqlalchemy as sa

from eldercare.db import db
from marketplace.credit import FRAUD_POINTS, credit_scores, fraud_flags
from tests.vouchers.settlement.conftest import spend
from vouchers.integrity import flags
from vouchers.integrity.models import RedemptionFlag
from vouchers.redemption import steps as redemption


def _flags_of(r):
    return db.session.scalars(
        sa.select(RedemptionFlag)
        .where(RedemptionFlag.redemption_id == r.id)
        .order_by(RedemptionFlag.id)
    ).all()


def test_a_redemption_with_two_rejected_flags_is_one_finding(shop, rules_on):
    station = shop.market.station
    since = shop.today - timedelta(days=1)
    rules_on(high_value={"subsidy_fen": 100}, review_sample={"share_bp": 10000})
    r = spend(shop)
    high, sample = _flags_of(r)
    assert fraud_flags(station.id, since) == 0  # open flags are not findings
    before = credit_scores([station], shop.today)[0]
    flags.reject(high, reason="未送餐", actor=shop.market.officer)
    assert [f.status for f in _flags_of(r)] == ["rejected", "rejected"]
    # Two rejected flags and the bureau's reversal they caused: one case.
    assert fraud_flags(station.id, since) == 1
    after = credit_scores([station], shop.today)[0]
    assert after.fraud_flags == 1
    assert after.unclamped == before.unclamped - FRAUD_POINTS
    # Counted from the day of the decision.
    assert fraud_flags(station.id, shop.today + timedelta(days=1)) == 0


def test_cleared_flags_and_the_providers_reversals_count_nothing(shop, rules_on):
    station = shop.market.station
    since = shop.today - timedelta(days=1)
    rules_on(high_value={"subsidy_fen": 100})
    cleared = spend(shop)
    [flag] = _flags_of(cleared)
    flags.clear(flag, reason="核实无误", actor=shop.market.officer)
    redemption.reverse(spend(shop), actor=shop.station_admin, reason="扫错")
    assert fraud_flags(station.id, since) == 0


def test_a_bureau_reversal_without_a_flag_still_counts(shop):
    station = shop.market.station
    since = shop.today - timedelta(days=1)
    redemption.reverse(spend(shop), actor=shop.approver, reason="核查无此服务")
    assert fraud_flags(station.id, since) == 1


def test_a_flag_rejected_after_the_provider_reversed_counts_once(shop, rules_on):
    """The provider reversed it itself, then the officer rejected the flag (no second
    reversal): the rejection is the confirmed finding."""
    station = shop.market.station
    since = shop.today - timedelta(days=1)
    rules_on(high_value={"subsidy_fen": 100})
    r = spend(shop)
    [flag] = _flags_of(r)
    redemption.reverse(r, actor=shop.station_admin, reason="扫错")
    assert fraud_flags(station.id, since) == 0
    flags.reject(flag, reason="确认未提供服务", actor=shop.market.officer)
    assert fraud_flags(station.id, since) == 1
