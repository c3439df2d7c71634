"""The eligibility feed: eligibility that begins on a later day (an exclusion that ends, the
minimum age), an event whose handling fails (parked for the bureau, the rest go on), and a
transient error (the run stops and is retried)."""

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from assessment.eligibility import add_exclusion, eligible_from, end_exclusion, record_death
from eldercare.accounts import User
from eldercare.audit import AuditLog
from eldercare.db import db
from eldercare.demo import build_demo
from eldercare.errors import Conflict
from eldercare.timeutil import local_today
from tests.confirm_helpers import asks_first, confirmed
from vouchers.issuance import eligibility_feed
from vouchers.issuance import monthly as issuance
from vouchers.issuance.eligibility_feed import process_eligibility_events, retry_parked
from vouchers.issuance.monthly import month_of
from vouchers.models import (
    EligibilityStart,
    EventCursor,
    JournalEntry,
    ParkedEvent,
    Voucher,
    VoucherPolicy,
)
from vouchers.pool import ledger
from vouchers.pool.kinds import choose_kind


@pytest.fixture
def on_day(monkeypatch):
    """Make the voucher side believe today is ``day`` (the feed and issuance ask
    ``local_today``; assessment is always given its date)."""

    def move_to(day: date) -> date:
        for module in (eligibility_feed, issuance):
            monkeypatch.setattr(module, "local_today", lambda at=None, day=day: day)
        return day

    return move_to


def voucher_of(resident, month=None):
    statement = sa.select(Voucher).where(
        Voucher.resident_id == resident.id, Voucher.status != "revoked"
    )
    if month is not None:
        statement = statement.where(Voucher.month == month)
    return db.session.scalar(statement)


def newcomer(scheme, birth=date(1941, 4, 2)):
    return scheme.world.factory.resident(scheme.world.heping, birth=birth)


# --- defect 7: eligibility that begins on a later day ------------------------------------


def test_a_fixed_term_exclusion_gives_the_voucher_on_the_day_it_ends(scheme, on_day, db_session):
    elder = newcomer(scheme)
    today = scheme.today
    add_exclusion(
        elder,
        "basic_upgrade_project",
        today - timedelta(days=40),
        end_date=today + timedelta(days=2),
    )
    scheme.assess(elder, "moderate")
    first = process_eligibility_events()
    assert elder.id not in first["issued"] and voucher_of(elder) is None  # excluded today

    on_day(today + timedelta(days=2))  # the last day of the exclusion: still nothing
    process_eligibility_events()
    assert voucher_of(elder) is None

    day = on_day(today + timedelta(days=3))
    result = process_eligibility_events()
    voucher = voucher_of(elder)
    assert voucher is not None and voucher.month == month_of(day)
    assert result["issued"] == [voucher.id]
    again = process_eligibility_events()
    assert (
        again["issued"] == []
        and db_session.scalar(
            sa.select(sa.func.count()).select_from(Voucher).where(Voucher.resident_id == elder.id)
        )
        == 1
    )


def test_an_exclusion_ended_for_a_future_day_gives_the_voucher_on_that_day(
    scheme, on_day, db_session
):
    elder = newcomer(scheme)
    today = scheme.today
    exclusion = add_exclusion(elder, "extremely_poor_support", today - timedelta(days=90))
    scheme.assess(elder, "moderate")
    process_eligibility_events()
    end_exclusion(exclusion.id, today + timedelta(days=4))  # the support stops after the 4th day
    process_eligibility_events()
    assert voucher_of(elder) is None

    day = on_day(today + timedelta(days=5))
    result = process_eligibility_events()
    voucher = voucher_of(elder)
    assert voucher is not None and voucher.month == month_of(day)
    assert result["issued"] == [voucher.id]


def test_an_elder_turning_60_gets_the_voucher_on_the_birthday(scheme, on_day, db_session):
    today = scheme.today
    birthday = today + timedelta(days=9)
    elder = newcomer(scheme, birth=birthday.replace(year=birthday.year - 60))
    scheme.assess(elder, "moderate")
    process_eligibility_events()
    assert voucher_of(elder) is None  # 59 today
    assert (
        db_session.scalar(
            sa.select(EligibilityStart.due_on).where(EligibilityStart.resident_id == elder.id)
        )
        == birthday
    )

    on_day(birthday - timedelta(days=1))
    process_eligibility_events()
    assert voucher_of(elder) is None

    on_day(birthday)
    result = process_eligibility_events()
    voucher = voucher_of(elder)
    assert voucher is not None and voucher.month == month_of(birthday)
    assert result["issued"] == [voucher.id]
    start = db_session.scalar(
        sa.select(EligibilityStart).where(EligibilityStart.resident_id == elder.id)
    )
    assert start.handled_at is not None and start.outcome == "issued"


def test_a_start_that_no_longer_holds_on_the_day_issues_nothing(scheme, on_day, db_session):
    """Judged again on the day: an elder who died meanwhile gets nothing."""
    today = scheme.today
    birthday = today + timedelta(days=6)
    elder = newcomer(scheme, birth=birthday.replace(year=birthday.year - 60))
    scheme.assess(elder, "moderate")
    process_eligibility_events()
    record_death(elder, today, today=today)
    process_eligibility_events()
    on_day(birthday)
    process_eligibility_events()
    assert voucher_of(elder) is None
    start = db_session.scalar(
        sa.select(EligibilityStart).where(EligibilityStart.resident_id == elder.id)
    )
    assert start.outcome == "not_eligible"


def test_eligible_from_counts_only_days_on_the_calendar(scheme, db_session):
    today = scheme.today
    elder = newcomer(scheme)
    scheme.assess(elder, "moderate")
    assert eligible_from(elder.id, today) == today
    first = add_exclusion(elder, "basic_upgrade_project", today, end_date=today + timedelta(3))
    # Back to back: the second exclusion begins the day the first one ends.
    add_exclusion(
        elder, "extremely_poor_support", today + timedelta(4), end_date=today + timedelta(10)
    )
    assert eligible_from(elder.id, today) == today + timedelta(days=11)
    end_exclusion(first.id, today + timedelta(days=1))
    assert eligible_from(elder.id, today) == today + timedelta(days=2)
    add_exclusion(elder, "concentrated_care_subsidy", today)  # open-ended
    assert eligible_from(elder.id, today) is None


# --- defect 8: one bad event must not block the feed -------------------------------------


def _poison(scheme, elder):
    """An elder whose event fails for good: the institutional kind is chosen, and no
    institutional policy is in force (its last version ended today, in the data)."""
    choose_kind(elder, "institutional", actor=None, in_institution=True)
    version = db.session.scalar(
        sa.select(VoucherPolicy).where(
            VoucherPolicy.kind == "institutional", VoucherPolicy.effective_to.is_(None)
        )
    )
    version.effective_to = scheme.today
    db.session.flush()
    return version


def test_a_failing_event_is_parked_and_the_events_after_it_are_handled(
    scheme, client, login, db_session
):
    balances = ledger.balances()
    process_eligibility_events()  # the scheme's own elder gets this month's voucher
    poisoned, fine = newcomer(scheme), newcomer(scheme, birth=date(1942, 7, 7))
    version = _poison(scheme, poisoned)
    scheme.assess(poisoned, "moderate")
    scheme.assess(fine, "moderate")
    record_death(scheme.elder, scheme.today, today=scheme.today)

    result = process_eligibility_events()
    assert result["processed"] == 3
    assert [p["resident_id"] for p in result["parked"]] == [poisoned.id]
    assert voucher_of(fine) is not None  # the event after it was handled
    assert (
        db_session.scalar(sa.select(Voucher.status).where(Voucher.resident_id == scheme.elder.id))
        == "revoked"
    )
    parked = db_session.scalar(sa.select(ParkedEvent))
    assert parked.resident_id == poisoned.id and parked.resolved_at is None
    assert "policy" in parked.error
    # Its savepoint took back whatever it had done; the fine elder's voucher and the death's
    # return are the only money that moved.
    moved = {k: v - balances.get(k, 0) for k, v in ledger.balances().items()}
    assert moved["vouchers:outstanding"] == voucher_of(fine).face_value_fen
    cursor = db_session.get(EventCursor, "eligibility")
    assert cursor.last_event_id == result["last_event_id"] >= parked.event_id

    # The bureau sees it, in its language.
    login(scheme.approver)
    page = client.get("/vouchers/bureau/parked-events", headers={"Accept-Language": "en"})
    html = page.get_data(as_text=True)
    assert page.status_code == 200 and f'id="parked-{parked.id}"' in html
    assert "No voucher policy is in force" in html

    # Retried before the data is fixed: still parked, the error kept, nothing issued.
    response = client.post(f"/vouchers/bureau/parked-events/{parked.id}/retry")
    assert response.status_code == 422
    db_session.refresh(parked)
    assert parked.resolved_at is None and parked.attempts == 2 and voucher_of(poisoned) is None

    version.effective_to = None  # the data is put right
    db.session.flush()
    response = client.post(f"/vouchers/bureau/parked-events/{parked.id}/retry")
    assert response.status_code == 302
    db_session.refresh(parked)
    assert parked.resolution == "handled" and parked.resolved_by_user_id == scheme.approver.id
    voucher = voucher_of(poisoned)
    assert voucher is not None and voucher.kind == "institutional"
    audit = db_session.scalar(sa.select(AuditLog).where(AuditLog.action == "parked_event.handled"))
    assert audit is not None and audit.object_id == str(parked.id)


def test_a_parked_event_can_be_dismissed_with_a_reason(scheme, client, login, db_session):
    poisoned = newcomer(scheme)
    _poison(scheme, poisoned)
    scheme.assess(poisoned, "moderate")
    process_eligibility_events()
    parked = db_session.scalar(sa.select(ParkedEvent))
    login(scheme.approver)
    empty = client.post(f"/vouchers/bureau/parked-events/{parked.id}/dismiss", data={"note": " "})
    assert empty.status_code == 422
    db_session.refresh(parked)
    assert parked.resolved_at is None
    # Issue 14 item 7: dismissing is for good, so the first POST only asks.
    url = f"/vouchers/bureau/parked-events/{parked.id}/dismiss"
    note = {"note": "入住机构，已由机构补贴覆盖"}
    asks_first(client, url, note, "Dismiss the event", "never applies this event")
    db_session.refresh(parked)
    assert parked.resolved_at is None
    done = client.post(url, data=confirmed(note))
    assert done.status_code == 302
    db_session.refresh(parked)
    assert parked.resolution == "dismissed" and parked.resolution_note.startswith("入住机构")
    assert (
        db_session.scalar(sa.select(AuditLog).where(AuditLog.action == "parked_event.dismissed"))
        is not None
    )
    again = client.post(f"/vouchers/bureau/parked-events/{parked.id}/retry")
    assert again.status_code == 409  # settled already: nothing happens twice


def test_a_parked_event_of_another_district_is_not_found(scheme, client, login, db_session):
    shenhe_elder = scheme.world.factory.resident(scheme.world.shenhe, birth=date(1940, 1, 5))
    _poison(scheme, shenhe_elder)
    scheme.assess(shenhe_elder, "moderate")
    process_eligibility_events()
    parked = db_session.scalar(sa.select(ParkedEvent))
    heping_officer = scheme.world.factory.user(
        "heping.officer2", roles=["bureau_officer"], district=scheme.heping
    )
    login(heping_officer)
    assert f'id="parked-{parked.id}"' not in client.get("/vouchers/bureau/parked-events").get_data(
        as_text=True
    )
    assert client.post(f"/vouchers/bureau/parked-events/{parked.id}/retry").status_code == 404


def test_retry_parked_refuses_a_settled_event(scheme, db_session):
    poisoned = newcomer(scheme)
    _poison(scheme, poisoned)
    scheme.assess(poisoned, "moderate")
    process_eligibility_events()
    parked = db_session.scalar(sa.select(ParkedEvent))
    parked.resolved_at, parked.resolution = parked.parked_at, "dismissed"
    with pytest.raises(Conflict):
        retry_parked(parked.id, actor=scheme.approver)


# --- on PostgreSQL, committed for real ----------------------------------------------------


def _demo_with_a_new_death(app):
    """The demo city with its own events handled, then 王秀英's death recorded (committed)."""
    with app.app_context():
        build_demo()
        process_eligibility_events()
        db.session.commit()
        wang = db.session.scalar(sa.select(User).where(User.username == "elder.wang")).resident
        voucher_id = db.session.scalar(
            sa.select(Voucher.id).where(Voucher.resident_id == wang.id, Voucher.status == "active")
        )
        record_death(wang, local_today(), today=local_today())
        db.session.commit()
        cursor = db.session.get(EventCursor, "eligibility").last_event_id
        db.session.remove()
        return voucher_id, cursor


@pytest.mark.postgres
def test_a_transient_error_stops_the_run_and_the_event_is_retried(private_app):
    """A lock that cannot be had is not the event's fault: the run stops before it (nothing
    parked, the cursor not past it) and the next run handles it."""
    voucher_id, cursor_before = _demo_with_a_new_death(private_app)
    with private_app.app_context(), db.engine.connect() as other:
        other.execute(
            sa.text("SELECT id FROM vouchers WHERE id = :id FOR UPDATE"), {"id": voucher_id}
        )
        db.session.execute(sa.text("SET lock_timeout = '200ms'"))
        with pytest.raises(sa.exc.OperationalError):
            process_eligibility_events()
        db.session.rollback()
        other.rollback()  # the lock goes: the cause of the failure is over
        db.session.execute(sa.text("SET lock_timeout = 0"))
        assert db.session.get(EventCursor, "eligibility").last_event_id == cursor_before
        assert db.session.scalar(sa.select(sa.func.count()).select_from(ParkedEvent)) == 0
        result = process_eligibility_events()
        db.session.commit()
        assert result["revoked"] == [voucher_id] and result["parked"] == []
        assert db.session.get(Voucher, voucher_id).status == "revoked"
        db.session.remove()


@pytest.mark.postgres
def test_two_feed_runs_at_once_handle_each_event_once(private_app):
    voucher_id, cursor_before = _demo_with_a_new_death(private_app)
    with private_app.app_context():
        resident = db.session.scalar(sa.select(Voucher.resident_id).where(Voucher.id == voucher_id))
        db.session.remove()
    start = threading.Barrier(2)

    def run():
        with private_app.app_context():
            try:
                start.wait()
                result = process_eligibility_events()
                db.session.commit()
                return result
            finally:
                db.session.remove()

    with ThreadPoolExecutor(2) as threads:
        results = list(threads.map(lambda _: run(), range(2)))
    assert sorted(r["processed"] for r in results) == [0, 1]
    assert [v for r in results for v in r["revoked"]] == [voucher_id]
    with private_app.app_context():
        revokes = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(JournalEntry)
            .where(JournalEntry.kind == "revoke", JournalEntry.cause_id == str(voucher_id))
        )
        assert revokes == 1 and ledger.verify_ledger().ok
        assert db.session.get(EventCursor, "eligibility").last_event_id > cursor_before
        assert resident is not None
        db.session.remove()
