"""Anomaly rules 2 and 3 (issue 15): one staff member on two home visits at once
(``staff_overlap``), checked in at places too far apart for the time between
(``impossible_travel``), and a check-in far from where the service is delivered
(``far_check_in``). Each fires, and a near miss does not; at capture and in the settlement
batch (a flagged redemption is no statement line until its flag is cleared); the words in
both languages; and the batch's statements do not grow with the month's redemptions."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import datetime, time, timedelta

import pytest
import sqlalchemy as sa
from flask_babel import force_locale

from eldercare.db import db
from eldercare.timeutil import SHANGHAI
from marketplace.geo import METRES_PER_DEGREE_LAT
from tests.marketplace.conftest import ELDER_HOME
from tests.one_language import assert_one_language
from tests.vouchers.helpers import give_voucher
from tests.vouchers.settlement.conftest import bureau, settle_day  # noqa: F401  (fixture)
from vouchers.integrity import anomalies, flags
from vouchers.integrity.models import RedemptionFlag
from vouchers.integrity.rules import RULES
from vouchers.models import Redemption
from vouchers.redemption import steps as redemption
from vouchers.settlement.models import StatementLine
from vouchers.settlement.statements import periods
from vouchers.settlement.statements.run import run_settlement

STATION = (41.7760, 123.4340)  # tests/marketplace/conftest.py


def north_of(point, metres):
    """A point ``metres`` due north (along a meridian the haversine distance is exact)."""
    return (point[0] + metres / METRES_PER_DEGREE_LAT, point[1])


@pytest.fixture
def town(shop):
    """A second elder, 2 km due north of the first, with a voucher of this month."""
    shop.far_home = north_of(ELDER_HOME, 2000)
    shop.other = shop.market.factory.resident(
        shop.heping, name="赵桂兰", latitude=shop.far_home[0], longitude=shop.far_home[1]
    )
    shop.assess(shop.other)
    shop.other_voucher = give_voucher(shop.other, shop.today)
    return shop


def at(shop, hour, minute=0, second=0):
    return datetime.combine(shop.today, time(hour, minute, second), tzinfo=SHANGHAI)


def visit(shop, start, *, end=None, voucher=None, service=None, where=None, then=None):
    """A redemption by the shop's caregiver, checked in at ``start`` (at ``where``: a
    (lat, lng) the phone reports), checked out at ``end``, then priced and paid in cash,
    which captures it (the rules in force judge it then). ``then(r)`` runs after check-in:
    it stands for a path that got past check-in's own checks."""
    shop.counter += 1
    service = service or shop.market.bath
    lat, lng = where if where else (None, None)
    r = redemption.check_in(
        voucher or shop.voucher,
        scan_digest=f"visits-{shop.counter}",
        staff_user=shop.caregiver,
        service_id=service.id,
        latitude=lat,
        longitude=lng,
        now=start,
    )
    if then is not None:
        then(r)
        db.session.flush()
    if end is not None:
        redemption.check_out(r, staff_user=shop.caregiver, now=end)
    paid_at = end or start
    redemption.set_price(r, price_fen=service.price_fen, staff_user=shop.caregiver, now=paid_at)
    redemption.pay_cash(r, staff_user=shop.caregiver, now=paid_at)
    return r


def flag_of(r, rule):
    return db.session.scalar(
        sa.select(RedemptionFlag).where(
            RedemptionFlag.redemption_id == r.id, RedemptionFlag.rule == rule
        )
    )


def words(rule, evidence, lang):
    with force_locale(lang):
        return RULES[rule].describe(evidence)


def settle(shop, bureau):  # noqa: F811
    month = shop.voucher.month
    return run_settlement(month, actor=bureau.officer, today=settle_day(month))


def is_line(r) -> bool:
    return db.session.get(StatementLine, r.id) is not None


def assert_batch_holds_then_settles(shop, bureau, flagged, kept, rule):  # noqa: F811
    """The run flags ``flagged`` (left out of the statement) and settles ``kept``; once the
    flags are cleared, the next run settles the flagged ones."""
    report = settle(shop, bureau)
    for r in flagged:
        assert flag_of(r, rule).status == "open"
        assert not is_line(r)
    for r in kept:
        assert flag_of(r, rule) is None and is_line(r)
    for r in flagged:
        flags.clear(flag_of(r, rule), reason="checked with the family", actor=bureau.officer)
    assert settle(shop, bureau)["lines_added"] == len(flagged)
    assert all(is_line(r) for r in flagged)
    return report


# --------------------------------------------------------------------------- staff_overlap


def test_overlapping_home_visits_are_flagged_at_capture(app_ctx, town, rules_on):
    rules_on("staff_overlap")
    first = visit(town, at(town, 9), end=at(town, 10), where=ELDER_HOME)
    second = visit(
        town, at(town, 9, 59), end=at(town, 10, 40), voucher=town.other_voucher, where=town.far_home
    )
    assert flag_of(first, "staff_overlap") is None  # the other visit did not exist yet
    flag = flag_of(second, "staff_overlap")
    assert flag.status == "open"
    evidence = flag.evidence
    assert evidence["min_overlap_minutes"] == 1
    assert evidence["redemption"]["id"] == second.id
    assert evidence["redemption"]["elder"] == "赵**"
    (other,) = evidence["others"]
    assert (other["id"], other["overlap_minutes"], other["elder"]) == (first.id, 1.0, "王**")
    assert (other["at"][-5:], other["out"][-5:]) == ("09:00", "10:00")

    zh = words("staff_overlap", evidence, "zh_CN")
    assert f"#{first.id}" in zh and f"#{second.id}" in zh and "1.0 分钟" in zh
    assert "王**" in zh and "赵**" in zh
    assert_one_language(zh, "zh_CN")
    en = words("staff_overlap", evidence, "en")
    assert "Staff member 李护理员 (#" in en
    assert "two home visits at once for 1.0 minutes" in en and "10:00" in en
    assert_one_language(en, "en", data=["王**", "赵**", "李护理员"])


def test_an_overlap_under_a_minute_is_not_flagged(app_ctx, town, rules_on):
    rules_on("staff_overlap")
    visit(town, at(town, 9), end=at(town, 10), where=ELDER_HOME)
    second = visit(
        town,
        at(town, 9, 59, 1),
        end=at(town, 10, 40),
        voucher=town.other_voucher,
        where=town.far_home,
    )
    assert flag_of(second, "staff_overlap") is None


def test_a_queue_at_the_providers_premises_is_not_an_overlap(app_ctx, town, rules_on):
    """The canteen's lunch: one staff member serves many elders at once, by design."""
    rules_on("staff_overlap")
    meals = town.market.meals
    visit(town, at(town, 11), end=at(town, 12), service=meals)
    second = visit(
        town, at(town, 11, 5), end=at(town, 12), service=meals, voucher=town.other_voucher
    )
    assert flag_of(second, "staff_overlap") is None


def test_the_batch_flags_both_overlapping_visits(app_ctx, town, bureau, rules_on):  # noqa: F811
    first = visit(town, at(town, 9), end=at(town, 10), where=ELDER_HOME)
    second = visit(
        town, at(town, 9, 30), end=at(town, 10, 30), voucher=town.other_voucher, where=town.far_home
    )
    later = visit(town, at(town, 10, 30), end=at(town, 11, 30), where=ELDER_HOME)  # touches only
    rules_on("staff_overlap")
    report = assert_batch_holds_then_settles(
        town, bureau, [first, second], [later], "staff_overlap"
    )
    assert report["lines_added"] == 1
    assert flag_of(first, "staff_overlap").evidence["others"][0]["overlap_minutes"] == 30.0


# --------------------------------------------------------------------------- impossible_travel


@pytest.mark.parametrize(("seconds", "flagged"), [(119, True), (121, False)])
def test_two_kilometres_in_two_minutes(app_ctx, town, rules_on, seconds, flagged):
    """2 km at 60 km/h takes 120 s: 119 s is 60.5 km/h, 121 s is 59.5 km/h."""
    rules_on("impossible_travel")
    first = visit(town, at(town, 9), where=ELDER_HOME)
    second = visit(
        town,
        at(town, 9) + timedelta(seconds=seconds),
        voucher=town.other_voucher,
        where=town.far_home,
    )
    assert flag_of(first, "impossible_travel") is None
    flag = flag_of(second, "impossible_travel")
    if not flagged:
        assert flag is None
        return
    evidence = flag.evidence
    assert evidence["distance_km"] == 2.0
    assert evidence["minutes"] == 2.0 and evidence["speed_kmh"] == 60.5
    assert evidence["max_speed_kmh"] == 60
    assert (evidence["earlier"]["id"], evidence["later"]["id"]) == (first.id, second.id)
    assert evidence["from"] == {
        "place": "home",
        "source": "check_in",
        "lat": round(ELDER_HOME[0], 3),
        "lng": round(ELDER_HOME[1], 3),
    }
    zh = words("impossible_travel", evidence, "zh_CN")
    assert "2.0 公里" in zh and "60.5 公里/小时" in zh and "老人家中" in zh
    assert evidence["staff_name"] == "李护理员" and "李护理员" in zh
    assert_one_language(zh, "zh_CN")
    en = words("impossible_travel", evidence, "en")
    assert "2.0 km away 2.0 minutes later, 60.5 km/h (limit 60 km/h)" in en
    assert "the elder's home" in en
    assert_one_language(en, "en", data=["王**", "赵**", "李护理员"])


def test_a_premises_service_without_location_is_at_the_providers_address(app_ctx, town, rules_on):
    rules_on("impossible_travel")
    lunch = visit(town, at(town, 11), service=town.market.meals)  # no phone location
    second = visit(town, at(town, 11, 1), voucher=town.other_voucher, where=town.far_home)
    evidence = flag_of(second, "impossible_travel").evidence
    assert evidence["earlier"]["id"] == lunch.id
    assert evidence["from"]["source"] == "registered"
    assert evidence["from"]["lat"] == round(STATION[0], 3)
    en = words("impossible_travel", evidence, "en")
    assert "南湖社区养老服务站 (no phone location" in en
    assert_one_language(en, "en", data=["王**", "赵**", "南湖社区养老服务站", "李护理员"])


def test_the_canteens_queue_is_one_place(app_ctx, town, rules_on):
    """Phones indoors wander: two scans 100 m apart a few seconds apart are one place."""
    rules_on("impossible_travel")
    meals = town.market.meals
    visit(town, at(town, 11), service=meals, where=STATION)
    second = visit(
        town,
        at(town, 11, 0, 5),
        service=meals,
        voucher=town.other_voucher,
        where=north_of(STATION, 100),
    )
    assert flag_of(second, "impossible_travel") is None


def test_the_batch_flags_both_ends_of_an_impossible_trip(app_ctx, town, bureau, rules_on):  # noqa: F811
    first = visit(town, at(town, 9), where=ELDER_HOME)
    second = visit(town, at(town, 9, 1), voucher=town.other_voucher, where=town.far_home)
    later = visit(town, at(town, 10), where=ELDER_HOME)  # an hour later: 2 km/h
    rules_on("impossible_travel")
    assert_batch_holds_then_settles(town, bureau, [first, second], [later], "impossible_travel")
    assert flag_of(first, "impossible_travel").evidence["later"]["id"] == second.id


# --------------------------------------------------------------------------- far_check_in


@pytest.mark.parametrize(("metres", "flagged"), [(1601, True), (1599, False), (1600, False)])
def test_a_canteen_check_in_beyond_the_rules_distance(app_ctx, town, rules_on, metres, flagged):
    rules_on("far_check_in")
    r = visit(town, at(town, 11), service=town.market.meals, where=north_of(STATION, metres))
    flag = flag_of(r, "far_check_in")
    if not flagged:
        assert flag is None
        return
    evidence = flag.evidence
    assert (evidence["distance_m"], evidence["limit_m"], evidence["limit_from"]) == (
        1601,
        1600,
        "rule",
    )
    assert evidence["place"] == "provider" and evidence["measured"] is True
    zh = words("far_check_in", evidence, "zh_CN")
    assert "1601 米" in zh and "1600 米" in zh and "南湖社区养老服务站" in zh
    assert_one_language(zh, "zh_CN")
    en = words("far_check_in", evidence, "en")
    assert "1601 m from the provider's address (the rule allows 1600 m)" in en
    assert_one_language(en, "en", data=["王**", "南湖社区养老服务站"])


@pytest.mark.parametrize(("metres", "flagged"), [(501, True), (500, False)])
def test_a_home_visit_beyond_the_policys_distance(app_ctx, town, rules_on, metres, flagged):
    """The voucher policy allows 500 m from the elder's home (check-in refuses more; here a
    recorded distance got past it), whatever the rule's own 1,600 m."""
    rules_on("far_check_in")

    def recorded(r):
        r.check_in_distance_m = metres

    r = visit(town, at(town, 9), where=ELDER_HOME, then=recorded)
    flag = flag_of(r, "far_check_in")
    if not flagged:
        assert flag is None
        return
    evidence = flag.evidence
    assert (evidence["distance_m"], evidence["limit_m"], evidence["limit_from"]) == (
        501,
        500,
        "policy",
    )
    assert evidence["place"] == "home" and evidence["measured"] is False
    zh = words("far_check_in", evidence, "zh_CN")
    assert "501 米" in zh and "消费券政策" in zh
    assert_one_language(zh, "zh_CN")
    en = words("far_check_in", evidence, "en")
    assert "501 m from the elder's home (the voucher policy allows 500 m)" in en
    assert_one_language(en, "en", data=["王**"])


def test_a_home_visit_without_a_recorded_distance_is_measured(app_ctx, town, rules_on):
    rules_on("far_check_in")

    def no_distance(r):
        r.check_in_latitude, r.check_in_longitude = north_of(ELDER_HOME, 700)
        r.check_in_distance_m = None

    r = visit(town, at(town, 9), where=ELDER_HOME, then=no_distance)
    evidence = flag_of(r, "far_check_in").evidence
    assert (evidence["distance_m"], evidence["limit_m"], evidence["measured"]) == (700, 500, True)


def test_the_batch_flags_a_far_check_in(app_ctx, town, bureau, rules_on):  # noqa: F811
    meals = town.market.meals
    far = visit(town, at(town, 11), service=meals, where=north_of(STATION, 3000))
    near = visit(town, at(town, 12), service=meals, where=north_of(STATION, 200))
    rules_on("far_check_in")
    assert_batch_holds_then_settles(town, bureau, [far], [near], "far_check_in")


# --------------------------------------------------------------------------- scale


@contextmanager
def counting():
    statements: list[str] = []

    def listener(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    engine = db.session.get_bind()
    sa.event.listen(engine, "before_cursor_execute", listener)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", listener)


def test_the_batch_sends_as_many_statements_for_30_redemptions_as_for_3(app_ctx, town, rules_on):
    """Each rule is one query and one read of the facts, whatever the month holds."""
    month = town.voucher.month
    last_day = periods.month_after(month) - timedelta(days=1)
    # The same anomalies in both batches: an overlap, an impossible trip, a far check-in.
    visit(town, at(town, 9), end=at(town, 10), where=ELDER_HOME)
    visit(town, at(town, 9, 1), end=at(town, 10), voucher=town.other_voucher, where=town.far_home)
    visit(town, at(town, 14), service=town.market.meals, where=north_of(STATION, 3000))
    rules_on("staff_overlap", "impossible_travel", "far_check_in")

    def batch():
        candidates = periods.settleable_lines(month).with_only_columns(Redemption.id)
        savepoint = db.session.begin_nested()
        with counting() as statements:
            found = anomalies.check_batch(candidates, month, last_day)
        savepoint.rollback()
        return found, len(statements)

    def lunches(count, start):
        for i in range(count):
            voucher = town.voucher if i % 2 else town.other_voucher
            visit(
                town, start + timedelta(minutes=10 * i), voucher=voucher, service=town.market.meals
            )

    lunches(3, at(town, 16))
    few_found, few = batch()
    lunches(27, at(town, 17))
    many_found, many = batch()
    assert (
        few_found == many_found == {"staff_overlap": 2, "impossible_travel": 2, "far_check_in": 1}
    )
    assert db.session.scalar(sa.select(sa.func.count(Redemption.id))) == 33
    assert few == many
