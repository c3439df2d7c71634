"""The forecast's arithmetic (vouchers.insight.forecast.project) and its what-ifs, by hand."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vouchers.insight import forecast as fc

START = date(2027, 1, 1)


def inputs(**changes) -> fc.Inputs:
    base = dict(
        money_left_fen=130_000,
        eligible=4,
        take_up_bp=4166,
        out_of_pocket_fen=10_200,
        ratio_bp=4000,
        cap_fen=50_000,
        start=START,
    )
    return fc.Inputs(**(base | changes))


def test_a_hand_computed_projection():
    p = fc.project(inputs())
    # 10,200 × 40% = 4,080 fen per user, under the 50,000 cap.
    assert p.subsidy_per_user_fen == 4080
    # 4 × 41.66% × 4,080 = 6,798.912 fen → 6,798.
    assert p.monthly_spend_fen == 6798
    # 130,000 // 6,798 = 19 full months (19 × 6,798 = 129,162).
    assert p.months == 19
    assert p.run_out == date(2028, 8, 1)
    assert p.lasts_until == date(2028, 7, 1)
    assert p.beyond is None
    assert len(p.rows) == 20
    first, last = p.rows[0], p.rows[-1]
    assert (first.month, first.opening_fen, first.spend_fen, first.closing_fen) == (
        START,
        130_000,
        6798,
        123_202,
    )
    assert (last.month, last.opening_fen, last.closing_fen, last.shortfall_fen) == (
        date(2028, 8, 1),
        130_000 - 19 * 6798,
        0,
        6798 - (130_000 - 19 * 6798),
    )
    assert all(r.shortfall_fen == 0 for r in p.rows[:-1])


def test_the_cap_limits_the_subsidy_per_user():
    p = fc.project(inputs(cap_fen=1000))
    assert p.subsidy_per_user_fen == 1000
    assert p.monthly_spend_fen == 4 * 4166 * 1000 // 10_000 == 1666


def test_money_for_more_than_the_horizon_lasts_beyond_its_last_month():
    p = fc.project(inputs(cap_fen=1000))  # 130,000 // 1,666 = 78 months
    assert p.months == 78
    assert p.run_out is None and p.lasts_until is None
    assert len(p.rows) == fc.HORIZON
    assert p.beyond == date(2031, 12, 1)  # 2027-01 + 59 months
    assert p.rows[-1].closing_fen == 130_000 - 60 * 1666


@pytest.mark.parametrize(
    "change", [{"take_up_bp": 0}, {"ratio_bp": 0}, {"cap_fen": 0}, {"eligible": 0}]
)
def test_no_spend_lasts_indefinitely(change):
    p = fc.project(inputs(**change))
    assert p.monthly_spend_fen == 0
    assert p.indefinite and p.months is None and p.run_out is None and p.beyond is None
    assert p.rows == []


def test_not_enough_for_one_month():
    p = fc.project(inputs(money_left_fen=5000))
    assert p.months == 0
    assert p.run_out == START and p.lasts_until is None
    assert [(r.opening_fen, r.closing_fen, r.shortfall_fen) for r in p.rows] == [(5000, 0, 1798)]


@settings(max_examples=300, deadline=None)
@given(
    money=st.integers(0, 10**12),
    eligible=st.integers(0, fc.MAX_ELIGIBLE),
    take_up=st.integers(0, 10_000),
    oop=st.integers(0, 10**7),
    ratio=st.integers(0, 10_000),
    cap=st.integers(0, fc.MAX_CAP_FEN),
)
def test_months_lasted_times_spend_fits_the_money(money, eligible, take_up, oop, ratio, cap):
    p = fc.project(fc.Inputs(money, eligible, take_up, oop, ratio, cap, START))
    spend = p.monthly_spend_fen
    assert spend >= 0
    if spend == 0:
        assert p.indefinite and p.rows == []
        return
    assert p.months * spend <= money < (p.months + 1) * spend
    # The table: each month opens with the last one's close, never below zero.
    assert p.rows[0].opening_fen == money
    for before, after in zip(p.rows, p.rows[1:], strict=False):
        assert after.opening_fen == before.closing_fen
        assert after.month == fc.add_months(before.month, 1)
    assert all(r.closing_fen >= 0 for r in p.rows)
    assert len(p.rows) == min(p.months + 1, fc.HORIZON)
    if p.months < fc.HORIZON:
        assert p.run_out == fc.add_months(START, p.months)
        assert p.rows[-1].shortfall_fen > 0
    else:
        assert p.run_out is None and p.beyond == fc.add_months(START, fc.HORIZON - 1)


# --------------------------------------------------------------------------- what-ifs


def test_what_ifs_are_read_exactly():
    given_ = fc.parse_what_ifs(
        {"take_up": "38", "ratio": "37.5%", "cap": "450.50", "eligible": "12"}
    )
    assert given_ == {"take_up_bp": 3800, "ratio_bp": 3750, "cap_fen": 45050, "eligible": 12}
    assert fc.parse_what_ifs({"take_up": " ", "cap": ""}) == {}


@pytest.mark.parametrize(
    "name, text",
    [
        ("take_up", "abc"),
        ("take_up", "101"),
        ("take_up", "-5"),
        ("take_up", "38.123"),
        ("ratio", "100.01"),
        ("cap", "-1"),
        ("cap", "100000.01"),
        ("cap", "1e5"),
        ("eligible", "3.5"),
        ("eligible", "10000001"),
        ("eligible", "9" * 30),
        ("eligible", "12\x00"),
    ],
)
def test_bad_what_ifs_name_the_field(name, text, app):
    with app.test_request_context(headers={"Accept-Language": "en"}):
        with pytest.raises(fc.BadWhatIf) as raised:
            fc.parse_what_ifs({name: text, "take_up" if name != "take_up" else "ratio": "40"})
    assert raised.value.status == 400
    assert set(raised.value.details) == {name}


def test_what_ifs_change_the_answer_as_expected():
    base = inputs()
    cheaper = fc.project(fc.with_what_ifs(base, {"take_up_bp": 3800}))
    dearer = fc.project(fc.with_what_ifs(base, {"eligible": 8}))
    assert cheaper.monthly_spend_fen == 4 * 3800 * 4080 // 10_000 == 6201
    assert cheaper.months == 130_000 // 6201 == 20
    assert dearer.monthly_spend_fen == 8 * 4166 * 4080 // 10_000 == 13_597
    assert dearer.months == 9
    higher_ratio = fc.project(fc.with_what_ifs(base, {"ratio_bp": 8000}))
    assert higher_ratio.subsidy_per_user_fen == 8160
    assert higher_ratio.months < fc.project(base).months


# --------------------------------------------------------------------------- in words


@pytest.mark.parametrize(
    "lang, until, beyond, indefinite, short",
    [
        (
            "en",
            "At 38% take-up the pool lasts until 2028-08",
            "At 41.66% take-up the pool lasts beyond 2031-12",
            "No spending is expected: the pool lasts indefinitely.",
            "At 41.66% take-up the pool cannot pay 2027-01 in full",
        ),
        (
            "zh-CN",
            "按38%的使用率，资金可支撑到2028年8月",
            "按41.66%的使用率，资金可支撑到2031年12月以后",
            "预计没有支出：资金可一直支撑。",
            "按41.66%的使用率，资金不足以全额支付2027年1月",
        ),
    ],
)
def test_the_answer_in_words(lang, until, beyond, indefinite, short, app):
    with app.test_request_context(headers={"Accept-Language": lang}):
        assert fc.answer(fc.project(inputs(take_up_bp=3800))) == until
        assert fc.answer(fc.project(inputs(cap_fen=1000))) == beyond
        assert fc.answer(fc.project(inputs(ratio_bp=0))) == indefinite
        assert fc.answer(fc.project(inputs(money_left_fen=10))) == short
        words = fc.assumptions(fc.project(inputs()))
    assert "¥40.80" in words and "¥67.98" in words and "41.66%" in words


def test_the_chart_draws_from_empty_data(app):
    from vouchers.insight.charts import line_chart, to_svg

    with app.app_context():
        svg = to_svg(line_chart("余额", [], [("余额", [])], empty_text="没有支出"), label="余额")
    assert svg.startswith("<svg") and "没有支出" in svg


@pytest.mark.parametrize(
    "name, pattern",
    [("take_up", "PERCENT_PATTERN"), ("cap", "CAP_PATTERN"), ("eligible", "ELIGIBLE_PATTERN")],
)
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_every_value_the_api_document_allows_is_accepted(name, pattern, data):
    from vouchers.insight import api_forecast

    text = data.draw(st.from_regex(getattr(api_forecast, pattern), fullmatch=True))
    assert fc.parse_what_ifs({name: text})
