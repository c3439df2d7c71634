"""The anomaly-rule engine and its first rules: each fires, and a near miss does not; judged
at capture and again on the month's batch before settlement, which leaves the flagged out
until an officer clears them; a death recorded after settlement flags the settled
redemption, and rejecting the flag claws it back from the provider."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from flask_babel import force_locale

from assessment.eligibility import record_death
from eldercare.db import db
from eldercare.timeutil import SHANGHAI, now_utc
from tests.marketplace.conftest import ELDER_HOME
from tests.vouchers.helpers import give_voucher
from tests.vouchers.settlement import conftest as settlement
from tests.vouchers.settlement.builders import approved_statement
from tests.vouchers.settlement.conftest import settle_day, spend
from vouchers.integrity import anomalies, flags
from vouchers.integrity.models import AnomalyRule, RedemptionFlag
from vouchers.integrity.rules import DEFAULTS, RULES
from vouchers.jobs import eligibility_events
from vouchers.models import Redemption
from vouchers.pool import ledger
from vouchers.redemption import steps as redemption
from vouchers.settlement import books
from vouchers.settlement.models import StatementLine
from vouchers.settlement.statements.run import run_settlement

bureau = settlement.bureau  # the fixture: city-wide bureau staff
NEAR_HOME = (ELDER_HOME[0] + 0.001, ELDER_HOME[1])  # about 110 m from the elder's door


def _flags(r, rule=None):
    query = sa.select(RedemptionFlag).where(RedemptionFlag.redemption_id == r.id)
    if rule:
        query = query.where(RedemptionFlag.rule == rule)
    return db.session.scalars(query.order_by(RedemptionFlag.id)).all()


def _words(flag, locale="zh_CN"):
    with force_locale(locale):
        return RULES[flag.rule].describe(flag.evidence)


def _today_at(hour, minute=0):
    day = now_utc().astimezone(SHANGHAI).date()
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=SHANGHAI)


def _visit(shop, service, start, minutes, *, price=None, checkout=True, draw=None):
    """A visit checked in at ``start``, out ``minutes`` later (or never), then paid in cash."""
    shop.counter += 1
    location = NEAR_HOME if service.delivery_place == "home" else (None, None)
    r = redemption.check_in(
        shop.voucher,
        scan_digest=f"rule-{shop.counter}",
        staff_user=shop.caregiver,
        service_id=service.id,
        latitude=location[0],
        longitude=location[1],
        now=start,
    )
    if draw is not None:
        r.review_draw = draw
    end = start + timedelta(minutes=minutes)
    if checkout:
        redemption.check_out(r, staff_user=shop.caregiver, now=end)
    redemption.set_price(
        r, price_fen=price or service_price(service), staff_user=shop.caregiver, now=end
    )
    redemption.pay_cash(r, staff_user=shop.caregiver, now=end)
    return r


def service_price(service):
    return {"meal": 1500}.get(service.unit, 8000)


def test_the_defaults_are_the_migrations_and_every_rule_is_seeded(app_ctx, db_session):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[3] / "migrations" / "versions" / "0024_anomaly_rules.py"
    spec = importlib.util.spec_from_file_location("m0024", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.DEFAULTS == DEFAULTS
    seeded = dict(db.session.execute(sa.select(AnomalyRule.code, AnomalyRule.params)).all())
    assert seeded == DEFAULTS
    assert set(RULES) == set(DEFAULTS)  # every seeded rule has its code, and no more


# ------------------------------------------------------------------ visit length (rule 4)


@pytest.mark.parametrize(("minutes", "fires"), [(4, True), (5, False), (720, False), (721, True)])
def test_visit_length_fires_outside_5_minutes_to_12_hours(shop, rules_on, minutes, fires):
    rules_on("visit_length")
    r = _visit(shop, shop.market.bath, _today_at(0, 30), minutes)
    found = _flags(r, "visit_length")
    assert bool(found) is fires, [f.evidence for f in found]
    if fires:
        assert found[0].evidence["minutes"] == minutes
        assert f"{minutes}" in _words(found[0]) and "分钟" in _words(found[0])
        assert "minutes" in _words(found[0], "en")


def test_a_home_visit_never_checked_out_is_held_before_settlement_not_at_capture(
    shop, bureau, rules_on
):
    """Check-out may come after the payment (the page says so): at capture a missing one is
    not a finding; still missing when the month is judged before settlement, it is."""
    rules_on("visit_length")
    home = _visit(shop, shop.market.bath, _today_at(0, 30), 30, checkout=False)
    meal = _visit(shop, shop.market.meals, _today_at(0, 40), 30, checkout=False)
    assert _flags(home) == []
    month = shop.voucher.month
    run_settlement(month, actor=bureau.officer, today=settle_day(month))
    (flag,) = _flags(home, "visit_length")
    assert flag.evidence["minutes"] is None and "签出" in _words(flag)
    assert "never checked out" in _words(flag, "en")
    assert db.session.get(StatementLine, home.id) is None
    assert _flags(meal) == [] and db.session.get(StatementLine, meal.id) is not None


def test_a_home_visit_checked_out_after_the_payment_is_not_held(shop, bureau, rules_on):
    """Review finding: paid at 00:31, checked out at 01:15 (a 45-minute visit)."""
    rules_on("visit_length")
    r = _visit(shop, shop.market.bath, _today_at(0, 30), 1, checkout=False)
    redemption.check_out(r, staff_user=shop.caregiver, now=_today_at(1, 15))
    month = shop.voucher.month
    run_settlement(month, actor=bureau.officer, today=settle_day(month))
    assert _flags(r) == [] and db.session.get(StatementLine, r.id) is not None


# ------------------------------------------------------------ review sample and high value


@pytest.mark.parametrize(("draw", "fires"), [(499, True), (500, False)])
def test_the_review_sample_takes_the_draws_below_the_share(shop, rules_on, draw, fires):
    rules_on("review_sample")  # 500 basis points: 5%
    r = _visit(shop, shop.market.meals, _today_at(0, 10), 30, draw=draw)
    assert bool(_flags(r, "review_sample")) is fires


def test_every_redemption_draws_for_the_sample_from_0_to_9999(shop, db_session):
    draws = {spend(shop).review_draw for _ in range(5)}
    assert all(0 <= d <= 9999 for d in draws) and len(draws) > 1


@pytest.mark.parametrize(("threshold", "fires"), [(599, True), (600, False)])
def test_high_value_fires_above_the_threshold(shop, rules_on, threshold, fires):
    rules_on(high_value={"subsidy_fen": threshold})
    r = spend(shop, 1500)  # 40% of 15 yuan: a subsidy of 6 yuan
    assert r.subsidy_fen == 600
    found = _flags(r, "high_value")
    assert bool(found) is fires
    if fires:
        assert "¥6.00" in _words(found[0]) and "¥5.99" in _words(found[0], "en")


# ------------------------------------------------------------------ settlement and the batch


def test_a_flagged_redemption_is_not_settled_until_cleared(shop, bureau, rules_on):
    rules_on(high_value={"subsidy_fen": 500})
    small, large = spend(shop, 1000), spend(shop, 1500)  # subsidies 4 and 6 yuan
    (flag,) = _flags(large, "high_value")
    month = shop.voucher.month
    report = run_settlement(month, actor=bureau.officer, today=settle_day(month))
    assert db.session.get(StatementLine, small.id) is not None
    assert db.session.get(StatementLine, large.id) is None  # held out
    assert report["lines_added"] == 1
    flags.clear(flag, reason="核实无误：老人确认当日接受服务", actor=bureau.officer)
    report = run_settlement(month, actor=bureau.officer, today=settle_day(month))
    assert db.session.get(StatementLine, large.id) is not None  # settled with the next run
    assert report["flagged"] == {}  # a cleared finding is not raised again
    assert len(_flags(large, "high_value")) == 1


def test_the_batch_judges_again_by_the_versions_in_force(shop, bureau, rules_on):
    """The engine: the batch before settlement runs every rule again by the versions in force
    on the service days, whatever the capture found (here the version is switched on behind
    the admin's back; through the admin a version starts tomorrow at the earliest)."""
    kept, caught = spend(shop, 1000), spend(shop, 1500)
    assert _flags(caught) == []
    rules_on(high_value={"subsidy_fen": 500})
    month = shop.voucher.month
    report = run_settlement(month, actor=bureau.officer, today=settle_day(month))
    assert report["flagged"] == {"high_value": 1}
    assert [f.rule for f in _flags(caught)] == ["high_value"]
    assert db.session.get(StatementLine, caught.id) is None
    assert db.session.get(StatementLine, kept.id) is not None


def test_a_version_judges_only_the_days_it_is_in_force(shop, bureau, rules_on):
    rules_on(high_value={"subsidy_fen": 100})
    tomorrow = shop.today + timedelta(days=1)
    db.session.execute(
        sa.update(AnomalyRule)
        .where(AnomalyRule.code == "high_value")
        .values(effective_from=tomorrow)
    )
    r = spend(shop, 1500)
    assert _flags(r) == []  # today's service: no version in force
    month = shop.voucher.month
    report = run_settlement(month, actor=bureau.officer, today=settle_day(month))
    assert report["flagged"] == {} and db.session.get(StatementLine, r.id) is not None


def test_the_batchs_statements_do_not_grow_with_the_month(shop, bureau, rules_on, app):
    """Set-based: the rules cost the same number of statements for 2 redemptions as for 12."""
    from tests.vouchers.test_query_counts import counting

    def statements_for(n):
        db.session.execute(sa.update(AnomalyRule).values(enabled=False))
        made = [spend(shop, 100) for _ in range(n)]
        # Switched on after the captures: the batch finds every one (a subsidy above 0).
        rules_on("after_death", "during_stay", "visit_length", high_value={"subsidy_fen": 0})
        candidates = sa.select(Redemption.id).where(Redemption.id.in_([r.id for r in made]))
        with counting(db.engine) as statements:
            anomalies.check_batch(candidates, shop.today.replace(day=1), shop.today)
        return len(statements)

    few = statements_for(2)
    assert few == statements_for(12)
    db.session.execute(sa.update(AnomalyRule).values(enabled=False))


# ------------------------------------------------------------------ death (rule 1)


def test_a_death_recorded_later_flags_the_services_on_and_after_it(shop, bureau, rules_on):
    rules_on("after_death")
    before, on_the_day = spend(shop, 1500), spend(shop, 1200)
    # Checked in yesterday and today: the death is recorded as of today.
    yesterday = now_utc() - timedelta(days=1)
    db.session.execute(
        sa.update(Redemption).where(Redemption.id == before.id).values(checked_in_at=yesterday)
    )
    record_death(shop.elder, shop.today, today=shop.today)
    eligibility_events()  # the job: the feed, committed, then the rules re-check the dead
    assert _flags(before) == []
    (flag,) = _flags(on_the_day, "after_death")
    assert flag.evidence["died"] == shop.today.isoformat()
    assert shop.today.isoformat() in _words(flag) and "died" in _words(flag, "en")


def test_a_death_recorded_after_settlement_claws_the_subsidy_back(shop, bureau, rules_on):
    rules_on("after_death")
    r = spend(shop, 1500)
    statement = approved_statement(
        shop.market.station, [r], preparer=bureau.officer, approver=bureau.approver
    )
    record_death(shop.elder, shop.today, today=shop.today)
    eligibility_events()  # the job: the feed, committed, then the rules re-check the dead
    (flag,) = _flags(r, "after_death")
    assert flag.status == "open" and r.status == "redeemed"
    flags.reject(flag, reason="服务日期在死亡登记之后", actor=bureau.officer)
    db.session.refresh(r)
    assert r.status == "reversed"
    receivable = books.receivable_code(statement.provider_id)
    assert ledger.balances([receivable])[receivable] == r.subsidy_fen  # owed back
    assert ledger.verify_ledger().ok


def test_the_batch_flags_a_service_after_a_death_recorded_before_the_run(shop, bureau, rules_on):
    rules_on("after_death")
    r = spend(shop, 1500)
    shop.elder.date_of_death = shop.today  # recorded, the feed not yet run
    month = shop.voucher.month
    report = run_settlement(month, actor=bureau.officer, today=settle_day(month))
    assert report["flagged"] == {"after_death": 1}
    assert db.session.get(StatementLine, r.id) is None


# ------------------------------------------------------------------ stays (rule 1)


def _stay_last_month(shop, *, months=1, start_days_ago=20):
    """A month's stay at the care home, redeemed ``start_days_ago`` days ago on an
    institutional voucher of that month (written as the rows a redemption leaves)."""
    start = now_utc() - timedelta(days=start_days_ago)
    voucher = give_voucher(shop.elder, start.astimezone(SHANGHAI).date(), kind="institutional")
    stay = Redemption(
        voucher_id=voucher.id,
        resident_id=shop.elder.id,
        provider_id=shop.market.institution.id,
        staff_user_id=shop.market.institution_admin.id,
        service_id=shop.market.stay.id,
        scan_digest=f"stay-{start_days_ago}-{months}",
        status="redeemed",
        checked_in_at=start,
        quantity=months,
        price_fen=10000,
        insurance_fen=0,
        subsidy_fen=4000,
        copay_fen=6000,
        ratio_bp=4000,
        payment_method="cash",
        redeemed_at=start,
    )
    db.session.add(stay)
    db.session.flush()
    return stay


def test_a_home_visit_during_a_stay_fires(shop, rules_on):
    rules_on("during_stay")
    # Two months' stay that began last month (its own institutional voucher) covers today.
    stay = _stay_last_month(shop, months=2, start_days_ago=shop.today.day + 1)
    r = _visit(shop, shop.market.bath, _today_at(0, 20), 30)
    (flag,) = _flags(r, "during_stay")
    assert flag.evidence["stays"][0]["id"] == stay.id
    assert "沈河区颐养院" in _words(flag) and "stay" in _words(flag, "en")


def test_a_home_visit_after_the_stay_ended_does_not(shop, rules_on):
    rules_on("during_stay")
    # A stay of one month (30 days) that began 31 days ago ended yesterday.
    _stay_last_month(shop, start_days_ago=31)
    r = _visit(shop, shop.market.bath, _today_at(0, 20), 30)
    assert _flags(r) == []


def test_a_failing_rule_never_fails_the_capture_but_stops_the_run(shop, bureau, rules_on, caplog):
    """The elder has paid: a rule that breaks at capture is logged and skipped (its writes
    undone), and the run before settlement, which judges again, fails loudly instead."""
    from dataclasses import replace

    from vouchers.integrity import rules

    def broken(candidates, params):
        db.session.execute(sa.update(AnomalyRule).values(note="half-done"))  # undone
        raise RuntimeError("a defect in a rule")

    rules_on("high_value")
    original = rules.RULES["high_value"]
    rules.RULES["high_value"] = replace(original, detect=broken)
    try:
        r = spend(shop, 1500)
        assert r.status == "redeemed" and _flags(r) == []
        assert "anomaly rules failed at the capture" in caplog.text
        assert db.session.scalar(sa.select(AnomalyRule.note).limit(1)) is None
        month = shop.voucher.month
        with pytest.raises(RuntimeError):
            run_settlement(month, actor=bureau.officer, today=settle_day(month))
    finally:
        rules.RULES["high_value"] = original


def test_a_stays_large_subsidy_is_not_high_value(shop, rules_on):
    """Review finding: a month's stay takes most of an 800-yuan institutional voucher by
    design; high_value judges services sold by the visit, hour or meal."""
    rules_on(high_value={"subsidy_fen": 100})
    stay = _stay_last_month(shop, start_days_ago=shop.today.day + 1)  # last month's voucher
    candidates = sa.select(Redemption.id).where(Redemption.id == stay.id)
    day = stay.checked_in_at.astimezone(SHANGHAI).date()
    assert anomalies.judge(candidates, day, day, only="high_value") == []


def test_the_feed_flags_nothing_itself_the_job_rechecks_after_its_commit(shop, rules_on):
    """Review finding: flagging inside the feed locked redemption rows while the feed held the
    vouchers' locks (the wrong way round: a reversal deadlocked with it), and a flag meeting a
    settlement run's on the unique index parked the death event. The feed only revokes; the
    job commits it, then the rules re-check the dead (a catch-up: the next run makes up a
    failed one)."""
    from vouchers.integrity.anomalies import recheck_deaths
    from vouchers.issuance.eligibility_feed import process_eligibility_events

    rules_on("after_death")
    r = spend(shop, 1500)
    record_death(shop.elder, shop.today, today=shop.today)
    process_eligibility_events()
    assert _flags(r) == []
    assert recheck_deaths() == {"flagged": 1, "failed": {}}
    assert [f.rule for f in _flags(r)] == ["after_death"]
    assert recheck_deaths()["flagged"] == 0  # once


def test_a_death_recorded_years_late_is_rechecked_from_the_feeds_run(shop, rules_on):
    """Second review: the catch-up looks 400 days back by date of death; the feed's own
    deaths are re-checked whatever the date."""
    from vouchers.integrity.anomalies import recheck_deaths

    rules_on("after_death")
    r = spend(shop, 1500)
    record_death(shop.elder, shop.today, today=shop.today)
    later = shop.today + timedelta(days=401)
    assert recheck_deaths(today=later)["flagged"] == 0  # beyond the catch-up's look-back
    assert recheck_deaths([shop.elder.id], today=later) == {"flagged": 1, "failed": {}}
    assert [f.rule for f in _flags(r)] == ["after_death"]


def test_one_resident_failing_the_recheck_does_not_stop_the_others(shop, rules_on, monkeypatch):
    from vouchers.integrity import anomalies

    rules_on("after_death")
    spend(shop, 1500)
    record_death(shop.elder, shop.today, today=shop.today)
    real = anomalies.recheck_after_death

    def failing(resident_id):
        if resident_id == -1:
            raise RuntimeError("broken")
        return real(resident_id)

    monkeypatch.setattr(anomalies, "recheck_after_death", failing)
    report = anomalies.recheck_deaths([-1])
    assert report["flagged"] == 1 and list(report["failed"]) == [-1]
