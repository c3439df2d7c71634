"""The booking pages: booking through the form, the elder's page (cancel, rate), the
provider's page (accept, decline, complete), and what other accounts may not see."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from eldercare.timeutil import now_utc
from marketplace import bookings
from marketplace.models import Booking, Review
from tests.conftest import PASSWORD
from tests.marketplace.test_bookings import another_elder, at, request_booking

EN = {"Accept-Language": "en"}


def _form(day, hour="10:00", **extra):
    return {"slot_date": day.isoformat(), "slot_time": hour, **extra}


def _bookings(session) -> int:
    return session.scalar(sa.select(sa.func.count()).select_from(Booking))


def _text(response) -> str:
    return response.get_data(as_text=True)


def assert_every_post_form_has_a_csrf_token(page: str) -> None:
    forms = re.findall(r"<form\b[^>]*>.*?</form>", page, flags=re.S)
    posts = [f for f in forms if re.search(r'method="post"', f)]
    assert posts, "no POST form on the page"
    for form in posts:
        assert 'name="csrf_token"' in form, form[:200]


def _started_booking(market):
    """An accepted booking that started half an hour ago (booked and accepted yesterday)."""
    market.station.opening_hours_json = None  # any time, whatever the clock says now
    start = now_utc().replace(second=0, microsecond=0) - timedelta(minutes=30)
    yesterday = start - timedelta(days=1)
    booking = bookings.book(
        market.bath,
        resident=market.elder,
        booked_by=market.elder_user,
        slot_start=start,
        now=yesterday,
    )
    bookings.accept(booking, market.station_admin, now=yesterday)
    return booking


# --------------------------------------------------------------------------- booking


def test_book_through_the_form_and_see_it_on_my_bookings(market, client, login, db_session):
    login(market.elder_user)
    day = market.today + timedelta(days=2)
    form_page = client.get(f"/marketplace/services/{market.bath.id}/book", headers=EN)
    assert form_page.status_code == 200
    assert_every_post_form_has_a_csrf_token(_text(form_page))

    response = client.post(
        f"/marketplace/services/{market.bath.id}/book",
        data=_form(day, "09:30", note="请带洗发水"),
        headers=EN,
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/marketplace/bookings"
    booking = db_session.scalar(sa.select(Booking).where(Booking.resident_id == market.elder.id))
    assert booking.slot_start == at(2, 9, 30) and booking.note == "请带洗发水"
    assert booking.booked_by_user_id == market.elder_user.id

    page = client.get("/marketplace/bookings", headers=EN)
    body = _text(page)
    assert page.status_code == 200
    assert "上门助浴" in body and "Waiting for the provider" in body
    assert f'action="/marketplace/bookings/{booking.id}/cancel"' in body
    assert f"/marketplace/complaints/new?provider_id={market.station.id}&amp;booking_id=" in body
    assert_every_post_form_has_a_csrf_token(body)


def test_a_family_agent_chooses_the_elder(market, client, login, db_session):
    login(market.son)
    day = market.today + timedelta(days=1)
    response = client.post(
        f"/marketplace/services/{market.bath.id}/book",
        data=_form(day, resident_id=market.elder.id),
        headers=EN,
    )
    assert response.status_code == 302
    assert _bookings(db_session) == 1


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"slot_date": "2025/07/01"}, "slot_date", "year-month-day"),
        ({"slot_date": "2025-02-30"}, "slot_date", "year-month-day"),
        ({"slot_time": "9.30"}, "slot_time", "hours:minutes"),
        ({"slot_time": "25:00"}, "slot_time", "hours:minutes"),
    ],
)
def test_unreadable_dates_and_times_are_refused(
    market, client, login, db_session, fields, field, message
):
    login(market.elder_user)
    data = {**_form(market.today + timedelta(days=1)), **fields}
    response = client.post(f"/marketplace/services/{market.bath.id}/book", data=data, headers=EN)
    body = _text(response)
    assert response.status_code == 422
    assert f'id="{field}-error"' in body and message in body
    assert _bookings(db_session) == 0


def test_a_refusal_shows_the_booking_page_again_with_the_reason(market, client, login, db_session):
    login(market.elder_user)
    day = market.today + timedelta(days=1)
    response = client.post(
        f"/marketplace/services/{market.bath.id}/book",
        data=_form(day, "07:00", note="早一点"),
        headers=EN,
    )
    body = _text(response)
    assert response.status_code == 422
    assert "open 08:00–18:00 on that day" in body and "Nothing has been saved." in body
    assert 'value="07:00"' in body and "早一点" in body  # the form comes back filled in
    assert _bookings(db_session) == 0

    _, neighbour = another_elder(market)
    response = client.post(
        f"/marketplace/services/{market.bath.id}/book",
        data=_form(day, resident_id=neighbour.resident_id),
        headers=EN,
    )
    assert response.status_code == 422
    assert "only for yourself or an elder you act for" in _text(response)
    assert _bookings(db_session) == 0


def test_a_full_slot_is_refused_on_the_page(market, client, login, db_session):
    for name in ("李桂兰", "赵玉珍"):
        resident, user = another_elder(market, name)
        request_booking(market, at(1, 10), resident=resident, by=user)
    login(market.elder_user)
    response = client.post(
        f"/marketplace/services/{market.bath.id}/book",
        data=_form(market.today + timedelta(days=1)),
        headers=EN,
    )
    assert response.status_code == 422
    assert "fully booked" in _text(response)
    assert _bookings(db_session) == 2


def test_booking_needs_an_elder_account_and_an_existing_service(market, client, login):
    login(market.station_admin)
    day = market.today + timedelta(days=1)
    assert (
        client.post(f"/marketplace/services/{market.bath.id}/book", data=_form(day)).status_code
        == 403
    )
    client.post("/logout")
    login(market.elder_user)
    assert client.post("/marketplace/services/999999/book", data=_form(day)).status_code == 404


def _token(page: str) -> str:
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)


def test_the_form_must_carry_the_csrf_token(market, csrf_client, db_session):
    client = csrf_client
    signed_in = client.post(
        "/login",
        data={
            "username": "elder.wang",
            "password": PASSWORD,
            "csrf_token": _token(_text(client.get("/login"))),
        },
    )
    assert signed_in.status_code == 302
    day = market.today + timedelta(days=1)
    url = f"/marketplace/services/{market.bath.id}/book"
    assert client.post(url, data=_form(day)).status_code == 400
    assert _bookings(db_session) == 0
    token = _token(_text(client.get(url)))
    assert client.post(url, data=_form(day, csrf_token=token)).status_code == 302
    assert _bookings(db_session) == 1


# --------------------------------------------------------------------------- the elder's page


def test_the_elder_cancels_on_the_page(market, client, login, db_session):
    booking = request_booking(market)
    login(market.elder_user)
    response = client.post(
        f"/marketplace/bookings/{booking.id}/cancel", data={"reason": "住院了"}, headers=EN
    )
    assert response.status_code == 302
    db_session.refresh(booking)
    assert (booking.status, booking.cancel_reason) == ("cancelled", "住院了")
    assert "Cancelled" in _text(client.get("/marketplace/bookings", headers=EN))


def test_too_late_to_cancel_on_the_page(market, client, login, db_session):
    market.station.opening_hours_json = None
    start = now_utc().replace(second=0, microsecond=0) + timedelta(hours=1)
    booking = request_booking(market, start)
    login(market.son)
    page = _text(client.get("/marketplace/bookings", headers=EN))
    assert f"/marketplace/bookings/{booking.id}/cancel" not in page
    assert "please telephone the provider: 13800001111" in page
    response = client.post(f"/marketplace/bookings/{booking.id}/cancel", headers=EN)
    assert response.status_code == 422
    assert "until 2 hours before the start" in _text(response)
    db_session.refresh(booking)
    assert booking.status == "requested"


def test_other_peoples_bookings_are_not_found(market, client, login, db_session):
    booking = request_booking(market)
    _, neighbour = another_elder(market)
    login(neighbour)
    assert booking.service.title not in _text(client.get("/marketplace/bookings"))
    assert client.post(f"/marketplace/bookings/{booking.id}/cancel").status_code == 404
    assert (
        client.post(f"/marketplace/bookings/{booking.id}/review", data={"rating": "5"}).status_code
        == 404
    )
    db_session.refresh(booking)
    assert booking.status == "requested"


def test_rate_after_completion_on_the_page(market, client, login, db_session):
    booking = _started_booking(market)
    login(market.elder_user)
    assert "send-review" not in _text(client.get("/marketplace/bookings", headers=EN))
    bookings.complete(booking, market.station_admin)
    page = _text(client.get("/marketplace/bookings", headers=EN))
    assert f'action="/marketplace/bookings/{booking.id}/review"' in page and "Done" in page

    response = client.post(
        f"/marketplace/bookings/{booking.id}/review", data={"rating": "6"}, headers=EN
    )
    assert response.status_code == 422
    assert f'id="review-{booking.id}-rating-error"' in _text(response)
    assert db_session.scalar(sa.select(sa.func.count()).select_from(Review)) == 0

    response = client.post(
        f"/marketplace/bookings/{booking.id}/review",
        data={"rating": "5", "text": "洗得很干净"},
        headers=EN,
    )
    assert response.status_code == 302
    review = db_session.scalar(sa.select(Review).where(Review.booking_id == booking.id))
    assert (review.rating, review.text) == (5, "洗得很干净")
    page = _text(client.get("/marketplace/bookings", headers=EN))
    assert "Your rating:" in page and "5 of 5 stars" in page and "send-review" not in page

    again = client.post(
        f"/marketplace/bookings/{booking.id}/review", data={"rating": "1"}, headers=EN
    )
    assert again.status_code == 422 and "already been rated" in _text(again)


# --------------------------------------------------------------------------- the provider's page


def test_the_provider_sees_requests_with_masked_names_and_accepts(
    market, client, login, db_session
):
    booking = request_booking(market, note="三楼")
    login(market.station_admin)
    page = _text(client.get("/marketplace/provider/bookings", headers=EN))
    assert "王**" in page and "王秀英" not in page and "三楼" in page
    assert f'action="/marketplace/provider/bookings/{booking.id}/accept"' in page
    assert_every_post_form_has_a_csrf_token(page)

    response = client.post(f"/marketplace/provider/bookings/{booking.id}/accept", headers=EN)
    assert response.status_code == 302
    db_session.refresh(booking)
    assert booking.status == "accepted"
    page = _text(client.get("/marketplace/provider/bookings", headers=EN))
    assert f'/marketplace/provider/bookings/{booking.id}/cancel"' in page
    assert "You can mark it done once it has started." in page
    client.post("/logout")
    login(market.son)
    card = _text(client.get("/marketplace/bookings", headers=EN))
    assert f'id="booking-{booking.id}" data-status="accepted"' in card


def test_the_provider_declines_with_a_reason(market, client, login, db_session):
    booking = request_booking(market)
    login(market.station_admin)
    url = f"/marketplace/provider/bookings/{booking.id}/decline"
    response = client.post(url, data={"reason": " "}, headers=EN)
    assert response.status_code == 422
    assert f'id="decline-reason-{booking.id}-error"' in _text(response)
    db_session.refresh(booking)
    assert booking.status == "requested"
    assert client.post(url, data={"reason": "那天没有助浴员"}, headers=EN).status_code == 302
    db_session.refresh(booking)
    assert (booking.status, booking.cancel_reason) == ("declined", "那天没有助浴员")

    client.post("/logout")
    login(market.elder_user)
    page = _text(client.get("/marketplace/bookings", headers=EN))
    assert "Declined by the provider" in page and "那天没有助浴员" in page


def test_the_provider_completes_a_started_booking(market, client, login, db_session):
    booking = _started_booking(market)
    login(market.station_admin)
    page = _text(client.get("/marketplace/provider/bookings", headers=EN))
    assert f'action="/marketplace/provider/bookings/{booking.id}/complete"' in page
    assert client.post(f"/marketplace/provider/bookings/{booking.id}/complete").status_code == (302)
    db_session.refresh(booking)
    assert booking.status == "completed"


def test_another_providers_booking_is_not_found(market, client, login, db_session):
    booking = request_booking(market)
    login(market.home_admin)
    assert "王**" not in _text(client.get("/marketplace/provider/bookings"))
    for action in ("accept", "decline", "complete", "cancel"):
        response = client.post(
            f"/marketplace/provider/bookings/{booking.id}/{action}", data={"reason": "x"}
        )
        assert response.status_code == 404
    db_session.refresh(booking)
    assert booking.status == "requested"


def test_the_provider_page_is_for_provider_staff(market, client, login):
    login(market.elder_user)
    assert client.get("/marketplace/provider/bookings").status_code == 403
    client.post("/logout")
    unattached = market.factory.user("provider.nobody", roles=["provider_admin"])
    login(unattached)
    assert client.get("/marketplace/provider/bookings").status_code == 403
