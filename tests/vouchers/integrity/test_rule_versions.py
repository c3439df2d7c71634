"""Anomaly rules as data (vouchers.integrity.rule_versions and its page): a bureau approver
adds a version of a rule from a future day, its thresholds checked against the default's
shape; the version before it ends that day; audited; bad input changes nothing."""

from datetime import timedelta

import pytest
import sqlalchemy as sa

from eldercare.audit import AuditLog
from eldercare.db import db
from eldercare.demo import build_demo
from eldercare.errors import Conflict, InvalidInput
from eldercare.timeutil import local_today
from tests.confirm_helpers import asks_first
from tests.vouchers.interleave import Interleaving, Pause
from vouchers.integrity import anomalies, rule_versions
from vouchers.integrity.models import AnomalyRule
from vouchers.integrity.rules import DEFAULTS

URL = "/vouchers/bureau/anomaly-rules"


@pytest.fixture
def en(client):
    client.environ_base["HTTP_ACCEPT_LANGUAGE"] = "en"
    return client


def _versions(code):
    return db.session.scalars(
        sa.select(AnomalyRule).where(AnomalyRule.code == code).order_by(AnomalyRule.effective_from)
    ).all()


def _snapshot():
    return [
        (v.code, v.effective_from, v.effective_to, v.enabled, v.params)
        for v in db.session.scalars(sa.select(AnomalyRule).order_by(AnomalyRule.id))
    ]


def test_a_new_version_from_tomorrow_ends_the_one_in_force(scheme, db_session):
    tomorrow = scheme.today + timedelta(days=1)
    [before] = _versions("high_value")
    version = rule_versions.add_version(
        "high_value",
        effective_from=tomorrow,
        params={"subsidy_fen": 20000},
        enabled=True,
        note="民政局 2026 第 3 号文",
        actor=scheme.approver,
        today=scheme.today,
    )
    db_session.refresh(before)
    assert before.effective_to == tomorrow
    assert (version.params, version.enabled, version.effective_to) == (
        {"subsidy_fen": 20000},
        True,
        None,
    )
    assert rule_versions.in_force("high_value", scheme.today).id == before.id
    assert rule_versions.in_force("high_value", tomorrow).id == version.id
    # The engine judges tomorrow's redemptions by the new version.
    assert [v.id for v in anomalies.versions_between(tomorrow, tomorrow)["high_value"]] == [
        version.id
    ]
    row = db.session.scalar(
        sa.select(AuditLog).where(AuditLog.action == "anomaly_rule.add_version")
    )
    assert row is not None and '"subsidy_fen":20000' in row.after_json.replace(" ", "")


@pytest.mark.parametrize("days_ahead", [366, 367])
def test_a_version_starts_within_a_year(scheme, db_session, days_ahead):
    """Review finding: a mistaken far-off date (2099) blocked every nearer change, and
    nothing withdraws a version; a year ahead is the horizon."""
    kept = _snapshot()
    add = lambda: rule_versions.add_version(  # noqa: E731
        "high_value",
        effective_from=scheme.today + timedelta(days=days_ahead),
        params={"subsidy_fen": 20000},
        enabled=True,
        note="x",
        actor=scheme.approver,
        today=scheme.today,
    )
    if days_ahead == 366:
        assert add().effective_from == scheme.today + timedelta(days=366)
        return
    with pytest.raises(InvalidInput) as refused:
        add()
    assert set(refused.value.details) == {"effective_from"}
    assert _snapshot() == kept


def test_a_version_cannot_start_today_or_before_a_later_one(scheme, db_session):
    tomorrow = scheme.today + timedelta(days=1)
    kept = _snapshot()
    with pytest.raises(InvalidInput) as refused:
        rule_versions.add_version(
            "high_value",
            effective_from=scheme.today,
            params={"subsidy_fen": 20000},
            enabled=True,
            note="x",
            actor=scheme.approver,
            today=scheme.today,
        )
    assert set(refused.value.details) == {"effective_from"}
    assert _snapshot() == kept
    rule_versions.add_version(
        "high_value",
        effective_from=tomorrow + timedelta(days=5),
        params={"subsidy_fen": 20000},
        enabled=True,
        note="x",
        actor=scheme.approver,
        today=scheme.today,
    )
    kept = _snapshot()
    for day in (tomorrow, tomorrow + timedelta(days=5)):
        with pytest.raises(Conflict):
            rule_versions.add_version(
                "high_value",
                effective_from=day,
                params={"subsidy_fen": 1},
                enabled=False,
                note="y",
                actor=scheme.approver,
                today=scheme.today,
            )
    assert _snapshot() == kept


@pytest.mark.parametrize(
    ("code", "params", "field"),
    [
        ("high_value", {"subsidy_fen": "abc"}, "param_subsidy_fen"),
        ("high_value", {"subsidy_fen": 0}, "param_subsidy_fen"),
        ("high_value", {"subsidy_fen": True}, "param_subsidy_fen"),
        ("high_value", {}, "param_subsidy_fen"),
        ("review_sample", {"share_bp": 10001}, "param_share_bp"),
        ("review_sample", {"share_bp": 2.5}, "param_share_bp"),
        ("visit_length", {"min_minutes": 30, "max_minutes": 30}, "param_max_minutes"),
        ("visit_length", {"min_minutes": -1, "max_minutes": 30}, "param_min_minutes"),
        (
            "at_cap",
            {"min_redemptions": 20, "times_peers": "nan", "min_share_pct": 50},
            "param_times_peers",
        ),
        ("category_frequency", {"limits": {"karaoke": {"per": "day", "max": 3}}}, "limits"),
        (
            "category_frequency",
            {"limits": {"meal_help": {"per": "week", "max": 3}}},
            "limit_meal_help_per",
        ),
        (
            "category_frequency",
            {"limits": {"meal_help": {"per": "day", "max": 0}}},
            "limit_meal_help_max",
        ),
        (
            "category_frequency",
            {"limits": {"meal_help": {"per": "day", "max": 101}}},
            "limit_meal_help_max",
        ),
        ("category_frequency", {"limits": {}}, "limits"),
    ],
)
def test_thresholds_are_checked_against_the_rules_shape(scheme, code, params, field):
    with pytest.raises(InvalidInput) as refused:
        rule_versions.clean_params(code, params)
    assert field in refused.value.details


def test_good_thresholds_keep_the_defaults_shape(scheme):
    for code, default in DEFAULTS.items():
        assert rule_versions.clean_params(code, default) == default
    assert rule_versions.clean_params(
        "at_cap", {"min_redemptions": "30", "times_peers": "2.5", "min_share_pct": "40"}
    ) == {
        "min_redemptions": 30,
        "times_peers": 2.5,
        "min_share_pct": 40,
    }


def test_the_page_shows_every_rule_and_an_approver_adds_a_version(scheme, en, login, db_session):
    login(scheme.approver)
    page = en.get(URL).get_data(as_text=True)
    for code in DEFAULTS:
        assert f'id="rule-{code}"' in page
    assert "High-value redemption" in page and "300.00" in page
    tomorrow = (scheme.today + timedelta(days=1)).isoformat()
    form = {
        "code": "visit_length",
        "effective_from": tomorrow,
        "enabled": "1",
        "param_min_minutes": "10",
        "param_max_minutes": "600",
        "note": "第 5 号文",
    }
    refused = en.post(URL, data={**form, "param_max_minutes": "5"})
    assert refused.status_code == 422
    assert "The longest visit must be longer than the shortest." in refused.get_data(as_text=True)
    assert len(_versions("visit_length")) == 1
    asks_first(en, URL, form, "Change the rule")
    assert len(_versions("visit_length")) == 1
    done = en.post(URL, data={**form, "confirm": "1"})
    assert done.status_code == 302
    old, new = _versions("visit_length")
    assert old.effective_to == new.effective_from
    assert (new.params, new.enabled, new.note) == (
        {"min_minutes": 10, "max_minutes": 600},
        True,
        "第 5 号文",
    )
    page = en.get(URL).get_data(as_text=True)
    assert f'data-from="{tomorrow}"' in page


def test_refusals_in_chinese_and_nothing_changed(scheme, client, login, db_session):
    login(scheme.approver)
    kept = _snapshot()
    today = scheme.today.isoformat()
    refused = client.post(
        URL,
        data={
            "code": "category_frequency",
            "effective_from": today,
            "limit_meal_help_per": "day",
            "limit_meal_help_max": "0",
            "note": "",
        },
    )
    assert refused.status_code == 422
    text = refused.get_data(as_text=True)
    assert "新版本最早从明天开始" in text
    assert _snapshot() == kept
    unknown = client.post(URL, data={"code": "nope", "effective_from": today})
    assert unknown.status_code == 422 and _snapshot() == kept


def test_only_a_city_approver_adds_versions(scheme, client, login, factory, db_session):
    tomorrow = (scheme.today + timedelta(days=1)).isoformat()
    form = {
        "code": "high_value",
        "effective_from": tomorrow,
        "param_subsidy_fen": "100",
        "note": "x",
    }
    login(scheme.market.officer)
    assert client.get(URL).status_code == 200
    assert client.post(URL, data=form).status_code == 403
    district_approver = factory.user(
        "heping.approver", roles=["bureau_approver"], district=scheme.heping
    )
    login(district_approver)
    page = client.get(URL).get_data(as_text=True)
    assert 'id="add-version-high_value"' not in page
    assert client.post(URL, data=form).status_code == 403
    assert len(_versions("high_value")) == 1


# --- two approvers at once (PostgreSQL, real transactions) ----------------------------------

HOLDING = Pause("after", "SELECT anomaly_rules", contains="FOR UPDATE")
ASKING = Pause("before", "SELECT anomaly_rules", contains="FOR UPDATE")


def _add(days_ahead: int, threshold: int):
    def work():
        from eldercare.accounts import User

        approver = db.session.scalar(sa.select(User).where(User.username == "bureau.approver"))
        rule_versions.add_version(
            "high_value",
            effective_from=local_today() + timedelta(days=days_ahead),
            params={"subsidy_fen": threshold},
            enabled=True,
            note=f"{threshold}",
            actor=approver,
        )
        return "added"

    return work


@pytest.mark.postgres
@pytest.mark.parametrize(("first_day", "second_day"), [(1, 1), (2, 1)])
def test_two_approvers_adding_a_version_at_once_one_wins(private_app, first_day, second_day):
    with private_app.app_context():
        build_demo()
        db.session.commit()
        db.session.remove()
    results = Interleaving(private_app, {"a": HOLDING, "b": ASKING}).run(
        a=_add(first_day, 20000), b=_add(second_day, 10000)
    )
    assert results["a"] == "added"
    assert isinstance(results["b"], Conflict), results
    with private_app.app_context():
        versions = _versions("high_value")
        shown = [(v.effective_to is None, v.params) for v in versions]
        db.session.remove()
    assert shown == [(False, {"subsidy_fen": 30000}), (True, {"subsidy_fen": 20000})]
