"""search_services: the 15-minute circle around an elder, its edges, filters and order.

The ``market`` fixture (conftest.py) has real coordinates around 三好街; the providers these
tests add are placed at a chosen bearing and distance from a centre, so each edge is exact.
"""

from __future__ import annotations

import itertools
import math
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from eldercare.credit_codes import compose_credit_code
from eldercare.db import db
from eldercare.errors import InvalidInput
from eldercare.timeutil import SHANGHAI
from marketplace import catalogue, providers, voucher_scope
from marketplace.models import Booking, ProviderStaff, Review
from marketplace.sample_documents import give_required_documents
from marketplace.search import Result, is_open, search_services
from tests.marketplace.conftest import ELDER_HOME
from tests.marketplace.test_geo import WULIHE, destination, law_of_cosines_m

MONDAY_10 = datetime(2026, 11, 23, 10, 0, tzinfo=SHANGHAI)  # a Monday morning in Shenyang
MONDAY_20 = datetime(2026, 11, 23, 20, 0, tzinfo=SHANGHAI)
SATURDAY_10 = datetime(2026, 11, 28, 10, 0, tzinfo=SHANGHAI)
WORKDAYS = {day: [["08:00", "18:00"]] for day in ("mon", "tue", "wed", "thu", "fri")}
_serial = itertools.count(1)


def place(
    market,
    name,
    at,
    *,
    bearing=0.0,
    distance_m=0.0,
    type="community_station",
    hours=WORKDAYS,
    approve=True,
    districts=None,
    beds=None,
):
    """A provider ``distance_m`` from ``at`` along ``bearing``, with its administrator."""
    n = next(_serial)
    lat, lng = destination(*at, bearing, distance_m)
    admin = market.factory.user(f"search.admin{n}", roles=["provider_admin"])
    provider = providers.apply_provider(
        applicant=admin,
        name=name,
        type=type,
        district=market.heping,
        credit_code=compose_credit_code("52", market.heping.code, f"TX{n:06d}"),
        address=f"{name} 地址",
        latitude=lat,
        longitude=lng,
        service_districts=districts or [market.heping, market.shenhe],
        contact_name="联系人",
        contact_phone="13800002222",
        bank_account_name=name,
        bank_name="盛京银行",
        bank_account_number="6222000011113333",
        opening_hours=hours,
        beds_total=beds if type == "care_institution" else None,
    )
    if approve:
        give_required_documents(provider, uploader=admin)
        providers.approve(provider, today=market.today)
    return provider


def admin_of(provider):
    staff = db.session.scalar(
        sa.select(ProviderStaff).where(
            ProviderStaff.provider_id == provider.id, ProviderStaff.is_admin
        )
    )
    return staff.user


def offer(provider, category="meal_help", title=None, price_fen=2000, unit="visit", districts=None):
    return catalogue.add_service(
        provider,
        actor=admin_of(provider),
        category_code=category,
        title=title or f"{provider.name} {category}",
        description="",
        unit=unit,
        price_fen=price_fen,
        capacity_per_slot=1,
        districts=districts or list(provider.service_districts),
        delivery_place="home" if unit in ("visit", "hour") else "provider",
    )


def review(market, db_session, service, rating):
    """A rating the way reviews arise: on a completed booking of the service."""
    start = datetime(2026, 11, 2, 2, 0, tzinfo=UTC)
    booking = Booking(
        service_id=service.id,
        provider_id=service.provider_id,
        resident_id=market.elder.id,
        booked_by_user_id=market.elder_user.id,
        slot_start=start,
        slot_end=start + timedelta(hours=1),
        status="completed",
        price_fen=service.price_fen,
        completed_at=start + timedelta(hours=1),
    )
    db_session.add(booking)
    db_session.flush()
    db_session.add(
        Review(
            booking_id=booking.id,
            provider_id=service.provider_id,
            rating=rating,
            created_by_user_id=market.elder_user.id,
        )
    )
    db_session.flush()


def titles(results: list[Result]) -> list[str]:
    return [r.service.title for r in results]


@pytest.fixture
def scope(app):
    """Set the voucher scope for a test (None: the marketplace's default), then restore."""
    key = voucher_scope._EXTENSION
    before = app.extensions.get(key)

    def _set(function):
        if function is None:
            app.extensions.pop(key, None)
        else:
            voucher_scope.register_voucher_scope(app, function)

    yield _set
    if before is None:
        app.extensions.pop(key, None)
    else:
        app.extensions[key] = before


# --------------------------------------------------------------------------- the circle


def test_the_fifteen_minute_circle_around_the_elders_home(market):
    results = search_services(lat=ELDER_HOME[0], lng=ELDER_HOME[1], today=market.today)
    # The community station is about 250 m away, the home-service company about 994 m: both
    # inside the default 1 km. The care home by the Imperial Palace (about 3 km) is not.
    assert set(titles(results)) == {"社区助餐（午餐）", "上门助浴", "居家保洁 2 小时", "上门理发"}
    by_title = {r.service.title: r for r in results}
    # 三好街 -> 南湖 station: 211 m north, 133 m west: 249.5 m.
    assert by_title["社区助餐（午餐）"].distance_m == pytest.approx(249.5, abs=1)
    # 三好街 -> the home-service company: 878 m north, 464 m west: 993.5 m.
    assert by_title["居家保洁 2 小时"].distance_m == pytest.approx(993.5, abs=1)
    for r in results:
        expected = law_of_cosines_m(ELDER_HOME, (r.provider.latitude, r.provider.longitude))
        assert r.distance_m == pytest.approx(expected, abs=0.01)
    distances = [r.distance_m for r in results]
    assert distances == sorted(distances)
    assert {r.provider.id for r in results[:2]} == {market.station.id}


def test_a_wider_radius_reaches_the_care_home_three_km_away(market):
    results = search_services(
        lat=ELDER_HOME[0], lng=ELDER_HOME[1], radius_m=5000, today=market.today
    )
    stay = next(r for r in results if r.service.id == market.stay.id)
    # 三好街 -> 沈阳故宫: 3,029 m (test_geo.py).
    assert stay.distance_m == pytest.approx(3029, abs=1)
    assert results[-1].service.id == market.stay.id


def test_radius_edges_999_in_1001_out(market):
    inside = place(market, "九九九米站", WULIHE, bearing=90, distance_m=999)
    outside = place(market, "一千零一米站", WULIHE, bearing=200, distance_m=1001)
    edge = place(market, "正好一千米站", WULIHE, bearing=0, distance_m=1000)
    for provider in (inside, outside, edge):
        offer(provider, title=provider.name)

    results = search_services(lat=WULIHE[0], lng=WULIHE[1], radius_m=1000, today=market.today)
    assert titles(results) == ["九九九米站", "正好一千米站"]
    assert results[0].distance_m == pytest.approx(999, abs=0.01)
    assert results[1].distance_m == pytest.approx(1000, abs=0.01)

    wider = search_services(lat=WULIHE[0], lng=WULIHE[1], radius_m=1001.01, today=market.today)
    assert titles(wider) == ["九九九米站", "正好一千米站", "一千零一米站"]


def test_the_default_radius_comes_from_the_configuration(app, market):
    far = place(market, "一千五百米站", WULIHE, bearing=300, distance_m=1500)
    offer(far, title=far.name)
    assert titles(search_services(lat=WULIHE[0], lng=WULIHE[1], today=market.today)) == []
    app.config["SEARCH_DEFAULT_RADIUS_M"] = 2000
    try:
        found = search_services(lat=WULIHE[0], lng=WULIHE[1], today=market.today)
    finally:
        del app.config["SEARCH_DEFAULT_RADIUS_M"]
    assert titles(found) == ["一千五百米站"]


def test_nearest_first_then_paged(market):
    for metres in (700, 100, 400, 250):
        provider = place(market, f"{metres}米", WULIHE, bearing=metres % 360, distance_m=metres)
        offer(provider, title=f"{metres}米")
    results = search_services(lat=WULIHE[0], lng=WULIHE[1], today=market.today)
    assert titles(results) == ["100米", "250米", "400米", "700米"]
    page2 = search_services(lat=WULIHE[0], lng=WULIHE[1], limit=2, offset=2, today=market.today)
    assert titles(page2) == ["400米", "700米"]


def test_sort_by_price_and_by_rating(market, db_session):
    near = place(market, "近站", WULIHE, bearing=10, distance_m=100)
    middle = place(market, "中站", WULIHE, bearing=20, distance_m=300)
    far = place(market, "远站", WULIHE, bearing=30, distance_m=600)
    dear = offer(near, title="贵", price_fen=9000)
    cheap = offer(middle, title="便宜", price_fen=1000)
    unrated = offer(far, title="没评价", price_fen=5000)
    for rating in (3, 4):  # 3.5 on average
        review(market, db_session, dear, rating)
    for rating in (5, 4, 5):  # 4.67
        review(market, db_session, cheap, rating)

    by_price = search_services(lat=WULIHE[0], lng=WULIHE[1], sort="price", today=market.today)
    assert titles(by_price) == ["便宜", "没评价", "贵"]
    by_rating = search_services(lat=WULIHE[0], lng=WULIHE[1], sort="rating", today=market.today)
    assert titles(by_rating) == ["便宜", "贵", "没评价"]
    rated = {r.service.id: r for r in by_rating}
    assert rated[cheap.id].rating_avg == pytest.approx(14 / 3)
    assert isinstance(rated[cheap.id].rating_avg, float)
    assert rated[cheap.id].rating_count == 3
    assert rated[dear.id].rating_avg == pytest.approx(3.5)
    assert rated[unrated.id].rating_avg is None
    assert rated[unrated.id].rating_count == 0


# --------------------------------------------------------------------------- filters


def test_filter_by_category_and_highest_price(market):
    at = ELDER_HOME
    meals = search_services(lat=at[0], lng=at[1], category="meal_help", today=market.today)
    assert titles(meals) == ["社区助餐（午餐）"]
    # Prices: meals 15, haircut 30, bath 80, cleaning 120 yuan. The highest price counts.
    upto_30 = search_services(lat=at[0], lng=at[1], max_price_fen=3000, today=market.today)
    assert set(titles(upto_30)) == {"社区助餐（午餐）", "上门理发"}
    below_30 = search_services(lat=at[0], lng=at[1], max_price_fen=2999, today=market.today)
    assert titles(below_30) == ["社区助餐（午餐）"]


def test_filter_by_rating_counts_reviews_per_provider(market, db_session):
    review(market, db_session, market.meals, 5)
    review(market, db_session, market.bath, 4)  # the station: 4.5 over two reviews
    review(market, db_session, market.cleaning, 3)  # the home-service company: 3.0
    at = ELDER_HOME
    four = search_services(lat=at[0], lng=at[1], min_rating=4, today=market.today)
    assert set(titles(four)) == {"社区助餐（午餐）", "上门助浴"}
    assert {(r.rating_avg, r.rating_count) for r in four} == {(4.5, 2)}
    three = search_services(lat=at[0], lng=at[1], min_rating=3, today=market.today)
    assert len(three) == 4
    assert search_services(lat=at[0], lng=at[1], min_rating=4.6, today=market.today) == []


def test_filter_by_the_bureaus_stars(market):
    providers.set_star_level(market.station, 4, "2025 evaluation")
    providers.set_star_level(market.home, 2, "2025 evaluation")
    at = ELDER_HOME
    assert {
        r.provider.id
        for r in search_services(lat=at[0], lng=at[1], min_stars=3, today=market.today)
    } == {market.station.id}
    assert len(search_services(lat=at[0], lng=at[1], min_stars=2, today=market.today)) == 4
    assert search_services(lat=at[0], lng=at[1], min_stars=5, today=market.today) == []


def test_filter_by_vouchers_with_the_default_scope(market, scope):
    scope(None)  # without a voucher policy, the programme's own categories count
    at = ELDER_HOME
    covered = search_services(lat=at[0], lng=at[1], accepts_vouchers=True, today=market.today)
    assert set(titles(covered)) == {"社区助餐（午餐）", "上门助浴", "居家保洁 2 小时"}
    assert all(r.accepts_vouchers for r in covered)
    others = search_services(lat=at[0], lng=at[1], accepts_vouchers=False, today=market.today)
    assert titles(others) == ["上门理发"]  # hairdressing is outside the programme
    assert len(search_services(lat=at[0], lng=at[1], today=market.today)) == 4


def _source(scope_on, kind_held=lambda resident_id, day: None):
    return voucher_scope.VoucherScopeSource(scope_on=scope_on, kind_held=kind_held, label=str)


def test_filter_by_vouchers_asks_the_registered_policy_with_the_day(market, scope):
    asked = []

    def only_meals_from_december(day):
        asked.append(day)
        return {"home": frozenset({"meal_help"} if day.month == 12 else ())}

    scope(_source(only_meals_from_december))
    at = ELDER_HOME
    december = market.today.replace(month=12, day=1)
    results = search_services(lat=at[0], lng=at[1], accepts_vouchers=True, today=december)
    assert titles(results) == ["社区助餐（午餐）"]
    assert results[0].voucher_kinds == ("home",)
    # Asked once per search, for every kind at once (never per service or category), about
    # the day searched for.
    assert asked == [december]
    november = market.today.replace(month=11, day=30)
    assert search_services(lat=at[0], lng=at[1], accepts_vouchers=True, today=november) == []


def test_the_badge_and_filter_speak_of_the_kinds_asked_about(market, scope):
    scope(_source(lambda day: {"home": frozenset({"meal_help"}), "inst": frozenset({"bathing"})}))
    at = ELDER_HOME
    anyone = {r.service.title: r.voucher_kinds for r in search_services(lat=at[0], lng=at[1])}
    assert anyone["社区助餐（午餐）"] == ("home",) and anyone["上门助浴"] == ("inst",)
    assert anyone["上门理发"] == ()
    home = search_services(lat=at[0], lng=at[1], accepts_vouchers=True, voucher_kinds={"home"})
    assert titles(home) == ["社区助餐（午餐）"]
    inst = search_services(lat=at[0], lng=at[1], accepts_vouchers=False, voucher_kinds={"inst"})
    assert "社区助餐（午餐）" in titles(inst) and "上门助浴" not in titles(inst)


def test_open_now_in_shanghai_time(market):
    weekday_only = place(market, "工作日站", WULIHE, bearing=45, distance_m=300)
    every_day = place(
        market,
        "每天站",
        WULIHE,
        bearing=90,
        distance_m=400,
        hours={d: [["08:00", "18:00"]] for d in providers.WEEKDAYS},
    )
    no_hours = place(market, "没写时间", WULIHE, bearing=135, distance_m=500, hours=None)
    for provider in (weekday_only, every_day, no_hours):
        offer(provider, title=provider.name)

    def open_at(moment):
        return titles(
            search_services(lat=WULIHE[0], lng=WULIHE[1], open_at=moment, today=market.today)
        )

    assert open_at(MONDAY_10) == ["工作日站", "每天站"]  # open 08:00-18:00: open at 10:00
    assert open_at(MONDAY_20) == []  # closed at 20:00
    assert open_at(SATURDAY_10) == ["每天站"]
    # The same moments in UTC: 02:00 UTC is 10:00 in Shanghai, 12:00 UTC is 20:00.
    assert open_at(MONDAY_10.astimezone(UTC)) == ["工作日站", "每天站"]
    assert open_at(MONDAY_20.astimezone(UTC)) == []
    # Without the filter everyone is listed, each saying whether it is open then.
    listed = search_services(lat=WULIHE[0], lng=WULIHE[1], today=market.today)
    assert [r.open_now is None for r in listed] == [False, False, True]


def test_opening_hours_include_the_start_and_exclude_the_end():
    hours = {"mon": [["08:00", "12:00"], ["13:30", "18:00"]]}
    assert is_open(hours, MONDAY_10.replace(hour=8, minute=0)) is True
    assert is_open(hours, MONDAY_10.replace(hour=11, minute=59)) is True
    assert is_open(hours, MONDAY_10.replace(hour=12, minute=0)) is False
    assert is_open(hours, MONDAY_10.replace(hour=13, minute=15)) is False
    assert is_open(hours, MONDAY_10.replace(hour=17, minute=59)) is True
    assert is_open(hours, MONDAY_10.replace(hour=18, minute=0)) is False
    assert is_open(hours, MONDAY_10 + timedelta(days=1)) is False  # Tuesday: not listed
    assert is_open({}, MONDAY_10) is None
    with pytest.raises(ValueError):
        is_open(hours, datetime(2026, 11, 23, 10, 0))  # naive: refused


def test_filter_by_provider_type(market):
    at = ELDER_HOME
    homes = search_services(lat=at[0], lng=at[1], provider_type="home_service", today=market.today)
    assert {r.provider.id for r in homes} == {market.home.id}
    institutions = search_services(
        lat=at[0], lng=at[1], radius_m=5000, provider_type="care_institution", today=market.today
    )
    assert titles(institutions) == ["长期入住（双人间）"]


def test_filter_by_the_district_the_service_is_offered_in(market):
    dadong = market.factory.district("210104", "大东区")
    market.home.service_districts.append(dadong)
    only_dadong = offer(market.home, category="home_repair", title="只在大东区", districts=[dadong])
    at = ELDER_HOME
    heping = search_services(lat=at[0], lng=at[1], district_id=market.heping.id, today=market.today)
    assert only_dadong.id not in {r.service.id for r in heping}
    assert len(heping) == 4
    in_dadong = search_services(lat=at[0], lng=at[1], district_id=dadong.id, today=market.today)
    assert titles(in_dadong) == ["只在大东区"]


# --------------------------------------------------------------------------- never listed


def test_suspended_revoked_expired_and_unapproved_providers_never_appear(market):
    applied = place(market, "还没批准", ELDER_HOME, bearing=0, distance_m=50, approve=False)
    rejected = place(market, "被拒绝", ELDER_HOME, bearing=90, distance_m=60, approve=False)
    for provider in (applied, rejected):
        offer(provider, title=provider.name)
    providers.reject(rejected, "documents missing")
    at = ELDER_HOME

    def found():
        return {
            r.provider.id
            for r in search_services(lat=at[0], lng=at[1], radius_m=5000, today=market.today)
        }

    assert found() == {market.station.id, market.home.id, market.institution.id}
    providers.suspend(market.station, "no-shows")
    providers.revoke(market.home, "fraud")
    assert found() == {market.institution.id}

    last_day = market.institution.certified_until
    on_last_day = search_services(lat=at[0], lng=at[1], radius_m=5000, today=last_day)
    assert {r.provider.id for r in on_last_day} == {market.institution.id}
    day_after = last_day + timedelta(days=1)
    assert search_services(lat=at[0], lng=at[1], radius_m=5000, today=day_after) == []


def test_inactive_services_never_appear(market):
    catalogue.set_active(market.bath, False)
    at = ELDER_HOME
    assert "上门助浴" not in titles(search_services(lat=at[0], lng=at[1], today=market.today))
    catalogue.set_active(market.bath, True)
    assert "上门助浴" in titles(search_services(lat=at[0], lng=at[1], today=market.today))


# --------------------------------------------------------------------------- how it asks


def test_three_queries_however_many_providers(market, db_session):
    for metres in (100, 200, 300, 400, 500, 600):
        provider = place(market, f"站{metres}", WULIHE, bearing=metres / 2, distance_m=metres)
        service = offer(provider)
        review(market, db_session, service, 4)
    db_session.flush()
    statements = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    bind = db_session.get_bind()
    sa.event.listen(bind, "before_cursor_execute", count)
    try:
        results = search_services(lat=WULIHE[0], lng=WULIHE[1], sort="rating", today=market.today)
        # Everything a result card shows is loaded already.
        shown = [(r.service.category.name_zh, r.provider.name, r.open_now) for r in results]
    finally:
        sa.event.remove(bind, "before_cursor_execute", count)
    assert len(shown) == 6
    # The services in the box, their ratings, and the voucher policies in force (which
    # categories a voucher pays for).
    assert len(statements) == 3, statements


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"lat": 999, "lng": 123.4}, "location"),
        ({"lat": 41.8, "lng": math.nan}, "location"),
        ({"lat": True, "lng": 123.4}, "location"),
        ({"radius_m": -5}, "radius"),
        ({"radius_m": 0}, "radius"),
        ({"radius_m": 100_000}, "radius"),
        ({"category": "massage"}, "category"),
        ({"max_price_fen": -100}, "max_price"),
        ({"max_price_fen": 12.5}, "max_price"),
        ({"min_rating": 6}, "min_rating"),
        ({"min_stars": 0}, "min_stars"),
        ({"open_at": datetime(2026, 11, 23, 10, 0)}, "open_at"),
        ({"provider_type": "hospital"}, "provider_type"),
        ({"sort": "name"}, "sort"),
        ({"limit": 0}, "page"),
        ({"offset": -1}, "page"),
    ],
)
def test_bad_arguments_are_refused_by_name(market, arguments, field):
    query = {"lat": ELDER_HOME[0], "lng": ELDER_HOME[1], **arguments}
    with pytest.raises(InvalidInput) as excinfo:
        search_services(**query)
    assert field in excinfo.value.details
