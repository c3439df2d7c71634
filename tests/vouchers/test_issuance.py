"""Issuance, expiry, revocation, the elder's kind, the eligibility feed and the CLI."""

import json
from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from assessment.eligibility import add_exclusion, record_death, record_move_out
from eldercare.audit import AuditLog
from eldercare.errors import InvalidInput
from vouchers.issuance.eligibility_feed import process_eligibility_events
from vouchers.issuance.monthly import (
    issue_for,
    issue_monthly,
    month_of,
    next_month,
    previous_month,
    revoke_for,
    try_issue,
)
from vouchers.models import (
    EventCursor,
    JournalEntry,
    KindChoice,
    Shortfall,
    Voucher,
)
from vouchers.pool import funding as pool
from vouchers.pool import ledger
from vouchers.pool.kinds import choose_kind, kind_for

HEPING = "district:210102:available"
SHENHE = "district:210103:available"
OUTSTANDING = "vouchers:outstanding"
HOME_CAP, INSTITUTIONAL_CAP = 50_000, 80_000


def assert_books_balance(session):
    """The ledger verifies and the vouchers' spendable balances are exactly what the ledger
    says is outstanding."""
    assert ledger.verify_ledger().ok
    active = session.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(Voucher.balance_fen), 0)).where(
            Voucher.status == "active"
        )
    )
    assert active == ledger.balances().get(OUTSTANDING, 0)


def count(session, model, *where):
    return session.scalar(sa.select(sa.func.count()).select_from(model).where(*where))


def entries_of(session, kind):
    return list(session.scalars(sa.select(JournalEntry).where(JournalEntry.kind == kind)))


@pytest.fixture
def current(scheme):
    return month_of(scheme.today)


@pytest.fixture
def shenhe_elders(scheme):
    """Four eligible elders in Shenhe, whose allocation covers two home vouchers."""
    w, today = scheme.world, scheme.today

    def elder(level, waited_days, n):
        resident = w.factory.resident(w.shenhe, birth=date(1938 + n, 2, 1))
        day = today - timedelta(days=waited_days)
        scheme.assess(resident, level, assessed_on=day, approved_on=day)
        return resident

    elders = {
        "severe_new": elder("severe", 5, 1),
        "severe_old": elder("severe", 90, 2),
        "moderate_old": elder("moderate", 200, 3),
        "complete_new": elder("complete", 1, 4),
    }
    pool.allocate(w.shenhe, 2 * HOME_CAP, memo="沈河区", actor=scheme.approver)
    return elders


# --- issuing ---------------------------------------------------------------------------


def test_one_voucher_per_elder_reserving_the_cap_in_the_same_entry(scheme, current, db_session):
    before = ledger.balances()
    report = issue_monthly(current)
    assert (report.issued, report.already_issued, report.total_fen) == (1, 0, HOME_CAP)
    voucher = db_session.scalar(sa.select(Voucher).where(Voucher.resident_id == scheme.elder.id))
    assert (voucher.month, voucher.kind, voucher.status) == (current, "home_community", "active")
    assert voucher.face_value_fen == voucher.balance_fen == HOME_CAP and voucher.held_fen == 0
    (entry,) = entries_of(db_session, "issue")  # one per district and batch
    assert entry.cause_type == "issuance" and entry.cause_id.startswith(f"{current:%Y-%m}/210102/")
    lines = {line.account.code: line.amount_fen for line in entry.lines}
    assert lines == {HEPING: -HOME_CAP, OUTSTANDING: HOME_CAP}
    after = ledger.balances()
    assert after[HEPING] == before[HEPING] - HOME_CAP
    assert count(db_session, AuditLog, AuditLog.action == "voucher.issue") == 1
    assert_books_balance(db_session)

    again = issue_monthly(current)
    assert (again.issued, again.already_issued, again.total_fen) == (0, 1, 0)
    assert issue_for(scheme.elder.id, current).id == voucher.id
    assert count(db_session, Voucher) == 1
    assert len(entries_of(db_session, "issue")) == 1
    assert ledger.balances() == after
    assert_books_balance(db_session)


def test_an_elder_who_is_not_eligible_gets_nothing(scheme, current, db_session):
    w = scheme.world
    mild = w.factory.resident(w.heping, birth=date(1941, 1, 1))
    scheme.assess(mild, "mild")
    excluded = w.factory.resident(w.heping, birth=date(1942, 1, 1))
    scheme.assess(excluded, "severe")
    add_exclusion(excluded, "extremely_poor_support", scheme.today - timedelta(days=3))
    young = w.factory.resident(w.heping, birth=date(1990, 1, 1))
    scheme.assess(young, "severe")

    report = issue_monthly(current)
    assert report.issued == 1 and report.not_eligible == 2  # the mild one is no candidate
    assert {v.resident_id for v in db_session.scalars(sa.select(Voucher))} == {scheme.elder.id}
    assert issue_for(excluded.id, current) is None
    assert issue_for(mild.id, current) is None
    assert count(db_session, Shortfall) == 0


def test_past_and_far_months_are_refused_and_change_nothing(scheme, current, db_session):
    entries = count(db_session, JournalEntry)
    for month in (previous_month(current), next_month(next_month(current)), current.replace(day=2)):
        with pytest.raises(InvalidInput):
            issue_monthly(month)
        with pytest.raises(InvalidInput):
            issue_for(scheme.elder.id, month)
    with pytest.raises(InvalidInput):
        issue_for(scheme.elder.id, current, reason="because")
    assert count(db_session, Voucher) == 0 and count(db_session, JournalEntry) == entries


def test_priority_when_the_allocation_covers_only_some(scheme, current, shenhe_elders, db_session):
    e = shenhe_elders
    report = issue_monthly(current)
    issued = {v.resident_id for v in db_session.scalars(sa.select(Voucher))}
    # Complete before severe before moderate; within severe the longer-waiting one.
    assert issued == {scheme.elder.id, e["complete_new"].id, e["severe_old"].id}
    assert report.issued == 3
    assert report.left_out == [
        {
            "resident_id": e["severe_new"].id,
            "district": "210103",
            "level": "severe",
            "needed_fen": HOME_CAP,
        },
        {
            "resident_id": e["moderate_old"].id,
            "district": "210103",
            "level": "moderate",
            "needed_fen": HOME_CAP,
        },
    ]
    shortfalls = list(db_session.scalars(sa.select(Shortfall).order_by(Shortfall.resident_id)))
    assert {s.resident_id for s in shortfalls} == {e["severe_new"].id, e["moderate_old"].id}
    assert all(s.resolved_at is None and s.month == current for s in shortfalls)
    assert ledger.balances()[SHENHE] == 0
    assert_books_balance(db_session)

    # A rerun without new money issues nothing and records nothing twice.
    again = issue_monthly(current)
    assert again.issued == 0 and len(again.left_out) == 2
    assert count(db_session, Shortfall) == 2

    pool.allocate(scheme.world.shenhe, 2 * HOME_CAP, memo="追加", actor=scheme.approver)
    rerun = issue_monthly(current)
    assert (rerun.issued, rerun.already_issued, rerun.left_out) == (2, 3, [])
    assert count(db_session, Voucher) == 5
    assert all(s.resolved_at is not None for s in db_session.scalars(sa.select(Shortfall)))
    assert_books_balance(db_session)


def test_priority_is_strict_within_a_district(scheme, current, db_session):
    """A cheaper voucher further down the list is not issued over the head of an elder
    higher up whose voucher the district cannot cover."""
    w = scheme.world
    complete = w.factory.resident(w.shenhe, birth=date(1936, 1, 1))
    scheme.assess(complete, "complete")
    choose_kind(complete, "institutional", actor=scheme.son, in_institution=True)
    moderate = w.factory.resident(w.shenhe, birth=date(1937, 1, 1))
    scheme.assess(moderate, "moderate")
    pool.allocate(w.shenhe, 60_000, memo="沈河区", actor=scheme.approver)

    report = issue_monthly(current)
    assert [row["resident_id"] for row in report.left_out] == [complete.id, moderate.id]
    assert report.left_out[0]["needed_fen"] == INSTITUTIONAL_CAP
    assert ledger.balances()[SHENHE] == 60_000

    pool.allocate(w.shenhe, 70_000, memo="追加", actor=scheme.approver)
    issue_monthly(current)
    voucher = db_session.scalar(sa.select(Voucher).where(Voucher.resident_id == complete.id))
    assert (voucher.kind, voucher.face_value_fen) == ("institutional", INSTITUTIONAL_CAP)
    assert ledger.balances()[SHENHE] == 0
    assert_books_balance(db_session)


def test_limit_handles_only_that_many_elders(scheme, current, shenhe_elders, db_session):
    report = issue_monthly(current, limit=2)
    assert report.issued + len(report.left_out) == 2
    assert count(db_session, Voucher) == report.issued


# --- the elder's kind --------------------------------------------------------------------


def test_kind_choice_applies_to_the_next_voucher_and_bad_input_changes_nothing(
    scheme, current, db_session
):
    elder = scheme.elder
    assert kind_for(elder.id) == "home_community"
    audits = count(db_session, AuditLog)
    for bad in ("cash", "", None):
        with pytest.raises(InvalidInput):
            choose_kind(elder, bad, actor=scheme.son)
    assert count(db_session, KindChoice) == 0 and count(db_session, AuditLog) == audits

    issue_monthly(current)
    choose_kind(elder, "institutional", actor=scheme.son)
    assert kind_for(elder.id) == "institutional"
    assert count(db_session, AuditLog, AuditLog.action == "voucher_kind.choose") == 1
    this_month = db_session.scalar(sa.select(Voucher).where(Voucher.month == current))
    assert this_month.kind == "home_community"  # already issued: unchanged
    nxt = issue_for(elder.id, next_month(current))
    assert (nxt.kind, nxt.face_value_fen) == ("institutional", INSTITUTIONAL_CAP)
    assert_books_balance(db_session)


def test_living_in_an_institution_means_the_institutional_kind(scheme, db_session):
    elder = scheme.elder
    choose_kind(elder, "institutional", actor=scheme.approver, in_institution=True)
    with pytest.raises(InvalidInput):
        choose_kind(elder, "home_community", actor=scheme.son)
    assert kind_for(elder.id) == "institutional"
    choose_kind(elder, "home_community", actor=scheme.approver, in_institution=False)
    assert kind_for(elder.id) == "home_community"


# --- the eligibility feed -----------------------------------------------------------------


def test_first_voucher_at_once_when_an_assessment_is_approved(scheme, current, db_session):
    result = process_eligibility_events()
    voucher = db_session.scalar(sa.select(Voucher))
    assert voucher is not None and voucher.resident_id == scheme.elder.id
    assert voucher.month == current and result["issued"] == [voucher.id]
    assert result["processed"] == 1
    cursor = db_session.get(EventCursor, "eligibility")
    assert cursor.last_event_id == result["last_event_id"] > 0
    assert_books_balance(db_session)

    entries = count(db_session, JournalEntry)
    again = process_eligibility_events()
    assert again["processed"] == 0 and again["issued"] == []
    assert count(db_session, Voucher) == 1 and count(db_session, JournalEntry) == entries


def test_feed_does_not_issue_twice_after_the_monthly_run(scheme, current, db_session):
    issue_monthly(current)
    result = process_eligibility_events()
    assert result["processed"] == 1 and result["issued"] == []
    assert count(db_session, Voucher) == 1


def test_death_revokes_the_current_voucher_at_once(scheme, current, db_session):
    issue_monthly(current)
    process_eligibility_events()
    district_before = ledger.balances()[HEPING]
    record_death(scheme.elder, scheme.today, today=scheme.today)
    result = process_eligibility_events()
    voucher = db_session.scalar(sa.select(Voucher))
    assert result["revoked"] == [voucher.id]
    assert (voucher.status, voucher.balance_fen) == ("revoked", 0)
    assert voucher.closed_at is not None
    assert ledger.balances()[HEPING] == district_before + HOME_CAP
    (entry,) = entries_of(db_session, "revoke")
    assert entry.cause_id == str(voucher.id)
    assert_books_balance(db_session)


def test_moving_out_stops_vouchers_from_the_next_month(scheme, current, db_session):
    issue_monthly(current)
    issue_monthly(next_month(current))
    process_eligibility_events()
    record_move_out(scheme.elder, scheme.today)
    result = process_eligibility_events()
    by_month = {v.month: v for v in db_session.scalars(sa.select(Voucher))}
    assert by_month[current].status == "active" and by_month[current].balance_fen == HOME_CAP
    assert by_month[next_month(current)].status == "revoked"
    assert result["revoked"] == [by_month[next_month(current)].id]
    assert_books_balance(db_session)


def test_a_lower_assessment_stops_vouchers_from_the_next_month(scheme, current, db_session):
    issue_monthly(current)
    issue_monthly(next_month(current))
    process_eligibility_events()
    scheme.assess(scheme.elder, "mild", type="immediate")
    result = process_eligibility_events()
    by_month = {v.month: v.status for v in db_session.scalars(sa.select(Voucher))}
    assert by_month == {current: "active", next_month(current): "revoked"}
    assert len(result["revoked"]) == 1
    assert_books_balance(db_session)


def test_revoke_refuses_an_unknown_reason(scheme, current, db_session):
    issue_monthly(current)
    with pytest.raises(InvalidInput):
        revoke_for(scheme.elder.id, from_month=current, reason="dislike")
    assert db_session.scalar(sa.select(Voucher.status)) == "active"


# --- expiry -------------------------------------------------------------------------------


@pytest.fixture
def last_months_voucher(scheme, current, db_session):
    """A voucher of the month that just ended (issuing refuses past months, so this goes
    through the inner step directly)."""
    outcome = try_issue(scheme.elder.id, previous_month(current), actor_id=None, reason="monthly")
    assert outcome.status == "issued"
    return outcome.voucher


def _hold(voucher, amount):
    """What a payment in flight does (the redemption module's hold)."""
    ledger.post("hold", "test hold", [(OUTSTANDING, -amount), ("vouchers:held", amount)])
    voucher.balance_fen -= amount
    voucher.held_fen += amount


def test_expiry_returns_the_balance_and_is_idempotent(
    scheme, current, last_months_voucher, db_session
):
    from vouchers.issuance.monthly import expire_month

    month = previous_month(current)
    issue_monthly(current)
    district_before = ledger.balances()[HEPING]
    result = expire_month(month)
    assert result == {
        "month": month.strftime("%Y-%m"),
        "expired": 1,
        "returned_fen": HOME_CAP,
        "held": [],
    }
    voucher = db_session.get(Voucher, last_months_voucher.id)
    assert (voucher.status, voucher.balance_fen) == ("expired", 0)
    this_month = db_session.scalar(sa.select(Voucher).where(Voucher.month == current))
    assert this_month.status == "active"  # only the month asked for
    assert ledger.balances()[HEPING] == district_before + HOME_CAP
    assert_books_balance(db_session)

    balances = ledger.balances()
    again = expire_month(month)
    assert again["expired"] == 0 and again["returned_fen"] == 0
    assert ledger.balances() == balances
    assert len(entries_of(db_session, "expire")) == 1


def test_expiry_of_a_voucher_with_a_payment_in_flight_returns_the_rest_at_once(
    scheme, current, last_months_voucher, db_session
):
    from vouchers.issuance.monthly import expire_month

    district_before = ledger.balances()[HEPING]
    _hold(last_months_voucher, 12_000)
    result = expire_month(previous_month(current))
    assert result["held"] == [last_months_voucher.id] and result["expired"] == 1
    assert result["returned_fen"] == 38_000
    voucher = db_session.get(Voucher, last_months_voucher.id)
    assert (voucher.status, voucher.balance_fen, voucher.held_fen) == ("expired", 0, 12_000)
    assert ledger.balances()[HEPING] == district_before + 38_000
    assert_books_balance(db_session)


def test_the_current_month_cannot_expire(scheme, current, db_session):
    from vouchers.issuance.monthly import expire_month

    issue_monthly(current)
    with pytest.raises(InvalidInput):
        expire_month(current)
    assert db_session.scalar(sa.select(Voucher.status)) == "active"


# --- the command line ---------------------------------------------------------------------


def _run(app, *args):
    return app.test_cli_runner().invoke(args=["vouchers", *args])


def test_cli_issue_and_expire_print_json(app, scheme, current, last_months_voucher, db_session):
    result = _run(app, "issue", "--month", current.strftime("%Y-%m"), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["month"] == current.strftime("%Y-%m")
    assert (report["issued"], report["already_issued"], report["total_fen"]) == (1, 0, HOME_CAP)
    assert report["left_out"] == [] and report["not_eligible"] == 0

    rerun = json.loads(_run(app, "issue", "--month", current.strftime("%Y-%m"), "--json").output)
    assert (rerun["issued"], rerun["already_issued"]) == (0, 1)

    month = previous_month(current).strftime("%Y-%m")
    expired = json.loads(_run(app, "expire", "--month", month, "--json").output)
    assert expired["expired"] == 1 and expired["returned_fen"] == HOME_CAP

    human = _run(app, "issue", "--month", current.strftime("%Y-%m"))
    assert human.exit_code == 0 and "0 issued" in human.output
    assert_books_balance(db_session)


def test_cli_process_events_prints_json(app, scheme, current, db_session):
    result = _run(app, "process-events", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["processed"] == 1 and len(data["issued"]) == 1 and data["parked"] == []
    assert json.loads(_run(app, "process-events", "--json").output)["processed"] == 0


@pytest.mark.parametrize("month", ["2025-13", "July", "", "2025-7-1"])
def test_cli_bad_month_is_a_usage_error_and_changes_nothing(app, scheme, month, db_session):
    entries = count(db_session, JournalEntry)
    for command in ("issue", "expire"):
        result = _run(app, command, "--month", month, "--json")
        assert result.exit_code == 2, result.output
        assert "YYYY-MM" in result.output
    assert count(db_session, Voucher) == 0 and count(db_session, JournalEntry) == entries


def test_cli_refuses_a_past_month_for_issue_and_the_current_for_expiry(
    app, scheme, current, db_session
):
    # The CLI speaks the app's default language, Chinese: the operator reads these words.
    past = _run(app, "issue", "--month", previous_month(current).strftime("%Y-%m"))
    assert past.exit_code == 2 and "只能发放本月或下个月的消费券" in past.output  # current or next
    now = _run(app, "expire", "--month", current.strftime("%Y-%m"))
    assert now.exit_code == 2 and "只有已经结束的月份" in now.output  # only a month that has ended
    assert count(db_session, Voucher) == 0


def test_jobs_are_declared_for_the_scheduler(app):
    result = app.test_cli_runner().invoke(args=["scheduler", "list", "--json"])
    jobs = {row["id"]: row for row in json.loads(result.output)}
    monthly = jobs["vouchers-monthly"]  # a catch-up, often (tests/vouchers/test_jobs*.py)
    assert (monthly["trigger"], monthly["args"]) == ("interval", {"minutes": 10})
    assert jobs["vouchers-eligibility-events"]["args"] == {"minutes": 1}
    assert jobs["vouchers-verify-ledger"]["args"] == {"minutes": 60}


def test_monthly_job_expires_then_issues(scheme, current, last_months_voucher, db_session):
    from vouchers.jobs import monthly_vouchers

    result = monthly_vouchers()
    assert result[f"expire {previous_month(current):%Y-%m}"]["expired"] == 1
    assert result[f"issue {current:%Y-%m}"]["issued"] == 1
    assert db_session.get(Voucher, last_months_voucher.id).status == "expired"
    assert count(db_session, Voucher, Voucher.month == current, Voucher.status == "active") == 1
    assert_books_balance(db_session)


def test_each_district_batch_has_one_issue_entry_carrying_its_total(
    scheme, current, shenhe_elders, db_session
):
    issue_monthly(current)
    by_district = {}
    for v in db_session.scalars(sa.select(Voucher)):
        by_district[v.district_id] = by_district.get(v.district_id, 0) + v.face_value_fen
    entries = entries_of(db_session, "issue")
    assert len(entries) == 2  # Heping and Shenhe, one batch each
    for entry in entries:
        lines = {line.account.code: line.amount_fen for line in entry.lines}
        (district_code,) = (c for c in lines if c.startswith("district:"))
        district = scheme.world.heping if "210102" in district_code else scheme.world.shenhe
        total = by_district[district.id]
        assert lines == {district_code: -total, OUTSTANDING: total}
    assert_books_balance(db_session)


def test_a_newly_eligible_elder_queues_behind_those_already_waiting(
    scheme, current, shenhe_elders, db_session
):
    """Money that comes back to a district mid-month goes by the priority, not to whoever
    the feed happens to see first."""
    report = issue_monthly(current)
    waiting = {row["resident_id"] for row in report.left_out}
    assert waiting  # Shenhe's allocation covers two of four
    # One voucher's money comes back (a death), then a newcomer is approved.
    holder = next(
        v for v in db_session.scalars(sa.select(Voucher)) if v.district_id == scheme.world.shenhe.id
    )
    revoke_for(holder.resident_id, from_month=current, reason="death")
    process_eligibility_events()  # the scheme's own approvals so far
    newcomer = scheme.world.factory.resident(scheme.world.shenhe, birth=date(1940, 6, 1))
    scheme.assess(newcomer, "moderate")
    result = process_eligibility_events()
    assert result["issued"] == [] and newcomer.id in result["left_out"]
    assert db_session.scalar(sa.select(Voucher).where(Voucher.resident_id == newcomer.id)) is None
    # The rerun gives the money to the first in the queue, not the newcomer.
    rerun = issue_monthly(current)
    issued_to = {
        v.resident_id
        for v in db_session.scalars(sa.select(Voucher).where(Voucher.month == current))
        if v.status == "active"
    }
    assert newcomer.id not in issued_to and rerun.issued == 1
    assert_books_balance(db_session)
