"""The catalogue's rules: what a provider may offer, at what price, where; price history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from eldercare.audit import AuditLog
from eldercare.errors import InvalidInput, NotFound
from marketplace import catalogue
from marketplace.models import MAX_PRICE_FEN, Booking, Service, ServicePrice


def _add(market, provider=None, admin=None, **overrides):
    arguments = {
        "category_code": "meal_help",
        "title": "晚餐送餐",
        "description": "送到家门口",
        "unit": "meal",
        "price_fen": 1800,
        "capacity_per_slot": 10,
        "districts": [market.heping],
        "delivery_place": "home",
    }
    arguments.update(overrides)
    return catalogue.add_service(
        provider or market.station, actor=admin or market.station_admin, **arguments
    )


def _count(db_session, model) -> int:
    return db_session.scalar(sa.select(sa.func.count()).select_from(model))


def test_a_service_is_added_with_its_first_price_and_an_audit_row(market, db_session):
    service = _add(market, title="  晚餐送餐  ")
    assert service.id is not None
    assert service.title == "晚餐送餐"
    assert service.active
    assert [d.id for d in service.districts] == [market.heping.id]
    prices = db_session.scalars(
        sa.select(ServicePrice).where(ServicePrice.service_id == service.id)
    ).all()
    assert [(p.price_fen, p.set_by_user_id) for p in prices] == [(1800, market.station_admin.id)]
    row = db_session.scalar(
        sa.select(AuditLog).where(
            AuditLog.action == "service.create", AuditLog.object_id == str(service.id)
        )
    )
    assert row.after == {
        "title": "晚餐送餐",
        "category": "meal_help",
        "price_fen": 1800,
        "delivery_place": "home",
    }


@pytest.mark.parametrize(
    ("who", "category"),
    [
        ("home", "long_term_stay"),  # a home-service company has no beds
        ("station", "respite_stay"),
        ("institution", "cleaning"),  # home cleaning is for stations and home services
        ("institution", "home_repair"),
        ("station", "massage"),  # not a category at all
        ("station", ""),
    ],
)
def test_a_category_the_provider_type_may_not_offer_is_refused(market, db_session, who, category):
    provider = getattr(market, who)
    admin = getattr(market, f"{who}_admin")
    before = _count(db_session, Service)
    with pytest.raises(InvalidInput) as excinfo:
        _add(market, provider, admin, category_code=category)
    assert set(excinfo.value.details) == {"category_code"}
    assert _count(db_session, Service) == before


def test_allowed_categories_follow_the_policy_data(market):
    assert (
        _add(
            market,
            market.institution,
            market.institution_admin,
            category_code="respite_stay",
            unit="day",
        ).category.code
        == "respite_stay"
    )
    assert (
        _add(market, market.home, market.home_admin, category_code="home_repair").category.code
        == "home_repair"
    )


@pytest.mark.parametrize(
    "price",
    [0, -100, MAX_PRICE_FEN + 1, 10**12, 35.5, 3500.0, True, False, "3500", None],
)
def test_impossible_prices_are_refused_and_nothing_saved(market, db_session, price):
    services, prices = _count(db_session, Service), _count(db_session, ServicePrice)
    with pytest.raises(InvalidInput) as excinfo:
        _add(market, price_fen=price)
    assert set(excinfo.value.details) == {"price_fen"}
    assert (_count(db_session, Service), _count(db_session, ServicePrice)) == (services, prices)


def test_the_highest_price_allowed_is_fifty_thousand_yuan(market):
    assert _add(market, price_fen=MAX_PRICE_FEN).price_fen == 5_000_000
    assert _add(market, price_fen=1).price_fen == 1


def test_districts_must_be_among_those_the_provider_serves(market, db_session):
    dadong = market.factory.district("210104", "大东区")
    for districts in ([dadong], [market.heping, dadong], []):
        with pytest.raises(InvalidInput) as excinfo:
            _add(market, districts=districts)
        assert set(excinfo.value.details) == {"districts"}
    assert _add(market, districts=[market.heping, market.shenhe]).districts


def test_every_problem_is_named_at_once(market):
    with pytest.raises(InvalidInput) as excinfo:
        _add(
            market,
            category_code="long_term_stay",
            title=" ",
            unit="week",
            price_fen=-1,
            capacity_per_slot=0,
            districts=[],
        )
    assert set(excinfo.value.details) == {
        "category_code",
        "title",
        "unit",
        "price_fen",
        "capacity_per_slot",
        "districts",
    }


@pytest.mark.parametrize("capacity", [0, 501, True, 2.0, "3"])
def test_capacity_is_a_whole_number_from_1_to_500(market, capacity):
    with pytest.raises(InvalidInput) as excinfo:
        _add(market, capacity_per_slot=capacity)
    assert set(excinfo.value.details) == {"capacity_per_slot"}


def test_price_history_answers_for_any_moment(market, db_session):
    service = _add(market, price_fen=1500)
    catalogue.change_price(service, 1800, actor=market.station_admin)
    catalogue.change_price(service, 2000, actor=market.station_admin)
    assert service.price_fen == 2000
    rows = db_session.scalars(
        sa.select(ServicePrice)
        .where(ServicePrice.service_id == service.id)
        .order_by(ServicePrice.id)
    ).all()
    assert [r.price_fen for r in rows] == [1500, 1800, 2000]
    # The three changes happened within a millisecond; give them days apart to ask about.
    t1 = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
    t2 = datetime(2026, 3, 1, 0, 0, tzinfo=UTC)
    t3 = datetime(2026, 6, 1, 0, 0, tzinfo=UTC)
    for row, when in zip(rows, (t1, t2, t3), strict=True):
        row.effective_from = when
    db_session.flush()

    assert catalogue.price_on(service.id, t1 + timedelta(days=10)) == 1500
    assert catalogue.price_on(service.id, t2 - timedelta(seconds=1)) == 1500
    assert catalogue.price_on(service.id, t2) == 1800  # a new price holds from its moment
    assert catalogue.price_on(service.id, t2 + timedelta(days=30)) == 1800
    assert catalogue.price_on(service.id, t3 + timedelta(days=1)) == 2000
    with pytest.raises(NotFound):
        catalogue.price_on(service.id, t1 - timedelta(seconds=1))


def test_the_same_price_again_adds_no_history(market, db_session):
    service = _add(market, price_fen=1500)
    catalogue.change_price(service, 1500, actor=market.station_admin)
    count = db_session.scalar(
        sa.select(sa.func.count()).where(ServicePrice.service_id == service.id)
    )
    assert count == 1


def test_a_bad_new_price_changes_nothing(market, db_session):
    service = _add(market, price_fen=1500)
    for bad in (0, -5, 12.5, True, MAX_PRICE_FEN + 1):
        with pytest.raises(InvalidInput):
            catalogue.change_price(service, bad, actor=market.station_admin)
    assert service.price_fen == 1500
    count = db_session.scalar(
        sa.select(sa.func.count()).where(ServicePrice.service_id == service.id)
    )
    assert count == 1


def test_a_booking_keeps_the_price_it_was_made_at(market, db_session):
    service = market.bath  # 80 yuan a visit
    booked_at = datetime(2026, 2, 1, 1, 0, tzinfo=UTC)
    first = db_session.scalar(sa.select(ServicePrice).where(ServicePrice.service_id == service.id))
    first.effective_from = booked_at - timedelta(days=30)
    booking = Booking(
        service_id=service.id,
        provider_id=service.provider_id,
        resident_id=market.elder.id,
        booked_by_user_id=market.elder_user.id,
        slot_start=booked_at + timedelta(days=3),
        slot_end=booked_at + timedelta(days=3, hours=1),
        price_fen=service.price_fen,
        created_at=booked_at,
    )
    db_session.add(booking)
    db_session.flush()

    catalogue.change_price(service, 9500, actor=market.station_admin)
    db_session.flush()
    db_session.refresh(booking)
    assert service.price_fen == 9500
    assert booking.price_fen == 8000
    assert catalogue.price_on(service.id, booking.created_at) == booking.price_fen


def test_deactivating_a_service_is_audited_once(market, db_session):
    catalogue.set_active(market.bath, False)
    catalogue.set_active(market.bath, False)
    assert market.bath.active is False
    rows = db_session.scalars(
        sa.select(AuditLog).where(
            AuditLog.action == "service.active", AuditLog.object_id == str(market.bath.id)
        )
    ).all()
    assert [r.after for r in rows] == [{"active": False}]


def test_beds_are_for_care_institutions_only(market):
    catalogue.set_beds(market.institution, total=120, free=7)
    assert (market.institution.beds_total, market.institution.beds_free) == (120, 7)
    with pytest.raises(InvalidInput) as excinfo:
        catalogue.set_beds(market.station, total=10, free=5)
    assert "beds_total" in excinfo.value.details
    for total, free in ((120, 121), (120, -1), (0, 0), (True, 1), (120, 5.0)):
        with pytest.raises(InvalidInput):
            catalogue.set_beds(market.institution, total=total, free=free)
    assert (market.institution.beds_total, market.institution.beds_free) == (120, 7)
