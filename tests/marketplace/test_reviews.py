"""Ratings of delivered services (marketplace.reviews)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from eldercare.audit import AuditLog
from eldercare.errors import Conflict, InvalidInput, PermissionDenied
from marketplace import bookings, reviews
from marketplace.errors import InvalidTransition
from marketplace.models import Review
from tests.marketplace.test_bookings import (
    another_elder,
    at,
    completed_booking,
    english,
    request_booking,
)


def _counts(session):
    return tuple(
        session.scalar(sa.select(sa.func.count()).select_from(model))
        for model in (Review, AuditLog)
    )


def _refused(session, error, call):
    before = _counts(session)
    with pytest.raises(error) as excinfo:
        call()
    assert _counts(session) == before, "a refused review changed something"
    return excinfo.value


def test_the_elder_rates_a_completed_booking_once(market, db_session):
    booking = completed_booking(market)
    review = reviews.review(booking, by=market.elder_user, rating=4, text="  很细心  ")
    assert (review.rating, review.text, review.provider_id) == (4, "很细心", market.station.id)
    row = db_session.scalar(sa.select(AuditLog).where(AuditLog.action == "review.create"))
    assert row.after == {"booking_id": booking.id, "provider_id": market.station.id, "rating": 4}

    error = _refused(db_session, Conflict, lambda: reviews.review(booking, by=market.son, rating=5))
    assert "already been rated" in english(error.message)
    assert reviews.review_of(booking.id).rating == 4


def test_a_linked_family_agent_may_rate(market):
    booking = completed_booking(market)
    assert reviews.review(booking, by=market.son, rating=5).created_by_user_id == market.son.id


def test_not_before_the_service_was_delivered(market, db_session):
    booking = request_booking(market)
    error = _refused(
        db_session,
        InvalidTransition,
        lambda: reviews.review(booking, by=market.elder_user, rating=5),
    )
    assert "marked it done" in english(error.message)
    bookings.accept(booking, market.station_admin)
    _refused(
        db_session,
        InvalidTransition,
        lambda: reviews.review(booking, by=market.elder_user, rating=5),
    )
    bookings.cancel(booking, market.station_admin, "caregiver ill", now=at(0, 0))
    _refused(
        db_session,
        InvalidTransition,
        lambda: reviews.review(booking, by=market.elder_user, rating=5),
    )


def test_not_someone_elses_booking(market, db_session):
    booking = completed_booking(market)
    _, neighbour = another_elder(market)
    stranger = market.factory.user("stranger", roles=["family_agent"])
    for user in (neighbour, stranger, market.station_admin):
        error = _refused(
            db_session, PermissionDenied, lambda u=user: reviews.review(booking, by=u, rating=5)
        )
        assert "only services booked for yourself" in english(error.message)


@pytest.mark.parametrize("rating", [0, 6, -1, "5", 4.5, True, None])
def test_a_rating_is_a_whole_number_from_1_to_5(market, db_session, rating):
    booking = completed_booking(market)
    error = _refused(
        db_session,
        InvalidInput,
        lambda: reviews.review(booking, by=market.elder_user, rating=rating),
    )
    assert "rating" in error.details


def test_the_text_is_at_most_1000_characters(market, db_session):
    booking = completed_booking(market)
    error = _refused(
        db_session,
        InvalidInput,
        lambda: reviews.review(booking, by=market.elder_user, rating=3, text="好" * 1001),
    )
    assert "text" in error.details
    assert len(reviews.review(booking, by=market.elder_user, rating=3, text="好" * 1000).text) == (
        1000
    )


def test_the_rating_summary_counts_a_providers_reviews(market):
    assert reviews.rating_summary(market.station.id) == reviews.RatingSummary(0, None)
    for hour, rating in ((9, 5), (11, 4)):
        booking = completed_booking(market, at(1, hour))
        reviews.review(booking, by=market.elder_user, rating=rating)
    assert reviews.rating_summary(market.station.id) == reviews.RatingSummary(2, 4.5)
    assert reviews.rating_summary(market.home.id).count == 0
