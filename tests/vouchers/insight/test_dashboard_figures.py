"""The dashboard's figures (vouchers/insight/figures.py) against a small world worked out by
hand (tests/vouchers/insight/dash_world.py): counts and fen exact, for the city and for one
district, and every figure one GROUP BY query, however many rows."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from eldercare.db import db
from tests.vouchers.insight import dash_world
from vouchers.insight import dashboard, figures


@pytest.fixture
def dash(market, factory):
    return dash_world.build(market, factory)


@pytest.mark.parametrize("scope", [None, "heping"])
def test_every_table_matches_the_hand_made_world(dash, scope):
    district_id = dash.heping.id if scope else None
    want = dash_world.expected(dash)[scope]
    for name, wanted in want.items():
        rows = dashboard.rows_of(dashboard.TABLES[name], district_id, dash.month, "zh_CN")
        assert dash_world.keyed(name, rows, wanted) == wanted, name
        # Nothing else has figures: every other row is zero.
        key = dash_world.KEYS[name]
        others = [r for r in rows if r[key] not in wanted]
        amounts = [v for r in others for k, v in r.items() if k.endswith(("_fen", "used"))]
        assert not any(amounts), (name, others)


def test_the_monthly_tables_cover_twelve_months_up_to_the_chosen_one(dash):
    rows = figures.by_month(None, figures.months_ending(dash.month))
    assert len(rows) == 12 and rows[-1]["month"] == f"{dash.month:%Y-%m}"
    assert [r["month"] for r in rows] == sorted(r["month"] for r in rows)
    burn = figures.burn_down(None, figures.months_ending(dash.month))
    assert len(burn) == 12 and burn[-1]["funded_fen"] == 10_000_000
    # Running totals never fall: spent to date only grows.
    spent = [r["spent_fen"] for r in burn]
    assert spent == sorted(spent)


def test_top_providers_fold_the_rest_into_others(dash):
    rows = figures.by_provider(None, dash.month, top=2)
    market = dash.market
    assert [(r["provider_id"], r["used"], r["subsidy_fen"], r["providers"]) for r in rows] == [
        (market.institution.id, 1, 40000, 1),
        (market.station.id, 1, 6000, 1),
        (None, 1, 4800, 1),
    ]
    assert rows[0]["provider"] == market.institution.name
    assert rows[-1]["provider"] == figures.OTHERS
    shown = dashboard.rows_of(dashboard.TABLES["providers"], None, dash.month, "zh_CN")
    assert sum(r["subsidy_fen"] for r in shown) == 50800  # every provider, in some row
    heping = figures.by_provider(dash.heping.id, dash.month)
    assert {r["provider_id"] for r in heping} == {market.station.id, market.home.id}


def test_a_flag_rule_without_a_label_shows_its_code(dash):
    rows = {r["rule"]: r["label"] for r in figures.open_flags(None, dash.month)}
    assert rows["odd_hours"] == "odd_hours"
    assert rows["bureau"] != "bureau"  # flags.RULE_LABELS has it


def test_an_empty_month_has_rows_of_zeros(dash):
    month = figures.months_ending(dash.before, 3)[0]  # nothing happened then
    assert all(r["used"] == 0 for r in figures.by_district(None, month))
    assert figures.by_category(None, month) == []
    assert figures.by_provider(None, month) == []
    assert figures.open_flags(None, month) == []
    assert all(r["holders"] == 0 and r["share_bp"] == 0 for r in figures.take_up(None, month))


def test_each_figure_is_one_query(dash, app):
    """Set-based: a figure's query count does not depend on how many rows there are."""
    statements = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    engine = db.session.get_bind()
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        for name, table in dashboard.TABLES.items():
            statements.clear()
            table.rows(None, dash.month, "zh_CN")
            # by month: vouchers, redemptions, expiry entries; burn-down: funding, spending;
            # providers: the ranked totals and their names; the rest: one.
            limit = {"monthly": 3, "burn_down": 2, "providers": 2}.get(name, 1)
            assert len(statements) <= limit, (name, statements)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)


def _flag_another_rule(rule):
    """An open flag of ``rule`` on the redemption the bureau holds (the world's only one)."""
    from vouchers.integrity.models import RedemptionFlag

    held = db.session.scalar(sa.select(RedemptionFlag).where(RedemptionFlag.rule == "bureau"))
    db.session.add(RedemptionFlag(redemption_id=held.redemption_id, rule=rule, evidence={}))
    db.session.flush()
    return held


@pytest.mark.parametrize(
    ("locale", "name"), [("en", "Too many redemptions in one day"), ("zh_CN", "单日核销次数过多")]
)
def test_an_anomaly_rule_shows_its_name(dash, locale, name):
    """The label came from flags.RULE_LABELS, which knows only "bureau": an anomaly rule
    showed as its code."""
    from flask_babel import force_locale

    _flag_another_rule("daily_frequency")
    with force_locale(locale):
        rows = {r["rule"]: r["label"] for r in figures.open_flags(None, dash.month)}
    assert rows["daily_frequency"] == name


def _held_rows(dash):
    return {r["rule"]: (r["open"], r["subsidy_fen"]) for r in figures.open_flags(None, dash.month)}


def test_a_reversed_redemption_holds_nothing(dash):
    """Its flag stays open (an officer should look), but no subsidy is held: the reversal
    returned it. The figure summed every open flag's subsidy whatever the status."""
    from vouchers.models import Redemption

    held = _flag_another_rule("daily_frequency")
    db.session.get(Redemption, held.redemption_id).status = "reversed"
    db.session.flush()
    rows = _held_rows(dash)
    assert rows["bureau"] == (1, 0) and rows["daily_frequency"] == (1, 0)
    assert rows[figures.ALL_RULES] == (3, 40000)  # the stay's flag still holds its 400 yuan


def test_a_redemption_settled_before_its_flag_holds_nothing(dash):
    """Flagged after its statement was approved: it was paid already (rejecting claws it
    back), so nothing is held out of settlement."""
    from vouchers.models import Redemption, Voucher
    from vouchers.settlement.models import Statement, StatementLine

    held = _flag_another_rule("daily_frequency")
    r = db.session.get(Redemption, held.redemption_id)
    statement = Statement(
        provider_id=r.provider_id,
        month=dash.month,
        status="prepared",
        line_count=1,
        subsidy_fen=r.subsidy_fen,
        payee_account_name="x",
        payee_bank_name="x",
        payee_account_number="x",
    )
    db.session.add(statement)
    db.session.flush()
    db.session.add(
        StatementLine(
            redemption_id=r.id,
            statement_id=statement.id,
            district_id=db.session.get(Voucher, r.voucher_id).district_id,
            price_fen=r.price_fen,
            insurance_fen=r.insurance_fen,
            subsidy_fen=r.subsidy_fen,
            copay_fen=r.copay_fen,
            payment_method=r.payment_method,
            card_copay_fen=0,
        )
    )
    db.session.flush()
    rows = _held_rows(dash)
    assert rows["bureau"] == (1, 4800)  # in a statement not yet approved: held out of it
    statement.approved_by_user_id = dash.officer.id
    statement.status = "approved"
    db.session.flush()
    rows = _held_rows(dash)
    assert rows["bureau"] == (1, 0) and rows["daily_frequency"] == (1, 0)


def test_a_redemption_flagged_by_two_rules_is_held_once_in_the_total(dash):
    _flag_another_rule("daily_frequency")
    rows = _held_rows(dash)
    assert rows["bureau"] == (1, 4800) and rows["daily_frequency"] == (1, 4800)
    assert rows[figures.ALL_RULES] == (3, 4800 + 40000)
    heping = {r["rule"]: r["subsidy_fen"] for r in figures.open_flags(dash.heping.id, dash.month)}
    assert heping == {"bureau": 4800, "daily_frequency": 4800, figures.ALL_RULES: 4800}


def test_the_open_flags_chart_draws_one_bar_per_rule_not_the_total(app_ctx, dash):
    """The table ends with the rules' total; the chart drew it as a third bar beside the two
    rules it adds up."""
    from flask_babel import force_locale

    from vouchers.insight import views

    _flag_another_rule("daily_frequency")
    with force_locale("en"):
        rows = figures.open_flags(None, dash.month)
        svg = views._chart(dashboard.TABLES["open_flags"], rows)
        total = str(figures.ALL_RULES_LABEL)
    assert [r["rule"] for r in rows][-1] == figures.ALL_RULES
    assert "Held by a bureau officer" in svg and total not in svg
