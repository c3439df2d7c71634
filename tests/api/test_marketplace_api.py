"""The marketplace operations of /api/v1: the public reference, the city's mini-program acting
for an elder, and a provider's own software, with real tokens against the real services.

The ``market`` fixture (tests/marketplace/conftest.py) has real coordinates around 三好街:
the community station about 250 m from the elder's home, the home-service company about
994 m, the care home by the Imperial Palace about 3 km. Its providers open 08:00-18:00.
"""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta

import pytest
import sqlalchemy as sa
from openapi_spec_validator import validate

from eldercare.audit import AuditLog
from eldercare.credit_codes import compose_credit_code
from eldercare.timeutil import SHANGHAI, local_today
from eldercare.tokens import issue_token
from marketplace import bookings, providers
from marketplace.models import (
    Booking,
    Complaint,
    Provider,
    Review,
    Service,
    ServiceCategory,
    ServicePrice,
)
from marketplace.schemas import MarketplaceSearchPageSchema
from tests.marketplace import conftest as marketplace_fixtures
from tests.marketplace.conftest import ELDER_HOME
from tests.marketplace.test_geo import destination

# The marketplace tests' fixture, used here by name.
market = marketplace_fixtures.market

HOME = {"lat": ELDER_HOME[0], "lng": ELDER_HOME[1]}


class Api:
    """Calls /api/v1 with a token and a language."""

    def __init__(self, client):
        self.client = client

    def call(self, method, url, secret=None, *, lang="en", json=None, query=None):
        headers = {"Accept-Language": lang} if lang else {}
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
        return self.client.open(url, method=method, headers=headers, json=json, query_string=query)

    def get(self, url, secret=None, **kwargs):
        return self.call("GET", url, secret, **kwargs)

    def post(self, url, secret=None, **kwargs):
        return self.call("POST", url, secret, **kwargs)

    def put(self, url, secret=None, **kwargs):
        return self.call("PUT", url, secret, **kwargs)


@pytest.fixture
def api(client):
    return Api(client)


def settle(db_session):
    """Keep what the test built: an error response rolls back everything uncommitted."""
    db_session.commit()


@pytest.fixture
def token(market, db_session):
    """A token acting as ``user``, with ``scopes``."""

    def _issue(user, scopes=("read", "elders:write")):  # the mini-program's token
        _token, secret = issue_token(user, "Test client", list(scopes))
        settle(db_session)
        return secret

    return _issue


def at(days: int, hour: int) -> datetime:
    """``days`` after today (Shanghai) at ``hour`` o'clock, Shanghai time."""
    return datetime.combine(local_today() + timedelta(days=days), time(hour), tzinfo=SHANGHAI)


def booking_body(market, service=None, resident=None, start=None, **changes):
    body = {
        "service_id": (service or market.bath).id,
        "resident_id": (resident or market.elder).id,
        "slot_start": (start or at(1, 10)).isoformat(),
        "note": "三楼，按门铃",
    }
    return body | changes


def requested(market, service=None, start=None):
    """A booking request made through the service, as the elder."""
    return bookings.book(
        service or market.bath,
        resident=market.elder,
        booked_by=market.elder_user,
        slot_start=start or at(1, 10),
    )


def started_and_accepted(market, service=None):
    """An accepted booking whose time began yesterday at 10:00 (booked and accepted at 07:00)."""
    service = service or market.bath
    start = at(-1, 10)
    before = start - timedelta(hours=3)
    booking = bookings.book(
        service,
        resident=market.elder,
        booked_by=market.elder_user,
        slot_start=start,
        now=before,
    )
    admin = market.station_admin if service.provider_id == market.station.id else market.home_admin
    bookings.accept(booking, admin, now=before)
    return booking


def another_elder(market, name="李桂兰"):
    return market.factory.resident(market.heping, birth=date(1940, 1, 2), name=name)


def count(db_session, model, *where) -> int:
    return db_session.scalar(sa.select(sa.func.count()).select_from(model).where(*where))


# --- the OpenAPI document ---------------------------------------------------------------

PATHS = {
    "/api/v1/service-categories": {"get"},
    "/api/v1/providers/search": {"get"},
    "/api/v1/providers/{provider_id}": {"get"},
    "/api/v1/services/{service_id}": {"get"},
    "/api/v1/bookings": {"get", "post"},
    "/api/v1/bookings/{booking_id}": {"get"},
    "/api/v1/bookings/{booking_id}/cancel": {"post"},
    "/api/v1/bookings/{booking_id}/review": {"post"},
    "/api/v1/complaints": {"get", "post"},
    "/api/v1/provider/bookings": {"get"},
    "/api/v1/provider/bookings/{booking_id}/accept": {"post"},
    "/api/v1/provider/bookings/{booking_id}/decline": {"post"},
    "/api/v1/provider/bookings/{booking_id}/complete": {"post"},
    "/api/v1/provider/bookings/{booking_id}/cancel": {"post"},
    "/api/v1/provider/services": {"get", "post"},
    "/api/v1/provider/services/{service_id}/price": {"post"},
    "/api/v1/provider/services/{service_id}/active": {"post"},
    "/api/v1/provider/beds": {"put"},
}


def test_openapi_document_validates_and_describes_the_marketplace_operations(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    validate(spec)
    for path, methods in PATHS.items():
        assert path in spec["paths"], path
        operations = {m: op for m, op in spec["paths"][path].items() if m in methods}
        assert set(operations) == methods, path
        for method, operation in operations.items():
            assert operation["security"] == [{"bearerAuth": []}], (path, method)
            assert {"401", "403"} <= set(operation["responses"]), (path, method)
    book = spec["paths"]["/api/v1/bookings"]["post"]
    assert book["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/MarketplaceBookingRequest"
    }
    assert book["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ApiError"
    }
    assert "201" in book["responses"] and "409" in book["responses"]
    schemas = spec["components"]["schemas"]
    assert schemas["MarketplaceReviewRequest"]["properties"]["rating"]["type"] == "integer"
    assert schemas["MarketplacePriceChange"]["properties"]["price_fen"]["type"] == "integer"
    assert schemas["MarketplaceServiceSummary"]["properties"]["price_fen"]["type"] == "integer"
    public = set(schemas["MarketplaceProvider"]["properties"])
    assert not {p for p in public if "bank" in p or "phone" in p or "credit" in p}
    search = spec["paths"]["/api/v1/providers/search"]["get"]
    required = {p["name"] for p in search["parameters"] if p.get("required")}
    assert required == {"lat", "lng"}


# --- reference data and search ----------------------------------------------------------


def test_the_categories_in_order_with_what_vouchers_cover(api, market, token):
    response = api.get("/api/v1/service-categories", token(market.elder_user))
    assert response.status_code == 200
    body = response.get_json()
    assert [c["code"] for c in body][:3] == ["meal_help", "bathing", "cleaning"]
    by_code = {c["code"]: c for c in body}
    assert by_code["bathing"]["requires_caregiver_certificate"] is True
    assert by_code["meal_help"]["accepts_vouchers"] is True
    assert by_code["hairdressing"]["accepts_vouchers"] is False
    assert by_code["long_term_stay"]["provider_types"] == ["care_institution"]


def test_search_finds_the_fifteen_minute_circle_nearest_first(api, market, token):
    response = api.get("/api/v1/providers/search", token(market.elder_user), query=HOME)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    items = body["items"]
    assert [i["service"]["title"] for i in items][2:] == ["居家保洁 2 小时", "上门理发"]
    assert {i["provider"]["id"] for i in items[:2]} == {market.station.id}
    distances = [i["distance_m"] for i in items]
    assert distances == sorted(distances)
    assert distances[0] == pytest.approx(249.5, abs=1)
    assert distances[-1] == pytest.approx(993.5, abs=1)
    assert body["has_more"] is False and (body["limit"], body["offset"]) == (50, 0)
    haircut = items[-1]
    assert haircut["service"]["price_fen"] == 3000 and haircut["accepts_vouchers"] is False
    assert haircut["rating"] == {"average": None, "count": 0}
    assert haircut["provider"]["district"] == "210102"
    assert "bank_account_number" not in haircut["provider"]
    assert "6222000011112222" not in response.get_data(as_text=True)


def test_the_search_page_is_exactly_what_its_schema_documents(api, market, token, db_session):
    """The search answer is sent without a marshmallow dump (for speed): passing it through
    the documented schema must change nothing, no field more, none less, no type other."""
    booking = bookings.book(
        market.meals, resident=market.elder, booked_by=market.elder_user, slot_start=at(1, 11)
    )
    review_row = Review(
        booking_id=booking.id, provider_id=market.station.id, rating=4,
        created_by_user_id=market.elder_user.id,
    )  # fmt: skip
    db_session.add(review_row)
    settle(db_session)
    secret = token(market.elder_user)
    body = api.get("/api/v1/providers/search", secret, query=HOME | {"radius_m": 5000}).get_json()
    assert len(body["items"]) == 5
    assert body["items"][0]["rating"] == {"average": 4.0, "count": 1}
    assert MarketplaceSearchPageSchema().dump(body) == body
    dumped = json.loads(json.dumps(MarketplaceSearchPageSchema().dump(body)))
    assert dumped == body


def test_a_suspended_provider_is_not_found_at_once(api, market, token, db_session):
    providers.suspend(market.station, "消防检查未通过")
    secret = token(market.elder_user)
    body = api.get("/api/v1/providers/search", secret, query=HOME | {"radius_m": 5000}).get_json()
    assert market.station.id not in {i["provider"]["id"] for i in body["items"]}
    assert [i["service"]["id"] for i in body["items"]] == [
        market.cleaning.id,
        market.haircut.id,
        market.stay.id,  # the care home, 3,029 m away
    ]
    assert body["items"][-1]["distance_m"] == pytest.approx(3029, abs=1)


@pytest.mark.parametrize(
    "filters, titles",
    [
        ({"category": "meal_help"}, ["社区助餐（午餐）"]),
        ({"accepts_vouchers": "false"}, ["上门理发"]),
        ({"max_price_fen": 3000}, ["社区助餐（午餐）", "上门理发"]),
        ({"sort": "price"}, ["社区助餐（午餐）", "上门理发", "上门助浴", "居家保洁 2 小时"]),
        ({"district": "210103", "provider_type": "home_service"}, ["居家保洁 2 小时", "上门理发"]),
    ],
)
def test_search_filters(api, market, token, filters, titles):
    response = api.get("/api/v1/providers/search", token(market.elder_user), query=HOME | filters)
    assert response.status_code == 200, response.get_json()
    assert [i["service"]["title"] for i in response.get_json()["items"]] == titles


def test_search_pages(api, market, token):
    secret = token(market.elder_user)
    first = api.get("/api/v1/providers/search", secret, query=HOME | {"limit": 3}).get_json()
    last = api.get(
        "/api/v1/providers/search", secret, query=HOME | {"limit": 3, "offset": 3}
    ).get_json()
    assert len(first["items"]) == 3 and first["has_more"] is True
    assert [i["service"]["id"] for i in last["items"]] == [market.haircut.id]
    assert last["has_more"] is False


def _providers_around(market, db_session, centre, count, districts, body):
    """``count`` listed providers within 400 m of ``centre``, each in its own district (in
    turn), two services each, half of them with opening hours."""
    categories = db_session.scalars(
        sa.select(ServiceCategory.code).order_by(ServiceCategory.code)
    ).all()
    hours = json.dumps({d: [["08:00", "18:00"]] for d in providers.WEEKDAYS})
    for i in range(count):
        lat, lng = destination(*centre, i * 360 / count, 50 + 10 * i)
        district = districts[i % len(districts)]
        provider = Provider(
            name=f"{body} {i}",
            credit_code=compose_credit_code("52", district.code, f"{body}{i:06d}"),
            type="community_station",
            status="active",
            certified_until=market.today + timedelta(days=30),
            district=district,
            address="地址",
            latitude=lat,
            longitude=lng,
            contact_name="联系人",
            contact_phone="13800001111",
            bank_account_name="b",
            bank_name="盛京银行",
            bank_account_number="6222000011112222",
            opening_hours_json=hours if i % 2 else None,
        )
        db_session.add(provider)
        db_session.flush()
        for code in (categories[i % len(categories)], categories[(i + 1) % len(categories)]):
            db_session.add(
                Service(
                    provider_id=provider.id,
                    category_code=code,
                    title=f"{code} {i}",
                    unit="visit",
                    price_fen=1000 + i,
                    delivery_place="home",
                )
            )
    settle(db_session)


def test_one_search_asks_the_same_statements_for_3_providers_as_for_30(
    api, market, token, db_session
):
    """No statement per result (a provider's district, its rating, its category's voucher
    scope): a search costs the same number of round trips however many it finds."""
    districts = [market.factory.district(f"2101{n}") for n in range(11, 21)]
    few, many = (41.85, 123.30), (41.70, 123.55)  # far from the market and from each other
    _providers_around(market, db_session, few, 3, districts[:3], "QA")
    _providers_around(market, db_session, many, 30, districts, "QB")
    secret = token(market.elder_user)
    api.get("/api/v1/providers/search", secret, query={"lat": 41.0, "lng": 123.0})  # last used

    def statements_of(centre):
        db_session.expunge_all()  # as a request's fresh session: nothing loaded yet
        seen = []

        def count(_conn, _cursor, statement, *_args):
            if not statement.lstrip().upper().startswith(("SAVEPOINT", "RELEASE", "ROLLBACK")):
                seen.append(statement)

        bind = db_session.get_bind()
        sa.event.listen(bind, "before_cursor_execute", count)
        try:
            query = {"lat": centre[0], "lng": centre[1], "limit": 100}
            body = api.get("/api/v1/providers/search", secret, query=query).get_json()
        finally:
            sa.event.remove(bind, "before_cursor_execute", count)
        return len(body["items"]), len({i["provider"]["district"] for i in body["items"]}), seen

    found_few, districts_few, asked_few = statements_of(few)
    found_many, districts_many, asked_many = statements_of(many)
    assert (found_few, districts_few, found_many, districts_many) == (6, 3, 60, 10)
    # The token with its user and roles; the services found with their providers, districts
    # and ratings; the catalogue; the voucher policies in force.
    assert len(asked_few) == len(asked_many) == 4, (asked_few, asked_many)


@pytest.mark.parametrize(
    "query, path",
    [
        # the schema says so, and the document with it (issue 13 item 10)
        ({"lat": 999, "lng": 123.4}, ("query", "lat")),
        ({"radius_m": -1}, ("query", "radius_m")),
        ({"radius_m": 60_000}, ("query", "radius_m")),
        ({"min_rating": 7}, ("query", "min_rating")),
        ({"district": "99999"}, ("query", "district")),
        ({"max_price_fen": 0}, ("query", "max_price_fen")),
        ({"max_price_fen": "12.5"}, ("query", "max_price_fen")),
        ({"sort": "cost"}, ("query", "sort")),
        ({"lat": None}, ("query", "lat")),
        ({"limit": 101}, ("query", "limit")),
    ],
)
def test_bad_search_input_is_a_422_naming_the_parameter(api, market, token, query, path):
    params = {k: v for k, v in (HOME | query).items() if v is not None}
    response = api.get("/api/v1/providers/search", token(market.elder_user), query=params)
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "invalid_input"
    details = error["details"]
    for key in path:
        details = details[key]
    assert details


@pytest.mark.parametrize("query", [{"category": "massage"}, {"district": "999999"}])
def test_a_search_code_that_names_nothing_is_a_404(api, market, token, query):
    # Well formed by the document, but no category or district has it: what exists is data.
    response = api.get("/api/v1/providers/search", token(market.elder_user), query=HOME | query)
    assert response.status_code == 404
    assert response.get_json()["error"]["details"] == query


def test_a_certified_providers_page_without_bank_or_phone(api, market, token, db_session):
    response = api.get(f"/api/v1/providers/{market.station.id}", token(market.elder_user))
    assert response.status_code == 200
    body = response.get_json()
    assert body["name"] == "南湖社区养老服务站" and body["type"] == "community_station"
    assert body["certified_until"] == market.station.certified_until.isoformat()
    assert body["opening_hours"]["mon"] == [["08:00", "18:00"]]
    assert [s["title"] for s in body["services"]] == ["社区助餐（午餐）", "上门助浴"]
    assert body["service_districts"] == ["210102", "210103"]
    text = response.get_data(as_text=True)
    for secret in ("6222000011112222", "13800001111", market.station.credit_code, "盛京银行"):
        assert secret not in text
    assert not {k for k in body if "bank" in k or "phone" in k or "credit" in k}


def test_a_provider_that_is_not_certified_looks_missing(api, market, token, db_session):
    applicant = market.factory.user("applicant", roles=["provider_admin"])
    pending = providers.apply_provider(
        applicant=applicant, name="未认证服务站",
        credit_code=compose_credit_code("52", "210102", "WR000009"), type="community_station",
        district=market.heping, address="某路 1 号", latitude=41.775, longitude=123.434,
        service_districts=[market.heping], contact_name="联系人", contact_phone="13800003333",
        bank_account_name="未认证", bank_name="盛京银行", bank_account_number="6222000099998888",
    )  # fmt: skip
    market.home.certified_until = market.today - timedelta(days=1)  # lapsed yesterday
    secret = token(market.elder_user)
    answers = [
        api.get(f"/api/v1/providers/{provider_id}", secret)
        for provider_id in (pending.id, market.home.id, pending.id + 1000)
    ]
    assert [a.status_code for a in answers] == [404, 404, 404]
    assert answers[0].get_json() == answers[2].get_json()
    assert "6222000011112222" not in answers[1].get_data(as_text=True)
    lapsed_service = api.get(f"/api/v1/services/{market.cleaning.id}", secret)
    assert lapsed_service.status_code == 404


def test_a_service_page_with_its_provider(api, market, token):
    response = api.get(f"/api/v1/services/{market.meals.id}", token(market.elder_user))
    assert response.status_code == 200
    body = response.get_json()
    assert (body["title"], body["unit"], body["price_fen"]) == ("社区助餐（午餐）", "meal", 1500)
    assert body["capacity_per_slot"] == 20 and body["accepts_vouchers"] is True
    assert body["provider"]["id"] == market.station.id
    assert body["districts"] == ["210102", "210103"]


# --- the elder's side -------------------------------------------------------------------


def test_an_elder_books_lists_and_cancels(api, market, token, db_session):
    secret = token(market.elder_user)
    response = api.post("/api/v1/bookings", secret, json=booking_body(market))
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["status"] == "requested" and body["price_fen"] == 8000
    assert body["slot_start"] == at(1, 10).isoformat()
    assert body["slot_end"] == at(1, 11).isoformat()
    assert body["resident"] == {"id": market.elder.id, "name": "王秀英"}
    assert body["provider"] == {"id": market.station.id, "name": "南湖社区养老服务站"}
    assert body["can_cancel"] is True and body["review"] is None
    stored = db_session.get(Booking, body["id"])
    assert (stored.status, stored.booked_by_user_id) == ("requested", market.elder_user.id)
    assert stored.note == "三楼，按门铃"

    listed = api.get("/api/v1/bookings", secret).get_json()
    assert [b["id"] for b in listed["items"]] == [body["id"]] and listed["total"] == 1
    assert api.get("/api/v1/bookings?status=cancelled", secret).get_json()["total"] == 0

    cancelled = api.post(f"/api/v1/bookings/{body['id']}/cancel", secret, json={"reason": "住院了"})
    assert cancelled.status_code == 200, cancelled.get_json()
    assert cancelled.get_json()["status"] == "cancelled"
    db_session.refresh(stored)
    assert (stored.status, stored.cancel_reason) == ("cancelled", "住院了")
    again = api.post(f"/api/v1/bookings/{body['id']}/cancel", secret, json={})
    assert again.status_code == 409
    assert again.get_json()["error"]["code"] == "invalid_transition"


def test_a_family_agent_books_for_the_linked_elder_only(api, market, token, db_session):
    secret = token(market.son)
    mine = api.post("/api/v1/bookings", secret, json=booking_body(market))
    assert mine.status_code == 201
    assert db_session.get(Booking, mine.get_json()["id"]).booked_by_user_id == market.son.id

    stranger = another_elder(market)
    settle(db_session)
    theirs = api.post("/api/v1/bookings", secret, json=booking_body(market, resident=stranger))
    # Refused by bookings.book itself: the account does not act for this elder.
    assert theirs.status_code == 403
    assert theirs.get_json()["error"]["message"] == (
        "You can book only for yourself or an elder you act for."
    )
    missing = api.post(
        "/api/v1/bookings", secret, json=booking_body(market) | {"resident_id": stranger.id + 999}
    )
    assert missing.status_code == 404
    assert count(db_session, Booking, Booking.resident_id == stranger.id) == 0
    listed = api.get("/api/v1/bookings", secret).get_json()
    assert [b["resident"]["id"] for b in listed["items"]] == [market.elder.id]


def test_someone_elses_booking_looks_missing(api, market, token, db_session):
    booking = requested(market)
    neighbour = another_elder(market)
    neighbour_user = market.factory.user("elder.li", roles=["elder"], resident=neighbour)
    secret = token(neighbour_user)
    assert api.get(f"/api/v1/bookings/{booking.id}", secret).status_code == 404
    cancel = api.post(f"/api/v1/bookings/{booking.id}/cancel", secret, json={})
    assert cancel.status_code == 404
    assert db_session.get(Booking, booking.id).status == "requested"
    assert api.get("/api/v1/bookings", secret).get_json()["total"] == 0
    own = api.get(f"/api/v1/bookings/{booking.id}", token(market.elder_user))
    assert own.status_code == 200 and own.get_json()["id"] == booking.id


@pytest.mark.parametrize(
    "change, path",
    [
        ({"slot_start": at(1, 10).replace(tzinfo=None).isoformat()}, ("json", "slot_start")),
        ({"slot_start": "tomorrow"}, ("json", "slot_start")),
        ({"service_id": "5"}, ("json", "service_id")),
        ({"resident_id": True}, ("json", "resident_id")),
        ({"surprise": 1}, ("json", "surprise")),
        ({"slot_start": at(-1, 10).isoformat()}, ("slot",)),  # bookings.book: in the past
        ({"slot_start": at(1, 20).isoformat()}, ("slot",)),  # after closing time
    ],
)
def test_a_bad_booking_is_a_422_and_books_nothing(api, market, token, db_session, change, path):
    response = api.post("/api/v1/bookings", token(market.elder_user), json=booking_body(market))
    assert response.status_code == 201  # the same request, well-formed, books
    before = count(db_session, Booking)
    bad = api.post(
        "/api/v1/bookings",
        token(market.elder_user),
        json=booking_body(market, start=at(2, 10)) | change,
    )
    assert bad.status_code == 422
    details = bad.get_json()["error"]["details"]
    for key in path:
        details = details[key]
    assert details
    assert count(db_session, Booking) == before


def test_a_full_slot_is_a_409(api, market, token, db_session):
    body = booking_body(market, service=market.bath)  # capacity 2
    for name in ("甲", "乙"):
        other = another_elder(market, name=f"赵{name}")
        bookings.book(
            market.bath, resident=other, booked_by=market.factory.user(
                roles=["elder"], resident=other), slot_start=at(1, 10),
        )  # fmt: skip
    settle(db_session)
    response = api.post("/api/v1/bookings", token(market.elder_user), json=body)
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "capacity_full"


@pytest.mark.parametrize("rating", ["5", True, 5.0, 4.5, None])
def test_a_rating_is_not_coerced(api, market, token, db_session, rating):
    booking = started_and_accepted(market)
    bookings.complete(booking, market.station_admin)
    secret = token(market.elder_user)
    response = api.post(
        f"/api/v1/bookings/{booking.id}/review", secret, json={"rating": rating, "text": "好"}
    )
    assert response.status_code == 422
    assert "rating" in response.get_json()["error"]["details"]["json"]
    assert count(db_session, Review) == 0


def test_a_done_service_is_rated_once(api, market, token, db_session):
    booking = started_and_accepted(market)
    secret = token(market.elder_user)
    url = f"/api/v1/bookings/{booking.id}/review"
    early = api.post(url, secret, json={"rating": 5})
    assert early.status_code == 409  # not marked done yet
    bookings.complete(booking, market.station_admin)
    settle(db_session)
    too_many = api.post(url, secret, json={"rating": 6})
    assert too_many.status_code == 422
    assert too_many.get_json()["error"]["details"] == {"json": {"rating": ["Choose 1 to 5 stars."]}}
    rated = api.post(url, secret, json={"rating": 5, "text": "  很细心  "})
    assert rated.status_code == 201, rated.get_json()
    body = rated.get_json()
    assert (body["booking_id"], body["rating"], body["text"]) == (booking.id, 5, "很细心")
    assert body["created_at"].endswith("+08:00")
    again = api.post(url, secret, json={"rating": 4})
    assert again.status_code == 409
    stored = db_session.scalars(sa.select(Review).where(Review.booking_id == booking.id)).all()
    assert [r.rating for r in stored] == [5]
    listed = api.get("/api/v1/bookings", secret).get_json()["items"]
    assert listed[0]["review"]["rating"] == 5 and listed[0]["status"] == "completed"
    page = api.get(f"/api/v1/providers/{market.station.id}", secret).get_json()
    assert page["rating"] == {"average": 5.0, "count": 1}
    assert page["reviews"][0]["text"] == "很细心"


def test_an_elder_files_a_complaint_and_sees_it(api, market, token, db_session):
    booking = requested(market)
    secret = token(market.son)
    response = api.post(
        "/api/v1/complaints",
        secret,
        json={"provider_id": market.station.id, "booking_id": booking.id, "text": "迟到一小时"},
    )
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["status"] == "received" and body["booking_id"] == booking.id
    assert db_session.get(Complaint, body["id"]).filed_by_user_id == market.son.id
    assert [c["id"] for c in api.get("/api/v1/complaints", secret).get_json()] == [body["id"]]
    empty = api.post(
        "/api/v1/complaints", secret, json={"provider_id": market.station.id, "text": " "}
    )
    assert empty.status_code == 422 and "text" in empty.get_json()["error"]["details"]
    wrong_provider = api.post(
        "/api/v1/complaints",
        secret,
        json={"provider_id": market.home.id, "booking_id": booking.id, "text": "迟到"},
    )
    assert wrong_provider.status_code == 422
    assert "booking_id" in wrong_provider.get_json()["error"]["details"]
    missing = api.post(
        "/api/v1/complaints", secret, json={"provider_id": market.home.id + 999, "text": "迟到"}
    )
    assert missing.status_code == 404
    assert count(db_session, Complaint) == 1


def test_only_elders_and_families_use_the_elder_side(api, market, token, db_session):
    secret = token(market.station_admin)
    for method, url in (("GET", "/api/v1/bookings"), ("POST", "/api/v1/bookings")):
        # The role is checked before the body: no 422 for this nonsense.
        response = api.call(method, url, secret, json={"nonsense": True})
        assert response.status_code == 403
        assert response.get_json()["error"]["code"] == "forbidden"
    assert count(db_session, Booking) == 0


# --- the provider's software ------------------------------------------------------------


def test_a_provider_accepts_declines_and_completes(api, market, token, db_session):
    first, second = requested(market, start=at(1, 10)), requested(market, start=at(1, 14))
    started = started_and_accepted(market)
    secret = token(market.station_admin, ["providers:write"])

    waiting = api.get("/api/v1/provider/bookings?status=requested", secret).get_json()
    assert [b["id"] for b in waiting["items"]] == [first.id, second.id]
    assert waiting["items"][0]["resident"] == {"masked_name": "王**", "district": "210102"}
    assert "王秀英" not in str(waiting)

    accepted = api.post(f"/api/v1/provider/bookings/{first.id}/accept", secret)
    assert accepted.status_code == 200 and accepted.get_json()["status"] == "accepted"
    assert db_session.get(Booking, first.id).status == "accepted"

    no_reason = api.post(f"/api/v1/provider/bookings/{second.id}/decline", secret, json={})
    assert no_reason.status_code == 422
    assert "reason" in no_reason.get_json()["error"]["details"]
    declined = api.post(
        f"/api/v1/provider/bookings/{second.id}/decline", secret, json={"reason": "护理员不足"}
    )
    assert declined.status_code == 200
    assert (declined.get_json()["status"], declined.get_json()["reason"]) == (
        "declined",
        "护理员不足",
    )

    done = api.post(f"/api/v1/provider/bookings/{started.id}/complete", secret)
    assert done.status_code == 200 and done.get_json()["status"] == "completed"
    assert db_session.get(Booking, started.id).completed_at is not None
    not_yet = api.post(f"/api/v1/provider/bookings/{first.id}/complete", secret)
    assert not_yet.status_code == 409
    assert not_yet.get_json()["error"]["code"] == "invalid_transition"
    assert db_session.get(Booking, first.id).status == "accepted"
    actors = db_session.scalars(
        sa.select(AuditLog.actor_label).where(
            AuditLog.action == "booking.accept", AuditLog.object_id == str(first.id)
        )
    ).all()
    assert len(actors) == 1 and actors[0].startswith("token:")


def test_another_providers_booking_looks_missing(api, market, token, db_session):
    theirs = requested(market, service=market.cleaning)  # the home-service company's
    secret = token(market.station_admin, ["providers:write"])
    other = api.post(f"/api/v1/provider/bookings/{theirs.id}/accept", secret)
    missing = api.post(f"/api/v1/provider/bookings/{theirs.id + 999}/accept", secret)
    assert other.status_code == missing.status_code == 404
    assert other.get_json() == missing.get_json()
    declined = api.post(
        f"/api/v1/provider/bookings/{theirs.id}/decline", secret, json={"reason": "x"}
    )
    assert declined.status_code == 404
    assert db_session.get(Booking, theirs.id).status == "requested"
    assert api.get("/api/v1/provider/bookings", secret).get_json()["total"] == 0


def test_a_price_change_goes_into_the_history(api, market, token, db_session):
    booked = requested(market, service=market.haircut)
    secret = token(market.home_admin, ["providers:write"])
    response = api.post(
        f"/api/v1/provider/services/{market.haircut.id}/price", secret, json={"price_fen": 3500}
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["price_fen"] == 3500
    assert [p["price_fen"] for p in body["prices"]] == [3500, 3000]
    rows = db_session.scalars(
        sa.select(ServicePrice)
        .where(ServicePrice.service_id == market.haircut.id)
        .order_by(ServicePrice.effective_from, ServicePrice.id)
    ).all()
    assert [(r.price_fen, r.set_by_user_id) for r in rows] == [
        (3000, market.home_admin.id),
        (3500, market.home_admin.id),
    ]
    assert db_session.get(Booking, booked.id).price_fen == 3000  # booked at the old price
    listed = api.get("/api/v1/provider/services", secret).get_json()
    haircut = next(s for s in listed if s["id"] == market.haircut.id)
    assert haircut["prices"] == body["prices"]


@pytest.mark.parametrize("price", ["35.00", 35.5, True, 0, 6_000_000])
def test_a_price_must_be_whole_fen_in_range(api, market, token, db_session, price):
    secret = token(market.home_admin, ["providers:write"])
    response = api.post(
        f"/api/v1/provider/services/{market.haircut.id}/price", secret, json={"price_fen": price}
    )
    assert response.status_code == 422
    assert "price_fen" in str(response.get_json()["error"]["details"])
    assert db_session.get(Service, market.haircut.id).price_fen == 3000
    assert count(db_session, ServicePrice, ServicePrice.service_id == market.haircut.id) == 1


def test_another_providers_service_looks_missing(api, market, token, db_session):
    secret = token(market.station_admin, ["providers:write"])
    response = api.post(
        f"/api/v1/provider/services/{market.haircut.id}/price", secret, json={"price_fen": 1}
    )
    assert response.status_code == 404
    assert db_session.get(Service, market.haircut.id).price_fen == 3000


def test_a_provider_adds_and_withdraws_a_service(api, market, token, db_session):
    secret = token(market.station_admin, ["providers:write"])
    body = {
        "category": "meal_help",
        "title": "社区助餐（晚餐）",
        "unit": "meal",
        "price_fen": 1800,
        "capacity_per_slot": 10,
        "districts": ["210102"],
        "delivery_place": "provider",
    }
    response = api.post("/api/v1/provider/services", secret, json=body)
    assert response.status_code == 201, response.get_json()
    created = response.get_json()
    assert created["delivery_place"] == "provider"
    assert created["districts"] == ["210102"] and created["active"] is True
    assert [p["price_fen"] for p in created["prices"]] == [1800]
    stored = db_session.get(Service, created["id"])
    assert (stored.provider_id, stored.price_fen) == (market.station.id, 1800)

    withdrawn = api.post(
        f"/api/v1/provider/services/{created['id']}/active", secret, json={"active": False}
    )
    assert withdrawn.status_code == 200 and withdrawn.get_json()["active"] is False
    public = api.get(f"/api/v1/services/{created['id']}", token(market.elder_user))
    assert public.status_code == 404
    found = api.get(
        "/api/v1/providers/search", token(market.elder_user), query=HOME | {"category": "meal_help"}
    ).get_json()
    assert created["id"] not in {i["service"]["id"] for i in found["items"]}


@pytest.mark.parametrize(
    "change, path",
    [
        ({"category": "long_term_stay"}, ("category",)),  # catalogue: not for a station
        ({"districts": ["999999"]}, ("districts",)),
        # the document states these (issue 13 item 10): refused by the schema
        ({"districts": []}, ("json", "districts")),
        ({"unit": "week"}, ("json", "unit")),
        ({"capacity_per_slot": "10"}, ("json", "capacity_per_slot")),
        ({"price_fen": 18.5}, ("json", "price_fen")),
        ({"delivery_place": "moon"}, ("json", "delivery_place")),
        ({"delivery_place": None}, ("json", "delivery_place")),
    ],
)
def test_a_bad_new_service_is_refused_and_nothing_saved(
    api, market, token, db_session, change, path
):
    secret = token(market.station_admin, ["providers:write"])
    body = {
        "category": "meal_help",
        "title": "社区助餐（晚餐）",
        "unit": "meal",
        "price_fen": 1800,
        "districts": ["210102"],
        "delivery_place": "provider",
    }
    before = count(db_session, Service)
    response = api.post("/api/v1/provider/services", secret, json=body | change)
    assert response.status_code == 422
    details = response.get_json()["error"]["details"]
    for key in path:
        details = details[key]
    assert details
    assert count(db_session, Service) == before


def test_a_provider_sets_where_a_service_is_delivered(api, market, token, db_session):
    secret = token(market.station_admin, ["providers:write"])
    listed = {s["id"]: s for s in api.get("/api/v1/provider/services", secret).get_json()}
    assert listed[market.bath.id]["delivery_place"] == "home"
    url = f"/api/v1/provider/services/{market.bath.id}/delivery-place"
    refused = api.post(url, secret, json={"delivery_place": "moon"})
    assert refused.status_code == 422
    assert "delivery_place" in refused.get_json()["error"]["details"]["json"]
    assert db_session.get(Service, market.bath.id).delivery_place == "home"
    changed = api.post(url, secret, json={"delivery_place": "provider"})
    assert changed.status_code == 200 and changed.get_json()["delivery_place"] == "provider"
    public = api.get(f"/api/v1/services/{market.bath.id}", token(market.elder_user)).get_json()
    assert public["delivery_place"] == "provider"
    other = f"/api/v1/provider/services/{market.haircut.id}/delivery-place"
    assert api.post(other, secret, json={"delivery_place": "provider"}).status_code == 404


def test_beds_of_a_care_institution(api, market, token, db_session):
    response = api.put(
        "/api/v1/provider/beds",
        token(market.institution_admin, ["providers:write"]),
        json={"beds_total": 120, "beds_free": 7},
    )
    assert response.status_code == 200 and response.get_json() == {
        "beds_total": 120,
        "beds_free": 7,
    }
    assert market.institution.beds_free == 7
    station = api.put(
        "/api/v1/provider/beds",
        token(market.station_admin, ["providers:write"]),
        json={"beds_total": 10, "beds_free": 1},
    )
    # Not a malformed request but a provider without beds: 409, as the document says.
    assert station.status_code == 409
    assert station.get_json()["error"]["details"] == {"provider_type": "community_station"}


def test_an_account_outside_every_provider_is_refused(api, market, token):
    response = api.get("/api/v1/provider/bookings", token(market.elder_user, ["providers:write"]))
    assert response.status_code == 403
    assert "provider" in response.get_json()["error"]["message"]


# --- tokens and scopes ------------------------------------------------------------------


def test_a_token_without_the_needed_scope_is_refused(api, market, token, db_session):
    booking = requested(market)
    settle(db_session)
    read_only = token(market.station_admin, ["read"])
    response = api.post(f"/api/v1/provider/bookings/{booking.id}/accept", read_only)
    assert response.status_code == 403
    assert response.get_json()["error"]["details"] == {"missing": ["providers:write"]}
    assert db_session.get(Booking, booking.id).status == "requested"
    assert api.get("/api/v1/provider/bookings", read_only).status_code == 200

    scanner = token(market.station_admin, ["vouchers:redeem"])
    listing = api.get("/api/v1/provider/bookings", scanner)
    assert listing.status_code == 403
    assert listing.get_json()["error"]["details"] == {"missing_one_of": ["providers:write", "read"]}
    elder_scanner = token(market.elder_user, ["vouchers:read"])
    search = api.get("/api/v1/providers/search", elder_scanner, query=HOME)
    assert search.status_code == 403
    assert search.get_json()["error"]["details"] == {"missing": ["read"]}
    booked = api.post("/api/v1/bookings", elder_scanner, json=booking_body(market))
    assert booked.status_code == 403
    assert count(db_session, Booking) == 1


@pytest.mark.parametrize(
    "method, url",
    [
        ("GET", "/api/v1/service-categories"),
        ("GET", "/api/v1/providers/search?lat=41.7&lng=123.4"),
        ("GET", "/api/v1/providers/1"),
        ("POST", "/api/v1/bookings"),
        ("POST", "/api/v1/bookings/1/review"),
        ("POST", "/api/v1/provider/bookings/1/accept"),
        ("POST", "/api/v1/provider/services"),
        ("PUT", "/api/v1/provider/beds"),
    ],
)
def test_no_token_is_a_401_before_the_body_is_looked_at(api, market, method, url):
    response = api.call(method, url, json={"nonsense": True})
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "authentication_required"
