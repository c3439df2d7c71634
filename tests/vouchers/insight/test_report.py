"""The report's figures against a small world built by hand (tests/vouchers/insight/
report_world.py): March 2026 and the year 2026, for the city and for each district, each
figure exactly; and the periods refused."""

from __future__ import annotations

from datetime import date

import pytest

from tests.vouchers.insight.report_world import build
from vouchers.insight.report import BadPeriod, parse_period, report_for

TODAY = date(2026, 6, 1)


@pytest.fixture
def world(app_ctx, factory):
    return build(factory)


def _served_by_district(report) -> dict:
    return {d.code: n for d, n in report.elders_by_district if n}


def test_march_for_the_city(world):
    r = report_for("2026-03", None, today=TODAY)
    assert (r.period.kind, r.period.start, r.period.end) == (
        "month",
        date(2026, 3, 1),
        date(2026, 4, 1),
    )
    assert r.district is None
    # Funds: the two March top-ups (not the one a minute into April, nor February's last
    # evening); allocations net of the amount taken back.
    assert (r.funds.scope, r.funds.central_fen, r.funds.local_fen) == ("city", 1_000_000, 500_000)
    assert r.funds.allocated_fen == 450_000
    allocations = {d.code: fen for d, fen in r.funds.allocations if fen}
    assert allocations == {"210102": 250_000, "210103": 200_000}
    # Vouchers of March: four issued (a revoked one too), 2,300 yuan.
    [march] = r.months
    assert (march.month, march.issued, march.issued_fen) == (date(2026, 3, 1), 4, 230_000)
    # Redeemed: four (not the reversed, cancelled or failed ones, nor February's).
    assert (march.redeemed, march.redeemed_fen, march.reversed) == (4, 10_500, 1)
    assert march.elders_served == 3
    assert r.totals.elders_served == 3 and r.totals.redeemed_fen == 10_500
    # Levels: the latest approved assessment in force by March's end (e1's later moderate
    # counts from May, so e1 is still severe).
    assert r.elders_by_level == [("moderate", 1), ("severe", 1), ("complete", 1)]
    assert _served_by_district(r) == {"210102": 2, "210103": 1}
    assert (r.providers_certified, r.agencies_certified) == (2, 2)
    assert r.certified_as_of == date(2026, 3, 31)
    assert (r.assessments_approved, r.assessments_by_level) == (1, [("moderate", 1)])
    assert (r.fee_refunds_paid, r.fee_refunds_paid_fen) == (2, 15_000)
    flags = {f.rule: (f.raised, f.cleared, f.rejected) for f in r.flags}
    assert flags == {"bureau": (2, 1, 0), "odd_hours": (1, 0, 1)}
    assert (r.flags_raised, r.flags_cleared, r.flags_rejected) == (3, 1, 1)
    assert str([f.label for f in r.flags if f.rule == "bureau"][0]) != "bureau"
    # Reconciled (the last run is ok) but a finding of the books is still open: red.
    [recon] = r.reconciliation
    assert (recon.status, recon.open_exceptions) == ("red", 1)
    assert recon.last_run_at == world.last_run_at


def test_march_for_each_district(world):
    a = report_for("2026-03", world.a.id, today=TODAY)
    assert a.district.code == "210102"
    assert (a.funds.scope, a.funds.central_fen, a.funds.local_fen) == ("district", None, None)
    assert a.funds.allocated_fen == 250_000
    assert [d.code for d, _ in a.funds.allocations] == ["210102"]
    [march] = a.months
    assert (march.issued, march.issued_fen, march.redeemed, march.redeemed_fen) == (
        3,
        150_000,
        3,
        6_500,
    )
    assert (march.reversed, march.elders_served) == (1, 2)
    assert a.elders_by_level == [("moderate", 1), ("severe", 1)]
    assert [(d.code, n) for d, n in a.elders_by_district] == [("210102", 2)]
    assert (a.providers_certified, a.agencies_certified) == (1, 1)
    assert (a.assessments_approved, a.fee_refunds_paid, a.fee_refunds_paid_fen) == (1, 1, 10_000)
    assert {f.rule: (f.raised, f.cleared, f.rejected) for f in a.flags} == {
        "bureau": (2, 1, 0),
        "odd_hours": (1, 0, 0),
    }
    # The district reads its own findings: none open, the run green for it.
    assert [(x.status, x.open_exceptions) for x in a.reconciliation] == [("green", 0)]

    b = report_for("2026-03", world.b.id, today=TODAY)
    [march] = b.months
    assert (march.issued, march.issued_fen, march.redeemed, march.redeemed_fen) == (
        1,
        80_000,
        1,
        4_000,
    )
    assert b.elders_by_level == [("complete", 1)]
    assert (b.providers_certified, b.agencies_certified) == (1, 0)
    assert (b.fee_refunds_paid, b.fee_refunds_paid_fen) == (1, 5_000)
    assert {f.rule: (f.raised, f.cleared, f.rejected) for f in b.flags} == {"odd_hours": (0, 0, 1)}
    # District B has no identity row in the run: green too (its findings are none).
    assert b.reconciliation[0].status == "green"


def test_the_year_has_twelve_months(world):
    r = report_for("2026", None, today=TODAY)
    assert r.period.kind == "year"
    assert [m.month for m in r.months] == [date(2026, n, 1) for n in range(1, 13)]
    by_month = {m.month.month: m for m in r.months}
    assert (by_month[2].issued, by_month[2].redeemed, by_month[2].redeemed_fen) == (1, 1, 2_500)
    assert (by_month[3].issued, by_month[3].redeemed_fen) == (4, 10_500)
    assert all(by_month[n].issued == 0 for n in (1, *range(4, 13)))
    assert (r.totals.issued, r.totals.issued_fen, r.totals.redeemed, r.totals.redeemed_fen) == (
        5,
        280_000,
        5,
        13_000,
    )
    # e1 was served in February and March: one elder, counted once in the year.
    assert r.totals.elders_served == 3
    assert (r.funds.central_fen, r.funds.local_fen) == (1_000_007, 500_009)
    # By the year's end e1's latest result is moderate.
    assert r.elders_by_level == [("moderate", 2), ("complete", 1)]
    assert r.assessments_by_level == [("moderate", 2), ("complete", 1)]
    assert (r.fee_refunds_paid, r.fee_refunds_paid_fen) == (3, 18_000)
    assert {f.rule: (f.raised, f.cleared, f.rejected) for f in r.flags} == {
        "bureau": (2, 1, 0),
        "odd_hours": (2, 0, 2),
    }
    assert len(r.reconciliation) == 12
    assert [x.status for x in r.reconciliation].count("not_run") == 11
    # Certified as of today: the year is not over.
    assert r.certified_as_of == TODAY


def test_an_elder_without_an_approved_assessment_is_counted_as_unknown(world, app_ctx):
    from eldercare.db import db
    from vouchers.models import Redemption, Voucher

    e4 = world.elders[3]
    voucher = db.session.query(Voucher).filter_by(resident_id=e4.id).one()
    voucher.status = "active"
    redemption = db.session.query(Redemption).filter_by(voucher_id=voucher.id).one()
    redemption.status = "redeemed"
    redemption.redeemed_at = redemption.checked_in_at
    db.session.flush()
    r = report_for("2026-03", None, today=TODAY)
    assert r.elders_by_level == [("moderate", 1), ("severe", 1), ("complete", 1), ("unknown", 1)]


def test_an_empty_period_is_all_zeros(app_ctx):
    r = report_for("2031-07", None, today=TODAY)
    assert r.totals.issued == r.totals.redeemed == r.totals.elders_served == 0
    assert r.elders_by_level == [] and r.flags == []
    assert [x.status for x in r.reconciliation] == ["not_run"]


@pytest.mark.parametrize(
    "text",
    ["2026-13", "2026-00", "1999", "1999-12", "2100", "26-03", "2026-3", "March", "2026-03-01",
     "２０２６", "2026\x00", "x" * 500, "-2026"],
)  # fmt: skip
def test_bad_periods_are_refused(text):
    with pytest.raises(BadPeriod) as refused:
        parse_period(text)
    assert refused.value.status == 400
    assert "YYYY-MM" in str(refused.value.details["period"])


def test_no_period_is_last_month():
    assert parse_period("", today=date(2026, 1, 15)).start == date(2025, 12, 1)
    assert parse_period(None, today=date(2026, 3, 31)).text == "2026-02"
    assert parse_period(" 2026 ").text == "2026"


def _count_statements(fn) -> int:
    import sqlalchemy as sa

    from eldercare.db import db

    statements: list[str] = []

    def listener(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    engine = db.session.get_bind()
    engine = getattr(engine, "engine", engine)
    sa.event.listen(engine, "before_cursor_execute", listener)
    try:
        fn()
    finally:
        sa.event.remove(engine, "before_cursor_execute", listener)
    return len(statements)


def test_the_statements_do_not_grow_with_the_rows(world, factory):
    """Set-based: the same statements for a year whether it holds a few rows or many more
    (no query per elder, voucher, redemption or month)."""
    from tests.vouchers.insight.report_world import build_more

    before = _count_statements(lambda: report_for("2026", None, today=TODAY))
    build_more(factory, world, elders=30)
    after = _count_statements(lambda: report_for("2026", None, today=TODAY))
    assert after == before <= 16
    assert report_for("2026", None, today=TODAY).totals.elders_served == 3 + 30


@pytest.mark.parametrize(
    ("locale", "name"), [("en", "Too many redemptions in one day"), ("zh_CN", "单日核销次数过多")]
)
def test_an_anomaly_rule_is_named_in_the_readers_language(world, locale, name):
    """The label came from flags.RULE_LABELS, which knows only "bureau"."""
    from flask_babel import force_locale

    add_flag(world, "daily_frequency")
    r = report_for("2026-03", None, today=TODAY)
    with force_locale(locale):
        labels = {f.rule: str(f.label) for f in r.flags}
    assert labels["daily_frequency"] == name


def add_flag(world, rule):
    """An open flag of ``rule`` raised in March on a March redemption."""
    from datetime import datetime

    import sqlalchemy as sa

    from eldercare.db import db
    from eldercare.timeutil import SHANGHAI
    from vouchers.integrity.models import RedemptionFlag
    from vouchers.models import Redemption, Voucher

    rid = db.session.scalar(
        sa.select(Redemption.id)
        .join(Voucher, Voucher.id == Redemption.voucher_id)
        .where(Voucher.month == date(2026, 3, 1), Redemption.status == "redeemed")
        .order_by(Redemption.id)
        .limit(1)
    )
    db.session.add(
        RedemptionFlag(
            redemption_id=rid,
            rule=rule,
            evidence={},
            status="open",
            raised_at=datetime(2026, 3, 10, 12, tzinfo=SHANGHAI),
        )
    )
    db.session.flush()
