"""A voucher scheme to test against: the marketplace around 三好街 (tests/marketplace), an
assessment agency (tests/assessment), the elder assessed as moderately impaired and approved,
the pool funded and Heping District given an allocation, all through the real services."""

from types import SimpleNamespace

import pytest

from tests.assessment.conftest import take_through, world  # noqa: F401  (fixtures)
from tests.marketplace.conftest import ELDER_HOME, market  # noqa: F401  (fixtures)
from vouchers import pool

TOTAL_FOR_LEVEL = {"moderate": 50, "severe": 40, "complete": 20, "mild": 70}


@pytest.fixture
def scheme(market, world, take_through):  # noqa: F811
    """``scheme.market`` and ``scheme.world`` are the two worlds; the rest are shortcuts."""
    s = SimpleNamespace(market=market, world=world, today=world.today)
    s.heping = market.heping
    s.approver = market.approver
    s.elder = market.elder
    s.elder_user = market.elder_user
    s.son = market.son

    def assess(resident, level="moderate", **kwargs):
        return take_through(resident, total=TOTAL_FOR_LEVEL[level], **kwargs)

    s.assess = assess
    s.assessment = assess(market.elder)
    pool.top_up(100_000_000, source="central", memo="中央资金", actor=s.approver)
    pool.allocate(s.heping, 10_000_000, memo="和平区 100,000 元", actor=s.approver)
    return s
