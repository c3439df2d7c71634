"""The forecast on a synthetic history (vouchers.insight.forecast.history and friends), its
page, its downloads and GET /api/v1/bureau/forecast: numbers by hand, district scoping, bad
what-ifs and both languages."""

from __future__ import annotations

import csv
import io
import re
import uuid
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from eldercare.audit import AuditLog
from eldercare.timeutil import local_today
from eldercare.tokens import issue_token
from tests.marketplace.conftest import market  # noqa: F401  (fixture)
from tests.one_language import assert_one_language
from tests.vouchers.helpers import give_voucher
from vouchers.insight import forecast as fc
from vouchers.models import Redemption, Shortfall, Voucher
from vouchers.pool import funding, ledger
from vouchers.pool.policy import policy_on

EN = {"Accept-Language": "en"}
ZH = {"Accept-Language": "zh-CN"}
TOP_UP = 5_000_000
HEPING_MONEY = 130_000  # allocated; the current month's voucher stays inside it


def _voucher(resident, month, status="expired", kind="home_community"):
    policy = policy_on(kind, month)
    voucher = Voucher(
        resident_id=resident.id,
        month=month,
        kind=kind,
        policy_id=policy.id,
        district_id=resident.district_id,
        face_value_fen=policy.monthly_cap_fen,
        balance_fen=0,
        held_fen=0,
        status=status,
    )
    return voucher


def _redeem(session, voucher, provider, staff, price, insurance, status="redeemed"):
    subsidy = min((price - insurance) * 4000 // 10_000, voucher.face_value_fen)
    session.add(
        Redemption(
            voucher_id=voucher.id,
            resident_id=voucher.resident_id,
            provider_id=provider.id,
            staff_user_id=staff.id,
            scan_digest=uuid.uuid4().hex,
            status=status,
            price_fen=price,
            insurance_fen=insurance,
            subsidy_fen=subsidy,
            copay_fen=price - insurance - subsidy,
            ratio_bp=4000,
        )
    )


@pytest.fixture
def city(market, factory, db_session):  # noqa: F811
    """Three complete months in Heping (numbers in the tests below) and one in Shenhe."""
    w = SimpleNamespace(market=market, heping=market.heping, shenhe=market.shenhe)
    current = local_today().replace(day=1)
    w.months = [fc.add_months(current, -i) for i in (3, 2, 1)]
    w.start = fc.add_months(current, 1)
    m1, m2, m3 = w.months
    a, b, c, d = (
        factory.resident(w.heping, name=n) for n in ("甲老人", "乙老人", "丙老人", "丁老人")
    )
    e = factory.resident(w.shenhe, name="戊老人")
    shop, staff = market.station, market.station_admin
    v = {}
    for month in w.months:
        for r in (a, b, c, d):
            v[month, r.id] = _voucher(r, month, "revoked" if (month, r) == (m2, d) else "expired")
    v[m3, e.id] = _voucher(e, m3)
    db_session.add_all(v.values())
    db_session.flush()
    # m1: A spends 100 − 20 insurance; B 50 and 30 − 10; C's only service was reversed.
    _redeem(db_session, v[m1, a.id], shop, staff, 10_000, 2_000)
    _redeem(db_session, v[m1, b.id], shop, staff, 5_000, 0)
    _redeem(db_session, v[m1, b.id], shop, staff, 3_000, 1_000)
    _redeem(db_session, v[m1, c.id], shop, staff, 9_000, 0, status="reversed")
    # m2: A spends 200 (D's voucher was revoked: no longer eligible).
    _redeem(db_session, v[m2, a.id], shop, staff, 20_000, 0)
    # m3: C 125 − 25, D 60.
    _redeem(db_session, v[m3, c.id], shop, staff, 12_500, 2_500)
    _redeem(db_session, v[m3, d.id], shop, staff, 6_000, 0)
    # Shenhe: E spends 1,000 in m3 (not Heping's).
    _redeem(db_session, v[m3, e.id], shop, staff, 100_000, 0)
    # m1: one elder left out for lack of money, one left out and issued later.
    left_out = [factory.resident(w.heping, name=n) for n in ("己老人", "庚老人")]
    for resident, resolved in zip(left_out, (None, local_today()), strict=True):
        db_session.add(
            Shortfall(
                month=m1,
                resident_id=resident.id,
                district_id=w.heping.id,
                level="moderate",
                needed_fen=50_000,
                resolved_at=None if resolved is None else sa.func.now(),
            )
        )
    funding.top_up(TOP_UP, source="central", memo="中央资金", actor=market.approver)
    funding.allocate(w.heping, HEPING_MONEY, memo="和平区", actor=market.approver)
    funding.allocate(w.shenhe, 200_000, memo="沈河区", actor=market.approver)
    give_voucher(a, current)  # this month is issued: the forecast starts next month
    w.heping_officer = factory.user("officer.heping", roles=["bureau_officer"], district=w.heping)
    w.shenhe_officer = factory.user("officer.shenhe", roles=["bureau_officer"], district=w.shenhe)
    db_session.flush()
    return w


# Heping by hand: eligible 4 + 1 left out, 3 (D revoked), 4; users 2, 1, 2;
# out-of-pocket 80 + 50 + 20, 200, 100 + 60 yuan.
# Take-up 5 / 12 = 41.66%; out-of-pocket per user 510 / 5 = 102.00 yuan; subsidy per user
# min(500, 102 × 40%) = 40.80; spend 4 × 41.66% × 40.80 = 67.98 a month;
# 1,300 yuan // 67.98 = 19 months.
SPEND = 6798


def test_the_forecast_of_a_district_matches_the_hand_computation(city):
    result = fc.forecast(city.heping)
    months = result.history.months
    assert [(m.eligible, m.users, m.out_of_pocket_fen) for m in months] == [
        (5, 2, 15_000),
        (3, 1, 20_000),
        (4, 2, 16_000),
    ]
    assert [m.subsidy_fen for m in months] == [6000, 8000, 6400]
    assert result.history.take_up_bp == 4166
    assert result.history.out_of_pocket_fen == 10_200
    assert result.history.subsidy_per_user_fen == 20_400 // 5
    assert (result.policy.cap_fen, result.policy.ratio_bp) == (50_000, 4000)
    assert result.current == fc.Inputs(HEPING_MONEY, 4, 4166, 10_200, 4000, 50_000, city.start)
    p = result.projection
    assert (p.subsidy_per_user_fen, p.monthly_spend_fen, p.months) == (4080, SPEND, 19)
    assert p.run_out == fc.add_months(city.start, 19)
    assert p.lasts_until == fc.add_months(city.start, 18)


def test_the_city_counts_every_district_and_the_pool(city):
    result = fc.forecast(None)
    # The pool's money all comes from the top-up; the current voucher is still outstanding.
    assert result.current.money_left_fen == TOP_UP
    assert [m.eligible for m in result.history.months] == [5, 3, 5]
    assert [m.users for m in result.history.months] == [2, 1, 3]
    # Shenhe alone: its allocation, its one month.
    shenhe = fc.forecast(city.shenhe)
    assert shenhe.current.money_left_fen == 200_000
    assert shenhe.current.start == local_today().replace(day=1)  # nothing issued there yet
    assert [m.users for m in shenhe.history.months] == [0, 0, 1]


def test_the_policy_is_weighted_by_the_kinds_users(city, db_session):
    v = db_session.scalar(
        sa.select(Voucher).where(
            Voucher.district_id == city.shenhe.id, Voucher.month == city.months[2]
        )
    )
    v.kind, v.policy_id = "institutional", policy_on("institutional", v.month).id
    db_session.flush()
    city_policy = fc.forecast(None).policy
    # 5 home & community users at 500 yuan, 1 institutional at 800.
    assert city_policy.cap_fen == (5 * 50_000 + 80_000) // 6
    assert city_policy.ratio_bp == 4000


def _en(client, url, **kw):
    return client.get(url, headers=EN, **kw)


def test_the_page_answers_in_words_with_the_table_and_the_chart(city, client, login):
    login(city.heping_officer)
    until = fc.add_months(city.start, 18)
    page = _en(client, "/vouchers/bureau/forecast")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert f"At 41.66% take-up the pool lasts until {until:%Y-%m}" in html
    assert html.count("<tr>") - 2 == 20 + 3  # 20 projected months, 3 history months
    assert "<svg" in html and 'aria-label="Projected balance (yuan)"' in html
    assert re.search(r'name="take_up"\s+value="41.66"', html)
    assert re.search(r'name="cap"\s+value="500"', html)
    zh = client.get("/vouchers/bureau/forecast", headers=ZH).get_data(as_text=True)
    assert f"按41.66%的使用率，资金可支撑到{until.year}年{until.month}月" in zh


def test_what_ifs_on_the_page_and_zero_spend(city, client, login):
    login(city.market.officer)
    url = f"/vouchers/bureau/forecast?district={city.heping.id}"
    html = _en(client, url + "&take_up=38").get_data(as_text=True)
    # 4 × 38% × 40.80 = 62.01 a month; 1,300 // 62.01 = 20 months.
    assert f"At 38% take-up the pool lasts until {fc.add_months(city.start, 19):%Y-%m}" in html
    html = _en(client, url + "&cap=10").get_data(as_text=True)
    beyond = fc.add_months(city.start, fc.HORIZON - 1)
    assert f"At 41.66% take-up the pool lasts beyond {beyond:%Y-%m}" in html
    html = _en(client, url + "&eligible=0").get_data(as_text=True)
    assert "No spending is expected: the pool lasts indefinitely." in html
    assert "No spend: the balance stays as it is." in html  # the chart, from no data
    assert 'id="projection"' not in html


def _state(db_session):
    return (
        ledger.balances(),
        db_session.scalar(sa.select(sa.func.count()).select_from(AuditLog)),
        db_session.scalar(sa.select(sa.func.count()).select_from(Voucher)),
    )


@pytest.mark.parametrize(
    "args, field, en, zh",
    [
        ("take_up=abc", "take_up", "Enter the take-up rate as a percent", "请按百分比填写使用率"),
        ("ratio=150", "ratio", "Enter the ratio as a percent", "请按百分比填写补贴比例"),
        ("cap=-5", "cap", "Enter the cap in yuan", "请填写月度上限"),
        ("eligible=1.5", "eligible", "Enter the number of eligible elders", "符合条件的老人数"),
    ],
)
def test_bad_what_ifs_are_a_400_with_the_message_and_change_nothing(
    args, field, en, zh, city, client, login, db_session
):
    login(city.heping_officer)
    before = _state(db_session)
    page = _en(client, f"/vouchers/bureau/forecast?{args}")
    assert page.status_code == 400
    html = page.get_data(as_text=True)
    assert en in html and f'id="{field}-error"' in html
    # The forecast at the current values is still shown.
    assert "At 41.66% take-up" in html
    assert zh in client.get(f"/vouchers/bureau/forecast?{args}", headers=ZH).get_data(as_text=True)
    download = _en(client, f"/vouchers/bureau/forecast/projection.csv?{args}")
    assert download.status_code == 400 and en in download.get_data(as_text=True)
    assert _state(db_session) == before


def test_downloads_as_csv_and_xlsx(city, client, login):
    from openpyxl import load_workbook

    login(city.heping_officer)
    body = _en(client, "/vouchers/bureau/forecast/projection.csv").get_data(as_text=True)
    rows = list(csv.reader(io.StringIO(body.lstrip("\ufeff"))))
    assert rows[0][0] == "Month" and len(rows) == 1 + 20
    assert rows[1] == [
        f"{city.start:%Y-%m}",
        "1300.0",
        "67.98",
        str((HEPING_MONEY - SPEND) / 100),
        "0.0",
    ]
    assert rows[-1][4] == str((SPEND - (HEPING_MONEY - 19 * SPEND)) / 100)
    what_if = _en(client, "/vouchers/bureau/forecast/projection.csv?take_up=38").get_data(
        as_text=True
    )
    assert len(list(csv.reader(io.StringIO(what_if)))) == 1 + 21
    response = _en(client, "/vouchers/bureau/forecast/history.xlsx")
    assert response.status_code == 200
    sheet = load_workbook(io.BytesIO(response.get_data())).active
    values = list(sheet.values)
    assert values[0][:3] == ("Month", "Eligible elders", "Elders who used their voucher")
    assert [row[1:3] for row in values[1:]] == [(5, 2), (3, 1), (4, 2)]


def test_district_scoping_of_page_download_and_api(city, client, login, app):
    login(city.shenhe_officer)
    own = _en(client, "/vouchers/bureau/forecast").get_data(as_text=True)
    assert "No spending is expected" not in own and "lasts until" in own  # Shenhe's figures
    assert 'name="district"' not in own  # no district picker for a district's officer
    for url in (
        f"/vouchers/bureau/forecast?district={city.heping.id}",
        f"/vouchers/bureau/forecast/projection.csv?district={city.heping.id}",
        f"/vouchers/bureau/forecast/history.xlsx?district={city.heping.id}",
        "/vouchers/bureau/forecast?district=999999",
        "/vouchers/bureau/forecast?district=abc",
    ):
        assert _en(client, url).status_code == 404, url
    assert _en(client, f"/vouchers/bureau/forecast?district={city.shenhe.id}").status_code == 200

    _token, secret = issue_token(city.shenhe_officer, "forecast", ["read"])
    bearer = {"Authorization": f"Bearer {secret}", **EN}
    mine = client.get("/api/v1/bureau/forecast", headers=bearer)
    assert mine.status_code == 200 and mine.get_json()["district"] == "210103"
    assert mine.get_json()["current"]["money_left_fen"] == 200_000
    other = client.get("/api/v1/bureau/forecast?district=210102", headers=bearer)
    assert other.status_code == 404


def test_the_api_with_what_ifs(city, client):
    _token, secret = issue_token(city.market.approver, "forecast", ["vouchers:read"])
    bearer = {"Authorization": f"Bearer {secret}", **EN}
    body = client.get("/api/v1/bureau/forecast?district=210102", headers=bearer).get_json()
    assert body["current"] == {
        "money_left_fen": HEPING_MONEY,
        "eligible": 4,
        "take_up_bp": 4166,
        "out_of_pocket_fen": 10_200,
        "ratio_bp": 4000,
        "cap_fen": 50_000,
        "start_month": f"{city.start:%Y-%m}",
    }
    assert (body["monthly_spend_fen"], body["months"]) == (SPEND, 19)
    assert body["run_out_month"] == f"{fc.add_months(city.start, 19):%Y-%m}"
    assert len(body["table"]) == 20 and len(body["history"]) == 3
    what_if = client.get(
        "/api/v1/bureau/forecast?district=210102&take_up=38&ratio=50&cap=300&eligible=10",
        headers=bearer,
    ).get_json()
    assert what_if["current"] == body["current"]
    assert what_if["inputs"]["take_up_bp"] == 3800 and what_if["inputs"]["cap_fen"] == 30_000
    # min(300, 102 × 50%) = 51 yuan; 10 × 38% × 51 = 193.80 a month; 1,300 // 193.80 = 6.
    assert (what_if["subsidy_per_user_fen"], what_if["monthly_spend_fen"]) == (5100, 19_380)
    assert what_if["months"] == 6
    assert what_if["answer"].startswith("At 38% take-up the pool lasts until")
    bad = client.get("/api/v1/bureau/forecast?take_up=200&cap=x", headers=bearer)
    assert bad.status_code == 400
    error = bad.get_json()["error"]
    assert set(error["details"]) == {"take_up", "cap"}
    assert "take-up rate" in error["details"]["take_up"]
    zh = client.get("/api/v1/bureau/forecast?take_up=200", headers={**bearer, **ZH}).get_json()
    assert "使用率" in zh["error"]["details"]["take_up"]


@pytest.mark.parametrize("lang, headers", [("zh_CN", ZH), ("en", EN)])
def test_the_page_speaks_one_language(lang, headers, city, client, login):
    login(city.market.officer)
    for url in (
        "/vouchers/bureau/forecast",
        f"/vouchers/bureau/forecast?district={city.heping.id}&take_up=abc",
        f"/vouchers/bureau/forecast?district={city.heping.id}&ratio=0",
    ):
        html = client.get(url, headers=headers).get_data(as_text=True)
        assert_one_language(
            html, lang, data=["和平区", "沈河区", "abc", city.market.officer.username]
        )
