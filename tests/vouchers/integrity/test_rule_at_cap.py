"""Rule 6 (issue 15): a provider whose redemptions take the whole remaining voucher far more
often than its peers' (``at_cap``), judged on the settlement batch only: per voucher month,
district and category, its share of redemptions at the cap against the other providers'.

The redemptions are inserted in one statement each (as the settlement tests' builders do):
the rule reads price, insurance, ratio and subsidy off the rows, and putting forty vouchers
through their whole balance to make them would test the redemption, not the rule."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta

import pytest
import sqlalchemy as sa
from flask_babel import force_locale

from eldercare.db import db
from eldercare.timeutil import local_today
from marketplace import catalogue
from tests.vouchers.helpers import give_voucher
from tests.vouchers.settlement.conftest import settle_day
from vouchers.integrity import flags
from vouchers.integrity.models import RedemptionFlag
from vouchers.integrity.rules import RULES
from vouchers.integrity.rules.at_cap import at_the_cap
from vouchers.integrity.rules.base import utc_start_of
from vouchers.models import Redemption
from vouchers.pool import funding as pool
from vouchers.redemption import pricing
from vouchers.settlement.models import StatementLine
from vouchers.settlement.statements.run import run_settlement

RATIO_BP = 4000  # the home voucher's policy (migration 0004)
PRICE_FEN = 1500


def insert_redemptions(shop, provider, service, staff, *, count, capped, prefix, voucher=None):
    """``count`` redeemed lunches of the shop's voucher at ``provider``, today from 08:00
    (Shanghai), the first ``capped`` of them at the cap (a subsidy the balance cut to 2 yuan
    instead of the ratio's 6)."""
    voucher = voucher or shop.voucher
    full = pricing.split(PRICE_FEN, 0, ratio_bp=RATIO_BP, remaining_fen=10**9).subsidy_fen
    start = utc_start_of(local_today()) + timedelta(hours=8)
    rows = []
    for i in range(count):
        subsidy = 200 if i < capped else full
        rows.append(
            {
                "voucher_id": voucher.id,
                "resident_id": voucher.resident_id,
                "provider_id": provider.id,
                "staff_user_id": staff.id,
                "service_id": service.id,
                "scan_digest": f"{prefix}{provider.id}-{i}",
                "status": "redeemed",
                "checked_in_at": start + timedelta(seconds=i),
                "checked_out_at": start + timedelta(seconds=i, minutes=30),
                "quantity": 1,
                "price_fen": PRICE_FEN,
                "insurance_fen": 0,
                "subsidy_fen": subsidy,
                "copay_fen": PRICE_FEN - subsidy,
                "ratio_bp": RATIO_BP,
                "payment_method": "cash",
                "redeemed_at": start + timedelta(seconds=i, minutes=31),
            }
        )
    db.session.execute(sa.insert(Redemption), rows)
    return db.session.scalars(
        sa.select(Redemption)
        .where(Redemption.scan_digest.like(f"{prefix}{provider.id}-%"))
        .order_by(Redemption.id)
    ).all()


def settle(shop) -> dict:
    month = shop.voucher.month
    return run_settlement(month, actor=shop.market.officer, today=settle_day(month))


@contextmanager
def counting():
    engine = db.session.get_bind()
    seen: list[str] = []

    def count(conn, cursor, statement, *args):
        if not statement.startswith(("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO")):
            seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)


def batch_statements(shop, build) -> tuple[list[str], dict]:
    """The SQL statements of a settlement run over what ``build()`` made, and its report;
    all of it rolled back afterwards."""
    nested = db.session.begin_nested()
    build()
    db.session.flush()
    with counting() as seen:
        report = settle(shop)
    nested.rollback()
    return seen, report


@pytest.fixture
def rivals(shop):
    """The home-service company sells lunches too, in the same district (the station's
    rival for the elders of Heping District); its manager records them."""
    m = shop.market
    lunch = catalogue.add_service(
        m.home,
        actor=m.home_admin,
        category_code="meal_help",
        title="上门送餐（午餐）",
        description="",
        unit="meal",
        price_fen=PRICE_FEN,
        capacity_per_slot=20,
        districts=[m.heping, m.shenhe],
        delivery_place="home",
    )
    shop.home_lunch = lunch
    return shop


def station(shop, count, capped):
    m = shop.market
    return insert_redemptions(
        shop, m.station, m.meals, shop.caregiver, count=count, capped=capped, prefix="st-"
    )


def home(shop, count, capped):
    m = shop.market
    return insert_redemptions(
        shop, m.home, shop.home_lunch, m.home_admin, count=count, capped=capped, prefix="hm-"
    )


def flagged_ids() -> set[int]:
    return set(
        db.session.scalars(
            sa.select(RedemptionFlag.redemption_id).where(RedemptionFlag.rule == "at_cap")
        )
    )


def lined(ids) -> set[int]:
    return set(
        db.session.scalars(
            sa.select(StatementLine.redemption_id).where(StatementLine.redemption_id.in_(ids))
        )
    )


def test_the_cap_test_is_the_pricing_rule(shop, rivals, db_session):
    """A subsidy below the ratio's share is exactly one the balance cut."""
    cases = [(1500, 0, 10**6), (1500, 0, 599), (1500, 0, 600), (1501, 1, 1), (9999, 333, 10)]
    rows = []
    for i, (price, insurance, remaining) in enumerate(cases):
        split = pricing.split(price, insurance, ratio_bp=RATIO_BP, remaining_fen=remaining)
        cut = split.subsidy_fen < (price - insurance) * RATIO_BP // 10_000
        rows.append((i, split, cut))
    values = sa.union_all(
        *(
            sa.select(
                sa.literal(i).label("i"),
                sa.literal(s.price_fen, sa.BigInteger).label("price_fen"),
                sa.literal(s.insurance_fen, sa.BigInteger).label("insurance_fen"),
                sa.literal(s.subsidy_fen, sa.BigInteger).label("subsidy_fen"),
                sa.literal(s.ratio_bp).label("ratio_bp"),
            )
            for i, s, _ in rows
        )
    ).subquery("cases")
    judged = {i: v for i, v in db.session.execute(sa.select(values.c.i, at_the_cap(values.c)))}
    assert {i: bool(v) for i, v in judged.items()} == {i: cut for i, _, cut in rows}
    assert [cut for _, _, cut in rows] == [False, True, False, True, True]


def test_an_outlier_provider_is_flagged_with_the_comparison(shop, rivals, db_session, rules_on):
    rules_on("at_cap")  # 20 redemptions, 50 %, twice the peers
    outlier = station(shop, 20, 12)  # 60 %
    peers = home(shop, 20, 6)  # 30 %: 60 % is exactly twice
    report = settle(shop)
    assert report["flagged"] == {"at_cap": 12}
    assert flagged_ids() == {r.id for r in outlier[:12]}
    assert lined(r.id for r in outlier + peers) == {r.id for r in outlier[12:] + peers}
    flag = db.session.scalar(
        sa.select(RedemptionFlag).where(RedemptionFlag.redemption_id == outlier[0].id)
    )
    evidence = flag.evidence
    assert evidence["provider"] == {"n": 20, "at_cap": 12, "pct": 60.0}
    assert evidence["peers"] == {"providers": 1, "n": 20, "at_cap": 6, "pct": 30.0}
    assert evidence["month"] == f"{shop.voucher.month:%Y-%m}"
    assert (evidence["district_id"], evidence["category"]) == (shop.heping.id, "meal_help")
    assert evidence["redemption"]["id"] == outlier[0].id
    assert evidence["redemption"]["subsidy_fen"] == 200
    assert evidence["min_redemptions"] == 20 and evidence["times_peers"] == 2.0
    rule = RULES["at_cap"]
    assert rule.at_capture is False
    month = evidence["month"]
    name = shop.market.station.name
    elder = evidence["redemption"]["elder"]
    with force_locale("zh_Hans_CN"):
        assert rule.describe(evidence) == (
            f"{name} 在 {month} 为和平区消费券提供的助餐核销中，60.0% 用尽了消费券余额"
            "（20 次中 12 次），其他 1 家服务机构为 30.0%（20 次中 6 次）；本次："
            f"{elder}，{evidence['redemption']['at']}（#{outlier[0].id}），补贴 ¥2.00。"
        )
    with force_locale("en"):
        words = rule.describe(evidence)
        assert words.startswith(
            f"{name} took the whole remaining voucher in 60.0% of its Meal help redemptions for "
        )
        assert "(12 of 20), against 30.0% at the 1 other providers (6 of 20)" in words
        assert f"(#{outlier[0].id})" in words
    # Cleared, they are settled by the next run.
    for flag in db.session.scalars(sa.select(RedemptionFlag)):
        flags.clear(flag, reason="老人月末用完余额，属实", actor=shop.market.officer)
    assert settle(shop)["lines_added"] == 12
    assert lined(r.id for r in outlier) == {r.id for r in outlier}


def test_just_under_twice_the_peers_is_not_flagged(shop, rivals, db_session, rules_on):
    rules_on("at_cap")
    station(shop, 20, 11)  # 55 %, above 50 % but under twice the peers' 30 %
    home(shop, 20, 6)
    assert settle(shop)["flagged"] == {} and flagged_ids() == set()


def test_under_the_share_is_not_flagged_even_far_above_the_peers(
    shop, rivals, db_session, rules_on
):
    rules_on("at_cap")
    station(shop, 20, 9)  # 45 %
    home(shop, 20, 0)
    assert settle(shop)["flagged"] == {}


def test_too_few_redemptions_are_not_judged(shop, rivals, db_session, rules_on):
    rules_on("at_cap")
    station(shop, 19, 19)  # all at the cap, but only 19
    home(shop, 20, 0)
    assert settle(shop)["flagged"] == {}


def test_a_provider_without_peers_is_not_compared(shop, rivals, db_session, rules_on):
    rules_on("at_cap")
    station(shop, 30, 30)
    assert settle(shop)["flagged"] == {}


def test_the_comparison_counts_the_month_already_settled(shop, rivals, db_session, rules_on):
    """A second run's candidates are only what is left; the comparison is the whole month."""
    rules_on("at_cap")
    station(shop, 20, 8)
    home(shop, 20, 4)
    assert settle(shop)["flagged"] == {}  # 40 % at the station: under the share
    late = insert_redemptions(
        shop,
        shop.market.station,
        shop.market.meals,
        shop.caregiver,
        count=4,
        capped=4,
        prefix="late-",
    )  # now 12 of 24 = 50 %, against 20 %
    assert settle(shop)["flagged"] == {"at_cap": 4}
    assert flagged_ids() == {r.id for r in late}


def test_the_thresholds_are_the_rules_version(shop, rivals, db_session, rules_on):
    rules_on(at_cap={"min_redemptions": 5, "times_peers": 1.5, "min_share_pct": 40})
    outlier = station(shop, 5, 2)  # 40 % ≥ 1.5 × 25 %
    home(shop, 4, 1)
    assert settle(shop)["flagged"] == {"at_cap": 2}
    assert flagged_ids() == {r.id for r in outlier[:2]}


def test_the_batch_runs_the_same_statements_for_5_or_40_redemptions(
    shop, rivals, db_session, rules_on
):
    rules_on(at_cap={"min_redemptions": 5, "times_peers": 2.0, "min_share_pct": 50})

    def month(n: int) -> None:
        station(shop, n, n)
        home(shop, n, 0)

    batch_statements(shop, lambda: None)  # what a first run loads (the officer, ...)
    counts = {}
    for n in (5, 40):
        statements, report = batch_statements(shop, lambda n=n: month(n))
        assert report["flagged"] == {"at_cap": n}
        counts[n] = statements
    assert len(counts[5]) == len(counts[40]), "\n".join(
        f"{a[:150]!r}\n   {b[:150]!r}" for a, b in zip(counts[5], counts[40], strict=False)
    )


def test_providers_in_another_district_are_not_peers(shop, rivals, db_session, rules_on, factory):
    """The cell is the voucher's district: the home company's lunches for a Shenhe elder are
    no comparison for the station's for Heping vouchers."""
    rules_on("at_cap")
    station(shop, 20, 12)
    shenhe_elder = factory.resident(shop.market.shenhe, name="赵桂兰")
    pool.allocate(shop.market.shenhe, 1_000_000, memo="沈河区 10,000 元", actor=shop.approver)
    shenhe_voucher = give_voucher(shenhe_elder, shop.today)
    m = shop.market
    insert_redemptions(
        shop,
        m.home,
        shop.home_lunch,
        m.home_admin,
        count=20,
        capped=0,
        prefix="sh-",
        voucher=shenhe_voucher,
    )
    assert settle(shop)["flagged"] == {}  # 60 % against 0 %, but not the same elders
