"""Rule 7 of issue 15: one phone or one network address checking in home services for many
elders in a day (``shared_device``), and check-ins outside the provider's opening hours
(``outside_hours``); and where a check-in came from, recorded by the scan page and the
scanner API (``Redemption.check_in_ip`` / ``check_in_device``)."""

from __future__ import annotations

import json
from contextlib import contextmanager
from datetime import UTC, datetime, time, timedelta

import pytest
import sqlalchemy as sa
from flask_babel import force_locale

from eldercare.db import db
from eldercare.timeutil import SHANGHAI
from eldercare.tokens import ApiToken, issue_token
from eldercare.user_sessions import UserSession
from marketplace.providers import WEEKDAYS
from marketplace.staff import invite_staff
from tests.api.test_vouchers_api import Api, qr_token
from tests.marketplace.conftest import ELDER_HOME
from tests.vouchers.helpers import give_voucher
from tests.vouchers.settlement import conftest as settlement_fixtures
from tests.vouchers.settlement.conftest import settle_day
from tests.vouchers.test_views_redeem import CAREGIVER_PASSWORD, scanned
from vouchers.integrity import flags
from vouchers.integrity.models import RedemptionFlag
from vouchers.integrity.rules import RULES
from vouchers.integrity.rules.devices import (
    DAY_MINUTES,
    _week_of,
    masked_device,
    minutes_outside,
)
from vouchers.models import Redemption
from vouchers.redemption import steps as redemption
from vouchers.settlement.models import StatementLine
from vouchers.settlement.statements.run import run_settlement

bureau = settlement_fixtures.bureau

DEVICE = "token:4711"
ADDRESS = "203.0.113.7"


def staff_of(shop, provider, username="carer.zhou"):
    """A certified carer of ``provider``."""
    return invite_staff(
        provider,
        username=username,
        display_name="周护理员",
        password="carer-pass-1",
        certificate_number="YL-2025-0099",
        certificate_valid_until=shop.today + timedelta(days=365),
        today=shop.today,
    ).user


def at(shop, hour: int, minute: int = 0):
    """Today (Shanghai) at hour:minute, in UTC."""
    local = datetime.combine(shop.today, time(hour, minute), tzinfo=SHANGHAI)
    return local.astimezone(UTC)


def more_elders(shop, factory, n):
    """``n`` more elders at home on 三好街, each with this month's voucher."""
    return [
        give_voucher(
            factory.resident(
                shop.heping, name=f"赵{i}", latitude=ELDER_HOME[0], longitude=ELDER_HOME[1]
            ),
            shop.today,
        )
        for i in range(n)
    ]


def visit(shop, voucher, *, when, service=None, device=DEVICE, ip=None, staff=None):
    """A home visit (the station's bath by default) checked in at the elder's door, priced
    and paid in cash: captured, so the rules judging at capture have judged it."""
    shop.counter += 1
    service = service or shop.market.bath
    staff = staff or shop.caregiver
    r = redemption.check_in(
        voucher,
        scan_digest=f"devices-{shop.counter}",
        staff_user=staff,
        service_id=service.id,
        latitude=ELDER_HOME[0],
        longitude=ELDER_HOME[1],
        client_ip=ip,
        device=device,
        now=when,
    )
    price = min(3000, service.price_fen)
    redemption.set_price(r, price_fen=price, staff_user=staff, now=when)
    redemption.pay_cash(r, staff_user=staff, now=when)
    return r


def flag_of(r, rule):
    return db.session.scalar(
        sa.select(RedemptionFlag).where(
            RedemptionFlag.redemption_id == r.id, RedemptionFlag.rule == rule
        )
    )


def open_flags(rule):
    return db.session.scalars(
        sa.select(RedemptionFlag).where(RedemptionFlag.rule == rule).order_by(RedemptionFlag.id)
    ).all()


def words(rule, evidence, locale):
    with force_locale(locale):
        return RULES[rule].describe(evidence)


def visits_by_one_phone(shop, factory, n, *, service=None, device=DEVICE, ip=None, hour=9):
    """``n`` elders each visited once today from ``hour`` on, by one phone."""
    vouchers = more_elders(shop, factory, n)
    return [
        visit(shop, v, when=at(shop, hour + i // 60, i % 60), service=service, device=device, ip=ip)
        for i, v in enumerate(vouchers)
    ]


# --------------------------------------------------------------------------- where from


def test_a_check_in_through_the_scan_page_records_the_address_and_the_session(
    shop, client, login, db_session
):
    login(shop.caregiver, CAREGIVER_PASSWORD)
    page = scanned(client, shop)
    response = client.post(
        f"{page}/check-in",
        data={"service_id": shop.market.meals.id},
        environ_overrides={"REMOTE_ADDR": "198.51.100.23"},
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    r = db_session.scalar(sa.select(Redemption))
    session_id = db_session.scalar(
        sa.select(UserSession.id).where(UserSession.user_id == shop.caregiver.id)
    )
    assert (r.check_in_ip, r.check_in_device) == ("198.51.100.23", f"session:{session_id}")


def test_a_check_in_through_the_api_records_the_address_and_the_token(shop, client, db_session):
    elder = issue_token(shop.elder_user, "phone", ["read", "elders:write"])[1]
    scanner_token, scanner = issue_token(shop.caregiver, "scanner", ["providers:write"])
    db_session.commit()
    api = Api(client)
    code = qr_token(api, elder, shop.voucher.id).get_json()["token"]
    scan = api.post("/scans", scanner, json={"code": code}).get_json()
    # An IPv6 client is its /64 network, as the sign-in throttle counts it.
    response = client.post(
        f"/api/v1/scans/{scan['scan_id']}/check-in",
        headers={"Authorization": f"Bearer {scanner}"},
        json={"service_id": shop.market.meals.id},
        environ_overrides={"REMOTE_ADDR": "2001:db8:1:2:aaaa:bbbb:cccc:dddd"},
    )
    assert response.status_code == 201, response.get_json()
    r = db_session.get(Redemption, response.get_json()["id"])
    token_id = db_session.scalar(sa.select(ApiToken.id).where(ApiToken.id == scanner_token.id))
    assert (r.check_in_ip, r.check_in_device) == ("2001:db8:1:2::/64", f"token:{token_id}")
    # Never shown to the provider.
    answer = api.get(f"/redemptions/{r.id}", scanner).get_data(as_text=True)
    assert "2001:db8" not in answer and f"token:{token_id}" not in answer


# --------------------------------------------------------------------------- shared_device


def test_one_phone_checking_in_nine_elders_at_home_is_flagged(shop, factory, db_session, rules_on):
    rules_on("shared_device")  # 8 elders a day at most
    made = visits_by_one_phone(shop, factory, 9)
    assert [flag_of(r, "shared_device") for r in made[:8]] == [None] * 8  # 8: not above
    flag = flag_of(made[8], "shared_device")
    assert flag is not None and flag.status == "open"
    (group,) = flag.evidence["groups"]
    assert flag.evidence["threshold"] == 8 and flag.evidence["redemption"]["id"] == made[8].id
    assert (group["by"], group["key"], group["day"]) == ("device", "…n:4711", str(shop.today))
    assert (group["elders"], group["count"]) == (9, 9)
    assert [item["id"] for item in group["redemptions"]] == [r.id for r in made]
    assert group["redemptions"][0]["elder"] == "赵*"
    zh = words("shared_device", flag.evidence, "zh_CN")
    en = words("shared_device", flag.evidence, "en")
    assert "…n:4711" in zh and "9" in zh and str(shop.today) in zh and f"#{made[0].id}" in zh
    assert "One phone (device …n:4711) checked in home services for 9 elders" in en
    assert "(threshold 8)" in en
    assert "One phone" not in zh and "elders" not in zh


def test_eight_elders_or_a_canteen_counter_or_another_day_do_not_fire(
    shop, factory, db_session, rules_on
):
    rules_on("shared_device")
    visits_by_one_phone(shop, factory, 8)
    # The counter phone of the station's canteen: 20 elders served at the provider's premises.
    visits_by_one_phone(shop, factory, 20, service=shop.market.meals)
    # Another phone (and the first one on another day) for one more elder each.
    other = more_elders(shop, factory, 2)
    visit(shop, other[0], when=at(shop, 10), device="token:99")
    tomorrow = shop.today + timedelta(days=1)
    if tomorrow.month == shop.today.month:  # the voucher is this month's
        visit(shop, other[1], when=at(shop, 10) + timedelta(days=1))
    assert open_flags("shared_device") == []


def test_one_address_of_one_provider_for_nine_elders_is_flagged(
    shop, factory, db_session, rules_on
):
    rules_on("shared_device")
    vouchers = more_elders(shop, factory, 9)
    made = [
        visit(shop, v, when=at(shop, 9, i), device=f"session:{100 + i}", ip=ADDRESS)
        for i, v in enumerate(vouchers)
    ]
    flag = flag_of(made[-1], "shared_device")
    (group,) = flag.evidence["groups"]
    assert (group["by"], group["key"], group["elders"]) == ("ip", ADDRESS, 9)
    assert "One network address (203.0.113.7) checked in home services for 9 elders" in words(
        "shared_device", flag.evidence, "en"
    )
    assert ADDRESS in words("shared_device", flag.evidence, "zh_CN")


def test_one_address_shared_by_two_providers_is_counted_for_each_alone(
    shop, factory, db_session, rules_on
):
    """Phones on a mobile network share the carrier's public addresses: five elders of the
    station and five of the home-service company behind one address are not ten."""
    rules_on("shared_device")
    company_carer = staff_of(shop, shop.market.home, "carer.wu")
    vouchers = more_elders(shop, factory, 10)
    for i, v in enumerate(vouchers):
        ours = i % 2 == 0
        visit(
            shop,
            v,
            when=at(shop, 10, i),
            service=shop.market.bath if ours else shop.market.cleaning,
            staff=shop.caregiver if ours else company_carer,
            device=f"session:{200 + i}",
            ip=ADDRESS,
        )
    behind_one_address = sa.select(
        sa.func.count(sa.distinct(Redemption.resident_id)),
        sa.func.count(sa.distinct(Redemption.provider_id)),
    ).where(Redemption.check_in_ip == ADDRESS, Redemption.status == "redeemed")
    assert db.session.execute(behind_one_address).one() == (10, 2)
    assert open_flags("shared_device") == []


def test_the_batch_holds_out_every_visit_of_the_phone_until_cleared(
    shop, factory, bureau, db_session, rules_on
):
    made = visits_by_one_phone(shop, factory, 9)  # rules off at capture: nothing flagged
    near = visits_by_one_phone(shop, factory, 8, device="token:8")
    assert open_flags("shared_device") == []
    rules_on("shared_device")
    month = shop.voucher.month
    report = run_settlement(month, actor=bureau.officer, today=settle_day(month))
    assert report["flagged"] == {"shared_device": 9}
    assert report["lines_added"] == 8
    assert [f.redemption_id for f in open_flags("shared_device")] == [r.id for r in made]
    assert all(db.session.get(StatementLine, r.id) is None for r in made)
    assert all(db.session.get(StatementLine, r.id) is not None for r in near)
    for flag in open_flags("shared_device"):
        assert flag.evidence["groups"][0]["elders"] == 9
        flags.clear(flag, reason="护理员当天确实上门九户", actor=bureau.officer)
    again = run_settlement(month, actor=bureau.officer, today=settle_day(month))
    assert again["lines_added"] == 9 and again["flagged"] == {}


# --------------------------------------------------------------------------- outside_hours


def test_the_distance_from_opening_hours_counts_across_midnight():
    intervals = [(8 * 60, 18 * 60)]
    assert minutes_outside(intervals, 8 * 60) == 0
    assert minutes_outside(intervals, 18 * 60) == 0  # the closing minute itself
    assert minutes_outside(intervals, 18 * 60 + 31) == 31
    assert minutes_outside(intervals, 7 * 60 + 29) == 31
    assert minutes_outside([(-10, -1), (60, 120)], 5) == 6  # yesterday closing at 23:59
    assert minutes_outside([], 600) is None
    week = _week_of(json.dumps({"mon": [["20:00", "23:59"]], "wed": [["00:10", "02:00"]]}))
    assert week[1] == [
        (20 * 60 - DAY_MINUTES, 23 * 60 + 59 - DAY_MINUTES),
        (10 + DAY_MINUTES, 120 + DAY_MINUTES),
    ]
    assert minutes_outside(week[1], 20) == 21  # Tuesday 00:20, 21 minutes after Monday's 23:59
    assert minutes_outside(week[1], 23 * 60 + 50) == 20  # 20 minutes before Wednesday's 00:10
    assert week[4] == [] and _week_of(json.dumps({"mon": []})) is None and _week_of(None) is None
    assert masked_device("session:123456789") == "…456789" and masked_device("t:1") == "t:1"


@pytest.mark.parametrize(
    ("hour", "minute", "outside"),
    [(18, 29, None), (18, 31, 31), (7, 31, None), (7, 29, 31), (12, 0, None), (3, 0, 300)],
)
def test_a_check_in_after_closing_or_before_opening_by_more_than_the_grace_is_flagged(
    shop, db_session, rules_on, hour, minute, outside
):
    rules_on("outside_hours")  # the station opens 08:00–18:00 every day; 30 minutes' grace
    r = visit(shop, shop.voucher, when=at(shop, hour, minute))
    flag = flag_of(r, "outside_hours")
    if outside is None:
        assert flag is None
        return
    assert flag.evidence["minutes_outside"] == outside
    assert flag.evidence["hours"] == [["08:00", "18:00"]]
    assert flag.evidence["grace_minutes"] == 30 and flag.evidence["redemption"]["id"] == r.id
    en = words("outside_hours", flag.evidence, "en")
    assert f"{outside} minutes outside the opening hours of 南湖社区养老服务站 that day" in en
    assert "08:00–18:00" in en and "allowed: 30 minutes" in en
    zh = words("outside_hours", flag.evidence, "zh_CN")
    assert str(outside) in zh and "08:00–18:00" in zh and "minutes" not in zh


def test_a_closed_day_fires_and_no_hours_or_a_stay_never_do(shop, factory, db_session, rules_on):
    rules_on("outside_hours")
    station = shop.market.station
    # Open only three days after today's weekday: today and its neighbours are closed.
    other_day = WEEKDAYS[(shop.today.weekday() + 3) % 7]
    station.opening_hours_json = json.dumps({other_day: []})  # not one interval: no hours
    db.session.flush()
    assert flag_of(visit(shop, shop.voucher, when=at(shop, 12)), "outside_hours") is None
    station.opening_hours_json = json.dumps({other_day: [["08:00", "18:00"]]})
    db.session.flush()
    flag = flag_of(visit(shop, shop.voucher, when=at(shop, 12)), "outside_hours")
    assert flag.evidence["hours"] == [] and flag.evidence["minutes_outside"] is None
    assert "a day 南湖社区养老服务站 is closed" in words("outside_hours", flag.evidence, "en")
    zh = words("outside_hours", flag.evidence, "zh_CN")
    assert "当天南湖社区养老服务站不营业" in zh
    # A stay at the care home (sold by the month) is never judged, whatever its hours say.
    stay = visit(
        shop,
        give_voucher(factory.resident(shop.heping), shop.today, kind="institutional"),
        when=at(shop, 3),
        service=shop.market.stay,
        staff=staff_of(shop, shop.market.institution),
    )
    assert stay.status == "redeemed" and flag_of(stay, "outside_hours") is None
    station.opening_hours_json = None  # no hours published: never judged
    db.session.flush()
    assert flag_of(visit(shop, shop.voucher, when=at(shop, 3)), "outside_hours") is None


def test_the_batch_holds_out_a_check_in_after_hours_until_cleared(
    shop, bureau, db_session, rules_on
):
    late = visit(shop, shop.voucher, when=at(shop, 18, 31))
    fine = visit(shop, shop.voucher, when=at(shop, 18, 29))
    rules_on("outside_hours")
    month = shop.voucher.month
    report = run_settlement(month, actor=bureau.officer, today=settle_day(month))
    assert report["flagged"] == {"outside_hours": 1} and report["lines_added"] == 1
    assert db.session.get(StatementLine, late.id) is None
    assert db.session.get(StatementLine, fine.id) is not None
    (flag,) = open_flags("outside_hours")
    flags.clear(flag, reason="服务商当天延长营业", actor=bureau.officer)
    assert run_settlement(month, actor=bureau.officer, today=settle_day(month))["lines_added"] == 1
    assert db.session.get(StatementLine, late.id) is not None


# --------------------------------------------------------------------------- at scale


@contextmanager
def counting():
    statements: list[str] = []

    def listener(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    engine = db.session.get_bind().engine
    sa.event.listen(engine, "before_cursor_execute", listener)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", listener)


def test_the_batch_sends_as_many_statements_for_many_redemptions_as_for_few(
    shop, factory, bureau, db_session, rules_on
):
    """Both rules judge a month in a fixed number of statements: a few visits and many
    (each with a finding of each rule) cost the same."""
    from vouchers.integrity import anomalies

    def judged(n, device):
        made = visits_by_one_phone(shop, factory, n, device=device, hour=6)  # before opening
        candidates = sa.select(Redemption.id).where(Redemption.id.in_([r.id for r in made]))
        with counting() as statements:
            found = anomalies.judge(candidates, shop.today, shop.today)
        return len(statements), found

    rules_on("shared_device", "outside_hours")
    few, found_few = judged(9, "token:few")
    many, found_many = judged(30, "token:many")
    assert len(found_few) == 18 and len(found_many) == 60
    assert few == many


def test_a_district_officer_sees_only_their_districts_part_of_a_group(
    shop, factory, client, db_session, rules_on
):
    """A group rule's evidence names every redemption of the group whatever its district:
    a Heping officer saw Shenhe elders' redemptions (id, time, provider, masked name) in the
    words and in the API's evidence. A district reader now sees their district's items and
    a count of the others; a city-wide reader sees all."""
    rules_on("shared_device")
    from vouchers.pool import funding

    funding.allocate(shop.market.shenhe, 1_000_000, memo="沈河区", actor=shop.market.approver)
    shenhe = [
        give_voucher(
            factory.resident(
                shop.market.shenhe, name=f"沈{i}", latitude=ELDER_HOME[0], longitude=ELDER_HOME[1]
            ),
            shop.today,
        )
        for i in range(8)
    ]
    theirs = [visit(shop, v, when=at(shop, 9, i)) for i, v in enumerate(shenhe)]
    [heping_voucher] = more_elders(shop, factory, 1)
    mine = visit(shop, heping_voucher, when=at(shop, 10))
    flag = flag_of(mine, "shared_device")
    assert flag is not None
    assert {item["district"] for item in flag.evidence["groups"][0]["redemptions"]} == {
        shop.market.shenhe.id,
        shop.heping.id,
    }
    with force_locale("en"):
        local = flags.explain("shared_device", flag.evidence, district_id=shop.heping.id)
        city = flags.explain("shared_device", flag.evidence, district_id=None)
    assert f"#{mine.id}" in local and "And 8 redemptions in other districts." in local
    assert not any(f"#{r.id} " in local for r in theirs)
    assert all(f"#{r.id} " in city for r in theirs) and "other districts" not in city

    officer = factory.user("heping.officer", roles=["bureau_officer"], district=shop.heping)
    _token, secret = issue_token(officer, "test", ["read"])
    db_session.commit()
    body = client.get(
        "/api/v1/bureau/flags?rule=shared_device",
        headers={"Authorization": f"Bearer {secret}", "Accept-Language": "zh-CN"},
    ).get_json()
    [item] = body["items"]
    evidence = item["evidence"]
    assert [r["id"] for r in evidence["groups"][0]["redemptions"]] == [mine.id]
    assert evidence["other_districts"] == 8
    shown = json.dumps(evidence, ensure_ascii=False) + item["explanation"]
    assert not any(name in shown for name in ("沈*",)) and "沈河" not in shown
    assert not any(f"#{r.id} " in item["explanation"] for r in theirs)
    assert "另有 8 笔其他区的核销" in item["explanation"]
