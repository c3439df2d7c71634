"""Rule 5 (issue 15): too many redemptions for one elder in a day (``daily_frequency``), or
of one category in a day or a voucher month (``category_frequency``). Judged at capture (the
redemption that goes over the limit) and in the settlement batch (every redemption of the
elder-day still to settle); a near miss (at the limit, a reversed one, another category) is
not flagged; the flagged are left out of the statement until cleared."""

from __future__ import annotations

from datetime import UTC, datetime, time

import sqlalchemy as sa
from flask_babel import force_locale

from eldercare.db import db
from eldercare.timeutil import SHANGHAI
from tests.marketplace.conftest import ELDER_HOME
from tests.vouchers.integrity.test_rule_at_cap import (
    batch_statements,
    insert_redemptions,
    settle,
)
from tests.vouchers.settlement.conftest import spend
from vouchers.integrity import flags
from vouchers.integrity.models import RedemptionFlag
from vouchers.integrity.rules import RULES
from vouchers.models import Redemption
from vouchers.redemption import steps as redemption
from vouchers.settlement.models import StatementLine


def at(shop, hour: int, minute: int) -> datetime:
    """Today (Shanghai) at hour:minute, as UTC."""
    return datetime.combine(shop.today, time(hour, minute), tzinfo=SHANGHAI).astimezone(UTC)


def flags_of(*redemptions, rule=None) -> dict[int, RedemptionFlag]:
    query = sa.select(RedemptionFlag).where(
        RedemptionFlag.redemption_id.in_([r.id for r in redemptions])
    )
    if rule is not None:
        query = query.where(RedemptionFlag.rule == rule)
    return {f.redemption_id: f for f in db.session.scalars(query)}


def lined(*redemptions) -> set[int]:
    return set(
        db.session.scalars(
            sa.select(StatementLine.redemption_id).where(
                StatementLine.redemption_id.in_([r.id for r in redemptions])
            )
        )
    )


def bath(shop, now: datetime) -> Redemption:
    """A bathing visit at the elder's home (a home service: checked in there), 80 yuan."""
    shop.counter += 1
    r = redemption.check_in(
        shop.voucher,
        scan_digest=f"bath-{shop.counter}",
        staff_user=shop.caregiver,
        service_id=shop.market.bath.id,
        latitude=ELDER_HOME[0],
        longitude=ELDER_HOME[1],
        now=now,
    )
    redemption.set_price(r, price_fen=8000, staff_user=shop.caregiver, now=now)
    redemption.pay_cash(r, staff_user=shop.caregiver, now=now)
    return r


FOUR_TIMES = ((0, 5), (9, 10), (12, 0), (23, 55))  # 00:05 is the day before in UTC


# --------------------------------------------------------------------------- daily


def test_the_fourth_redemption_of_a_day_is_flagged_at_capture(shop, db_session, rules_on):
    rules_on("daily_frequency")
    made = [spend(shop, now=at(shop, h, m)) for h, m in FOUR_TIMES]
    found = flags_of(*made)
    assert list(found) == [made[3].id]  # the first three were captured under the limit
    flag = found[made[3].id]
    assert (flag.rule, flag.status, flag.raised_by_user_id) == ("daily_frequency", "open", None)
    evidence = flag.evidence
    assert (evidence["count"], evidence["threshold"]) == (4, 3)
    assert evidence["day"] == shop.today.isoformat()
    assert [r["id"] for r in evidence["redemptions"]] == [r.id for r in made]
    assert evidence["redemption"]["id"] == made[3].id
    elder = evidence["elder"]
    assert elder.startswith(shop.elder.name[0]) and elder != shop.elder.name  # masked
    rule = RULES["daily_frequency"]
    first = f"#{made[0].id} {shop.today.isoformat()} 00:05"
    with force_locale("zh_Hans_CN"):
        words = rule.describe(evidence)
        assert words.startswith(f"{elder} 在 {shop.today.isoformat()} 有 4 次核销（阈值 3 次）：")
        assert f"{first} 助餐" in words and str(rule.label) == "单日核销次数过多"
    with force_locale("en"):
        words = rule.describe(evidence)
        assert words.startswith(
            f"{elder} had 4 redemptions on {shop.today.isoformat()} (threshold 3): "
        )
        assert f"{first} Meal help" in words
        assert str(rule.label) == "Too many redemptions in one day"


def test_three_a_day_is_not_flagged_at_capture_nor_in_the_batch(shop, db_session, rules_on):
    rules_on("daily_frequency")
    made = [spend(shop, now=at(shop, h, m)) for h, m in FOUR_TIMES[:3]]
    report = settle(shop)
    assert flags_of(*made) == {} and report["flagged"] == {}
    assert lined(*made) == {r.id for r in made}


def test_a_reversed_redemption_does_not_count(shop, db_session, rules_on):
    rules_on("daily_frequency")
    made = [spend(shop, now=at(shop, h, m)) for h, m in FOUR_TIMES[:3]]
    redemption.reverse(made[1], actor=shop.station_admin, reason="扫错了老人")
    made.append(spend(shop, now=at(shop, *FOUR_TIMES[3])))
    assert flags_of(*made) == {}
    assert settle(shop)["flagged"] == {}


def test_the_batch_flags_every_redemption_of_the_day_and_settles_them_once_cleared(
    shop, db_session, rules_on
):
    made = [spend(shop, now=at(shop, h, m)) for h, m in FOUR_TIMES]  # the rule off at capture
    assert flags_of(*made) == {}
    rules_on(daily_frequency={"max_per_day": 3})
    report = settle(shop)
    assert report["flagged"] == {"daily_frequency": 4}
    found = flags_of(*made, rule="daily_frequency")
    assert set(found) == {r.id for r in made} and lined(*made) == set()
    for flag in found.values():
        assert flag.evidence["count"] == 4
        assert [r["id"] for r in flag.evidence["redemptions"]] == [r.id for r in made]
    for flag in found.values():
        flags.clear(flag, reason="核实：老人当天确实用餐四次", actor=shop.market.officer)
    assert settle(shop)["lines_added"] == 4
    assert lined(*made) == {r.id for r in made}


def test_a_lower_threshold_from_the_rules_version(shop, db_session, rules_on):
    rules_on(daily_frequency={"max_per_day": 1})
    first, second = (spend(shop, now=at(shop, h, m)) for h, m in FOUR_TIMES[1:3])
    assert list(flags_of(first, second)) == [second.id]
    assert flags_of(second)[second.id].evidence["threshold"] == 1


# --------------------------------------------------------------------------- category


def test_a_category_over_its_monthly_limit_is_flagged(shop, db_session, rules_on):
    rules_on(category_frequency={"limits": {"bathing": {"per": "month", "max": 2}}})
    made = [bath(shop, at(shop, h, m)) for h, m in FOUR_TIMES[:3]]
    found = flags_of(*made)
    assert list(found) == [made[2].id]
    evidence = found[made[2].id].evidence
    assert found[made[2].id].rule == "category_frequency"
    month = f"{shop.today:%Y-%m}"
    assert (evidence["count"], evidence["threshold"], evidence["per"]) == (3, 2, "month")
    assert (evidence["category"], evidence["month"]) == ("bathing", month)
    assert [r["id"] for r in evidence["redemptions"]] == [r.id for r in made]
    rule = RULES["category_frequency"]
    elder = evidence["elder"]
    with force_locale("zh_Hans_CN"):
        assert rule.describe(evidence).startswith(
            f"{elder} 在 {month} 有 3 次助浴核销（每月至多 2 次）：#{made[0].id} "
        )
    with force_locale("en"):
        assert rule.describe(evidence).startswith(
            f"{elder} had 3 Bathing help redemptions in {month} (at most 2 a month): #{made[0].id} "
        )
        assert str(rule.label) == "A service more often than its frequency limit"
    # The batch: the two before it too; lunches are not limited here.
    lunch = spend(shop, now=at(shop, 12, 30))
    assert settle(shop)["flagged"] == {"category_frequency": 2}
    assert lined(*made, lunch) == {lunch.id}


def test_a_category_at_its_monthly_limit_is_not_flagged(shop, db_session, rules_on):
    rules_on(category_frequency={"limits": {"bathing": {"per": "month", "max": 2}}})
    made = [bath(shop, at(shop, 9, m)) for m in (0, 30)]
    assert flags_of(*made) == {} and settle(shop)["flagged"] == {}


def test_a_category_over_its_daily_limit_by_the_default_limits(shop, db_session, rules_on):
    rules_on("category_frequency")  # meal help: at most 3 a day
    lunches = [spend(shop, now=at(shop, h, m)) for h, m in FOUR_TIMES[:3]]
    bathed = bath(shop, at(shop, 20, 0))
    assert flags_of(*lunches, bathed) == {}  # three meals and a bath: each under its limit
    fourth = spend(shop, now=at(shop, *FOUR_TIMES[3]))
    (flag,) = flags_of(*lunches, bathed, fourth).values()
    assert flag.redemption_id == fourth.id
    evidence = flag.evidence
    assert (evidence["count"], evidence["threshold"], evidence["per"]) == (4, 3, "day")
    assert (evidence["category"], evidence["day"]) == ("meal_help", shop.today.isoformat())
    assert [r["id"] for r in evidence["redemptions"]] == [r.id for r in [*lunches, fourth]]
    with force_locale("zh_Hans_CN"):
        assert f"有 4 次助餐核销（每天至多 3 次）：#{lunches[0].id}" in (
            RULES["category_frequency"].describe(evidence)
        )
    with force_locale("en"):
        assert "had 4 Meal help redemptions on" in RULES["category_frequency"].describe(evidence)
    assert settle(shop)["flagged"] == {"category_frequency": 3}
    assert lined(*lunches, bathed, fourth) == {bathed.id}


def test_malformed_limits_are_ignored(shop, db_session, rules_on):
    rules_on(
        category_frequency={
            "limits": {"meal_help": {"per": "week", "max": 1}, "bathing": {"per": "day"}}
        }
    )
    made = [spend(shop, now=at(shop, h, m)) for h, m in FOUR_TIMES]
    assert flags_of(*made) == {}


# --------------------------------------------------------------------------- scale


def test_the_batch_runs_the_same_statements_for_5_or_40_redemptions(shop, db_session, rules_on):
    """Both rules flag every one of an elder's n lunches of one day: the settlement run's
    SQL does not grow with n."""
    rules_on("daily_frequency", "category_frequency")

    def lunches(n: int) -> None:
        insert_redemptions(
            shop,
            shop.market.station,
            shop.market.meals,
            shop.caregiver,
            count=n,
            capped=0,
            prefix=f"lunch-{n}-",
        )

    batch_statements(shop, lambda: None)  # what a first run loads (the officer, ...)
    counts = {}
    for n in (5, 40):
        statements, report = batch_statements(shop, lambda n=n: lunches(n))
        assert report["flagged"] == {"daily_frequency": n, "category_frequency": n}
        counts[n] = len(statements)
    assert counts[5] == counts[40]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Redemption)) == 0
