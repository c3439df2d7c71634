"""Booking rules and the booking state machine (marketplace.bookings).

Times are explicit: each step takes ``now=`` so that "2 hours before the start" and "after
the start" are tested without sleeping. The fixture's providers open 08:00-18:00 every day.
"""

from __future__ import annotations

import json
import threading
from datetime import date, datetime, time, timedelta
from time import sleep

import pytest
import sqlalchemy as sa
from flask_babel import force_locale
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from eldercare import stored_text
from eldercare.accounts import User, UserRole
from eldercare.audit import AuditLog
from eldercare.db import db
from eldercare.errors import Conflict, DomainError, InvalidInput, PermissionDenied
from eldercare.notifications import Notification
from eldercare.residents import District, Resident, compose_resident_id
from eldercare.timeutil import SHANGHAI, local_today, now_utc
from marketplace import bookings, catalogue, providers
from marketplace.errors import CapacityFull, InvalidTransition, ProviderNotCertified
from marketplace.models import BOOKING_STATUSES, Booking, ProviderStaff, Service
from marketplace.sample_documents import give_required_documents

# --------------------------------------------------------------------------- helpers


def at(days: int, hour: int, minute: int = 0) -> datetime:
    """``days`` after today (Shanghai) at a Shanghai clock time."""
    return datetime.combine(
        local_today() + timedelta(days=days), time(hour, minute), tzinfo=SHANGHAI
    )


def another_elder(market, name="李桂兰", district=None):
    resident = market.factory.resident(district or market.heping, birth=date(1940, 1, 2), name=name)
    user = market.factory.user(roles=["elder"], resident=resident)
    return resident, user


def request_booking(market, start=None, *, service=None, resident=None, by=None, **extra):
    return bookings.book(
        service or market.bath,
        resident=resident or market.elder,
        booked_by=by or market.elder_user,
        slot_start=start or at(1, 10),
        **extra,
    )


def completed_booking(market, start=None, *, service=None, **extra) -> Booking:
    """A booking requested, accepted and done (marked an hour after it started)."""
    service = service or market.bath
    booking = request_booking(market, start, service=service, **extra)
    admin = market.station_admin if service.provider_id == market.station.id else market.home_admin
    bookings.accept(booking, admin)
    bookings.complete(booking, admin, now=booking.slot_start + timedelta(hours=1))
    return booking


def english(message) -> str:
    """A lazy message as an English reader sees it (outside a request the default is zh)."""
    with force_locale("en"):
        return str(message)


def counts(session) -> tuple[int, int, int]:
    """Bookings, audit rows and queued notifications: what a refusal must leave alone."""
    return tuple(
        session.scalar(sa.select(sa.func.count()).select_from(model))
        for model in (Booking, AuditLog, Notification)
    )


def refused(session, error, call):
    before = counts(session)
    with pytest.raises(error) as excinfo:
        call()
    assert counts(session) == before, "a refused booking step changed something"
    return excinfo.value


# --------------------------------------------------------------------------- booking


def test_a_booking_keeps_the_price_and_tells_the_providers_admins(market, db_session):
    booking = request_booking(market, note="  三楼，按门铃  ")
    assert booking.status == "requested"
    assert (booking.price_fen, booking.provider_id) == (8000, market.station.id)
    assert booking.slot_end - booking.slot_start == timedelta(hours=1)
    assert booking.note == "三楼，按门铃"
    row = db_session.scalar(sa.select(AuditLog).where(AuditLog.action == "booking.request"))
    assert row.object_id == str(booking.id) and row.after["price_fen"] == 8000
    assert row.after["via"] == "self"
    message = db_session.scalar(
        sa.select(Notification).where(
            Notification.dedupe_key == f"booking-requested:{booking.id}:{market.station_admin.id}"
        )
    )
    assert message is not None and "王**" in message.body and "王秀英" not in message.body

    catalogue.change_price(market.bath, 9000, actor=market.station_admin)
    assert booking.price_fen == 8000


def test_a_family_agent_books_for_the_linked_elder(market, db_session):
    booking = request_booking(market, by=market.son)
    assert booking.booked_by_user_id == market.son.id
    row = db_session.scalar(sa.select(AuditLog).where(AuditLog.action == "booking.request"))
    assert row.after["via"] == "family_agent"


def test_someone_not_linked_to_the_elder_is_refused(market, db_session):
    stranger = market.factory.user("stranger", roles=["family_agent"])
    _, neighbour = another_elder(market)
    for user in (stranger, neighbour, market.station_admin):
        refused(db_session, PermissionDenied, lambda u=user: request_booking(market, by=u))


def test_a_deceased_elder_cannot_be_booked_for(market, db_session):
    market.elder.date_of_death = market.today - timedelta(days=3)
    error = refused(db_session, InvalidInput, lambda: request_booking(market, by=market.son))
    assert "deceased" in english(error.message)


def test_the_past_and_more_than_60_days_ahead_are_refused(market, db_session):
    error = refused(
        db_session, InvalidInput, lambda: request_booking(market, now_utc() - timedelta(hours=1))
    )
    assert "slot" in error.details
    now = at(1, 9)
    refused(db_session, InvalidInput, lambda: request_booking(market, at(1, 9), now=now))
    refused(db_session, InvalidInput, lambda: request_booking(market, at(61, 10)))
    assert request_booking(market, at(60, 10)).status == "requested"


def test_outside_the_opening_hours_is_refused(market, db_session):
    for start in (at(2, 7, 30), at(2, 17, 30), at(2, 18), at(2, 20)):
        error = refused(db_session, InvalidInput, lambda s=start: request_booking(market, s))
        assert "08:00–18:00" in english(error.details["slot"])
    assert request_booking(market, at(2, 8)).status == "requested"
    assert request_booking(market, at(2, 17)).slot_end == at(2, 18)


def test_a_closed_day_is_refused_and_no_hours_means_any_time(market, db_session):
    tomorrow = providers.WEEKDAYS[(local_today() + timedelta(days=1)).weekday()]
    others = [d for d in providers.WEEKDAYS if d != tomorrow]
    market.station.opening_hours_json = json.dumps({d: [["08:00", "18:00"]] for d in others})
    error = refused(db_session, InvalidInput, lambda: request_booking(market, at(1, 10)))
    assert "closed" in english(error.details["slot"])
    market.station.opening_hours_json = None
    assert request_booking(market, at(1, 22)).status == "requested"


def test_capacity_counts_overlapping_places_and_a_cancellation_frees_one(market, db_session):
    assert market.bath.capacity_per_slot == 2
    second, second_user = another_elder(market, "李桂兰")
    third, third_user = another_elder(market, "赵玉珍")
    first = request_booking(market, at(3, 10))
    request_booking(market, at(3, 10, 30), resident=second, by=second_user)  # overlaps
    error = refused(
        db_session,
        CapacityFull,
        lambda: request_booking(market, at(3, 10), resident=third, by=third_user),
    )
    assert error.details == {"capacity_per_slot": 2}
    # The next hour is free for both; a declined booking holds no place either.
    request_booking(market, at(3, 11, 30), resident=third, by=third_user)
    bookings.cancel(first, market.elder_user, "plans changed", now=at(2, 10))
    assert request_booking(market, at(3, 10), resident=third, by=third_user).status == "requested"


def test_the_same_elder_cannot_book_the_same_service_twice_at_once(market, db_session):
    request_booking(market, at(2, 9))
    refused(db_session, Conflict, lambda: request_booking(market, at(2, 9, 30)))
    assert request_booking(market, at(2, 9, 30), service=market.meals).status == "requested"


def test_a_suspended_or_lapsed_provider_is_refused(market, db_session):
    providers.suspend(market.station, "inspection found problems")
    refused(db_session, ProviderNotCertified, lambda: request_booking(market))
    providers.reinstate(market.station, "fixed")
    assert request_booking(market, at(2, 10)).status == "requested"
    market.station.certified_until = market.today - timedelta(days=1)
    refused(db_session, ProviderNotCertified, lambda: request_booking(market, at(3, 10)))


def test_an_inactive_service_is_refused(market, db_session):
    catalogue.set_active(market.bath, False)
    error = refused(db_session, InvalidInput, lambda: request_booking(market))
    assert "not offered" in english(error.message)


def test_home_services_must_come_to_the_elders_district(market, db_session):
    tiexi = market.factory.district("210106", "铁西区")
    resident, user = another_elder(market, "孙淑芬", district=tiexi)
    refused(db_session, InvalidInput, lambda: request_booking(market, resident=resident, by=user))
    # A care institution's stay: the elder moves there, wherever they live now.
    stay = request_booking(market, at(5, 9), service=market.stay, resident=resident, by=user)
    assert stay.slot_end - stay.slot_start == timedelta(days=bookings.MONTH_DAYS)


def test_slot_lengths_follow_the_unit(market, db_session):
    meal = request_booking(market, at(2, 11, 30), service=market.meals)
    assert meal.slot_end - meal.slot_start == timedelta(hours=1)
    day_service = catalogue.add_service(
        market.institution,
        actor=market.institution_admin,
        category_code="day_care",
        title="日间照料",
        description="",
        unit="day",
        price_fen=6000,
        capacity_per_slot=5,
        districts=[market.heping],
        delivery_place="provider",
    )
    day = request_booking(market, at(2, 8, 30), service=day_service)
    assert day.slot_end == datetime.combine(
        local_today() + timedelta(days=3), time(0), tzinfo=SHANGHAI
    )
    hourly = catalogue.add_service(
        market.home,
        actor=market.home_admin,
        category_code="cleaning",
        title="钟点保洁",
        description="",
        unit="hour",
        price_fen=4000,
        capacity_per_slot=1,
        districts=[market.heping],
        delivery_place="home",
    )
    two_hours = request_booking(market, at(2, 9), service=hourly, slot_end=at(2, 11))
    assert two_hours.slot_end == at(2, 11)
    refused(
        db_session,
        InvalidInput,
        lambda: request_booking(market, at(3, 9), service=hourly, slot_end=at(3, 10, 30)),
    )
    refused(
        db_session,
        InvalidInput,
        lambda: request_booking(market, at(3, 8), service=hourly, slot_end=at(3, 17)),
    )  # 9 h
    refused(
        db_session,
        InvalidInput,  # a visit's length is the unit's, not the caller's
        lambda: request_booking(market, at(3, 9), service=market.bath, slot_end=at(3, 11)),
    )


def test_a_time_without_a_zone_is_refused(market, db_session):
    naive = datetime.combine(local_today() + timedelta(days=1), time(10))
    refused(db_session, InvalidInput, lambda: request_booking(market, naive))


# --------------------------------------------------------------------------- transitions


def test_accept_and_decline_by_the_providers_staff_only(market, db_session):
    booking = request_booking(market)
    refused(db_session, PermissionDenied, lambda: bookings.accept(booking, market.home_admin))
    refused(db_session, PermissionDenied, lambda: bookings.accept(booking, market.elder_user))
    caregiver = market.factory.user("caregiver.chen", roles=["provider_staff"])
    db_session.add(ProviderStaff(provider_id=market.station.id, user_id=caregiver.id))
    db_session.flush()
    bookings.accept(booking, caregiver)
    assert booking.status == "accepted" and booking.decided_at is not None
    told = db_session.scalars(
        sa.select(Notification.recipient_user_id).where(
            Notification.dedupe_key.like(f"booking-accepted:{booking.id}:%")
        )
    ).all()
    assert sorted(told) == sorted([market.elder_user.id, market.son.id])
    refused(
        db_session,
        InvalidTransition,
        lambda: bookings.decline(booking, market.station_admin, "too late"),
    )


def test_declining_needs_a_reason(market, db_session):
    booking = request_booking(market)
    error = refused(
        db_session, InvalidInput, lambda: bookings.decline(booking, market.station_admin, "  ")
    )
    assert "reason" in error.details
    bookings.decline(booking, market.station_admin, "no bathing staff that day")
    assert (booking.status, booking.cancel_reason) == ("declined", "no bathing staff that day")
    refused(db_session, InvalidTransition, lambda: bookings.accept(booking, market.station_admin))


def test_a_suspended_provider_cannot_accept(market, db_session):
    booking = request_booking(market)
    providers.suspend(market.station, "inspection")
    refused(
        db_session, ProviderNotCertified, lambda: bookings.accept(booking, market.station_admin)
    )
    bookings.decline(booking, market.station_admin, "we are suspended")  # may still release it


def test_the_elder_cancels_until_two_hours_before_the_start(market, db_session):
    booking = request_booking(market)
    bookings.accept(booking, market.station_admin)
    limit = booking.slot_start - bookings.ELDER_CANCEL_NOTICE
    assert bookings.ELDER_CANCEL_NOTICE == timedelta(hours=2)
    error = refused(
        db_session, InvalidTransition, lambda: bookings.cancel(booking, market.son, now=limit)
    )
    assert "2 hours" in english(error.message)
    assert not bookings.can_cancel_as_elder(booking, limit)
    assert bookings.can_cancel_as_elder(booking, limit - timedelta(minutes=1))
    bookings.cancel(booking, market.son, now=limit - timedelta(minutes=1))
    assert (booking.status, booking.cancelled_by_user_id) == ("cancelled", market.son.id)
    assert booking.cancel_reason is None  # the elder's side need not say why
    refused(
        db_session,
        InvalidTransition,
        lambda: bookings.cancel(booking, market.elder_user, now=limit - timedelta(hours=5)),
    )


def test_the_provider_cancels_until_the_start_with_a_reason(market, db_session):
    booking = request_booking(market)
    bookings.accept(booking, market.station_admin)
    start = booking.slot_start
    refused(
        db_session,
        InvalidInput,
        lambda: bookings.cancel(
            booking, market.station_admin, "", now=start - timedelta(minutes=5)
        ),
    )
    refused(
        db_session,
        InvalidTransition,
        lambda: bookings.cancel(booking, market.station_admin, "ill", now=start),
    )
    refused(
        db_session,
        PermissionDenied,
        lambda: bookings.cancel(
            booking, market.home_admin, "not ours", now=start - timedelta(hours=3)
        ),
    )
    bookings.cancel(
        booking, market.station_admin, "caregiver ill", now=start - timedelta(minutes=5)
    )
    assert booking.status == "cancelled" and booking.cancel_reason == "caregiver ill"
    assert db_session.scalar(
        sa.select(Notification.id).where(
            Notification.dedupe_key == f"booking-cancelled:{booking.id}:{market.elder_user.id}"
        )
    )


def test_complete_only_an_accepted_booking_after_it_started(market, db_session):
    booking = request_booking(market)
    start = booking.slot_start
    refused(
        db_session,
        InvalidTransition,
        lambda: bookings.complete(booking, market.station_admin, now=start + timedelta(hours=1)),
    )  # still requested
    bookings.accept(booking, market.station_admin)
    refused(
        db_session,
        InvalidTransition,
        lambda: bookings.complete(booking, market.station_admin, now=start - timedelta(minutes=1)),
    )
    refused(
        db_session,
        PermissionDenied,
        lambda: bookings.complete(booking, market.home_admin, now=start),
    )
    refused(
        db_session,
        InvalidTransition,  # nobody cancels once it started
        lambda: bookings.cancel(booking, market.station_admin, "x", now=start),
    )
    bookings.complete(booking, market.station_admin, now=start)
    assert booking.status == "completed" and booking.completed_at == start
    row = db_session.scalar(sa.select(AuditLog).where(AuditLog.action == "booking.complete"))
    assert row.before == {"status": "accepted"} and row.after == {"status": "completed"}
    refused(
        db_session,
        InvalidTransition,
        lambda: bookings.cancel(booking, market.elder_user, now=start - timedelta(days=1)),
    )


# --------------------------------------------------------------------------- reminders


def test_the_reminder_goes_the_day_before_once(market, db_session):
    tomorrow = request_booking(market, at(1, 10))
    bookings.accept(tomorrow, market.station_admin)
    request_booking(market, at(1, 12), service=market.meals)  # requested only: no reminder
    later = request_booking(market, at(2, 10))
    bookings.accept(later, market.station_admin)

    result = bookings.remind_upcoming_bookings()
    assert result == {"bookings": 1, "queued": 2}
    messages = db_session.scalars(
        sa.select(Notification).where(Notification.dedupe_key.like("booking-reminder:%"))
    ).all()
    assert {m.recipient_user_id for m in messages} == {market.elder_user.id, market.son.id}
    assert {m.dedupe_key for m in messages} == {
        f"booking-reminder:{tomorrow.id}:{market.elder_user.id}",
        f"booking-reminder:{tomorrow.id}:{market.son.id}",
    }
    body = messages[0].body
    assert "王**" in body and "王秀英" not in body
    # Stored as a code: each reader reads it in their own language.
    assert "明天 10:00" in stored_text.render(body, "zh_CN")
    assert "tomorrow at 10:00" in stored_text.render(body, "en")

    assert bookings.remind_upcoming_bookings() == {"bookings": 1, "queued": 0}
    # The next evening it is the later booking's turn.
    assert bookings.remind_upcoming_bookings(now=at(1, 18))["queued"] == 2


def test_the_reminder_is_a_daily_job_at_six_in_the_evening(app):
    jobs = {job.id: job for job in app.extensions["scheduled_jobs"]}
    job = jobs["marketplace.remind_bookings"]
    assert job.func is bookings.remind_upcoming_bookings
    assert (job.trigger, job.trigger_args) == ("cron", {"hour": 18, "minute": 0})


# --------------------------------------------------------------------------- state machine

NEXT = {  # action -> {status before: status after}
    "accept": {"requested": "accepted"},
    "decline": {"requested": "declined"},
    "cancel_elder": {"requested": "cancelled", "accepted": "cancelled"},
    "cancel_provider": {"requested": "cancelled", "accepted": "cancelled"},
    "complete": {"accepted": "completed"},
}


def test_booking_state_machine(market, db_session):
    """Any sequence of steps follows the diagram; a refused step changes nothing."""
    reached = set()

    class Lifecycle(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.savepoint = db_session.begin_nested()
            self.booking = request_booking(market, at(1, 10))
            self.start = self.booking.slot_start
            self.status = "requested"
            reached.add(self.status)

        def teardown(self):
            self.savepoint.rollback()

        def _snapshot(self):
            b = self.booking
            return (
                b.status,
                b.decided_at,
                b.cancel_reason,
                b.cancelled_by_user_id,
                b.completed_at,
                counts(db_session)[1],
            )

        def _attempt(self, action, call, legal_extra=True):
            before = self._snapshot()
            legal = self.status in NEXT[action] and legal_extra
            try:
                call()
            except DomainError:
                assert not legal, f"{action} from {self.status} should have worked"
                assert self._snapshot() == before, f"refused {action} changed something"
                return
            assert legal, f"{action} from {self.status} should have been refused"
            self.status = NEXT[action][self.status]
            reached.add(self.status)
            assert self._snapshot()[-1] == before[-1] + 1  # exactly one audit row

        def _staff(self, outsider):
            return market.home_admin if outsider else market.station_admin

        @rule(outsider=st.booleans(), late=st.sampled_from([False, False, True]))
        def accept(self, outsider, late):
            now = self.start + (timedelta(minutes=10) if late else -timedelta(days=1))
            self._attempt(
                "accept",
                lambda: bookings.accept(self.booking, self._staff(outsider), now=now),
                legal_extra=not outsider and not late,
            )

        @rule(
            outsider=st.sampled_from([False, False, True]),
            reason=st.sampled_from(["", " ", "fully booked"]),
        )
        def decline(self, outsider, reason):
            self._attempt(
                "decline",
                lambda: bookings.decline(
                    self.booking, self._staff(outsider), reason, now=self.start - timedelta(days=1)
                ),
                legal_extra=not outsider and bool(reason.strip()),
            )

        @rule(hours_before=st.sampled_from([26, 3, 2, 1, -1]), son=st.booleans())
        def cancel_elder(self, hours_before, son):
            who = market.son if son else market.elder_user
            now = self.start - timedelta(hours=hours_before)
            self._attempt(
                "cancel_elder",
                lambda: bookings.cancel(self.booking, who, "plans changed", now=now),
                legal_extra=hours_before > 2,
            )

        @rule(
            minutes_before=st.sampled_from([60, 1, 0, -30]),
            reason=st.sampled_from(["", "caregiver ill"]),
            outsider=st.booleans(),
        )
        def cancel_provider(self, minutes_before, reason, outsider):
            now = self.start - timedelta(minutes=minutes_before)
            self._attempt(
                "cancel_provider",
                lambda: bookings.cancel(self.booking, self._staff(outsider), reason, now=now),
                legal_extra=minutes_before > 0 and bool(reason) and not outsider,
            )

        @rule(minutes_after=st.sampled_from([-60, -1, 0, 90]), outsider=st.booleans())
        def complete(self, minutes_after, outsider):
            now = self.start + timedelta(minutes=minutes_after)
            self._attempt(
                "complete",
                lambda: bookings.complete(self.booking, self._staff(outsider), now=now),
                legal_extra=minutes_after >= 0 and not outsider,
            )

        @rule(data=st.data())
        def advance(self, data):
            """A step forward from where the booking is, so that runs reach every state (the
            other rules try anything, legal or not, and cancel often enough)."""
            if self.status == "requested":
                if data.draw(st.sampled_from(["accept", "accept", "decline"])) == "accept":
                    self.accept(outsider=False, late=False)
                else:
                    self.decline(outsider=False, reason="fully booked")
            elif self.status == "accepted":
                self.complete(minutes_after=90, outsider=False)
            # declined, cancelled or completed: nothing moves it any more

        @invariant()
        def fields_match_the_state(self):
            b = self.booking
            assert b.status == self.status
            assert (b.completed_at is not None) == (b.status == "completed")
            if b.status != "cancelled":  # a cancelled booking may or may not have been decided
                assert (b.decided_at is not None) == (b.status != "requested")
            assert (b.cancelled_by_user_id is not None) == (b.status == "cancelled")
            if b.status == "declined":
                assert b.cancel_reason

    run_state_machine_as_test(
        Lifecycle, settings=settings(max_examples=80, stateful_step_count=15, deadline=None)
    )
    assert reached == set(BOOKING_STATUSES), f"runs never reached {set(BOOKING_STATUSES) - reached}"


# --------------------------------------------------------------------------- PostgreSQL


def _committed_world(app, elders: int):
    """A certified station with a bathing service of 2 places, one already taken, and
    ``elders`` more elders who each want the last place (ids only: threads load their own)."""
    from eldercare.credit_codes import compose_credit_code

    with app.app_context():
        district = District(code="219901", name_zh="测试区", name_en="Test District")
        db.session.add(district)
        db.session.flush()

        def user(name, resident=None, role="elder"):
            account = User(
                username=name,
                display_name=name,
                password_hash="x",
                resident_id=resident.id if resident else None,
            )
            account.role_rows = [UserRole(role=role)]
            db.session.add(account)
            db.session.flush()
            return account

        admin = user("station.admin", role="provider_admin")
        station = providers.apply_provider(
            applicant=admin,
            name="测试养老服务站",
            credit_code=compose_credit_code("52", "219901", "TC000001"),
            type="community_station",
            district=district,
            address="测试路 1 号",
            latitude=41.77,
            longitude=123.43,
            service_districts=[district],
            contact_name="联系人",
            contact_phone="13800001111",
            bank_account_name="测试",
            bank_name="盛京银行",
            bank_account_number="6222000011112222",
        )
        give_required_documents(station, uploader=admin)
        providers.approve(station)
        service = catalogue.add_service(
            station,
            actor=admin,
            category_code="bathing",
            title="上门助浴",
            description="",
            unit="visit",
            price_fen=8000,
            capacity_per_slot=2,
            districts=[district],
            delivery_place="home",
        )
        residents = []
        for i in range(elders + 1):
            birth = date(1940, 1, 1) + timedelta(days=i)
            resident = Resident(
                id_number=compose_resident_id("219901", birth, 101 + i),
                name=f"老人{i}",
                birth_date=birth,
                district_id=district.id,
                street="街道",
                address="地址",
            )
            db.session.add(resident)
            db.session.flush()
            residents.append((resident.id, user(f"elder{i}", resident).id))
        first_resident, first_user = residents.pop(0)
        bookings.book(
            service,
            resident=db.session.get(Resident, first_resident),
            booked_by=db.session.get(User, first_user),
            slot_start=at(1, 10),
        )
        db.session.commit()
        ids = service.id, residents
        db.session.remove()
    return ids


@pytest.mark.postgres
def test_ten_elders_race_for_the_last_place_and_one_gets_it(private_app):
    app = private_app
    service_id, elders = _committed_world(app, 10)
    outcomes = []

    def try_to_book(resident_id, user_id):
        with app.app_context():
            try:
                bookings.book(
                    db.session.get(Service, service_id),
                    resident=db.session.get(Resident, resident_id),
                    booked_by=db.session.get(User, user_id),
                    slot_start=at(1, 10),
                )
                db.session.commit()
                outcomes.append("booked")
            except CapacityFull:
                db.session.rollback()
                outcomes.append("full")
            except Exception as error:  # anything else is a failure the test must show
                db.session.rollback()
                outcomes.append(repr(error))
            finally:
                db.session.remove()

    with app.app_context():
        engine = db.engine
    with engine.connect() as holder:
        # Hold the service row so that all ten requests are in flight before any can count.
        holder.execute(sa.select(Service.id).where(Service.id == service_id).with_for_update())
        threads = [threading.Thread(target=try_to_book, args=pair) for pair in elders]
        for thread in threads:
            thread.start()
        sleep(0.5)
        holder.rollback()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(outcomes) == ["booked"] + ["full"] * 9, outcomes
    with app.app_context():
        held = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(Booking)
            .where(Booking.service_id == service_id, Booking.status == "requested")
        )
        db.session.remove()
    assert held == 2
