"""Providers' credit scores (marketplace.credit): hand-computed cases and the threshold."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from marketplace import complaints, credit, providers, reviews
from tests.marketplace.test_bookings import at, completed_booking


def _upheld(market, provider, count, now=None):
    for i in range(count):
        complaint = complaints.file_complaint(provider, by=market.elder_user, text=f"第 {i} 次")
        complaints.investigate(complaint, by=market.officer)
        complaints.uphold(complaint, by=market.officer, resolution="属实", now=now)


def _rated(market, ratings, service=None):
    """One completed booking per rating (the cleaning service of the home-service company
    unless told), each rated."""
    for hour, rating in enumerate(ratings, start=8):
        booking = completed_booking(market, at(1, hour), service=service or market.cleaning)
        reviews.review(booking, by=market.elder_user, rating=rating)


def test_a_provider_without_history_scores_100(market):
    score = credit.credit_score(market.home, market.today)
    assert (score.score, score.unclamped, score.below_threshold) == (100, 100, False)
    assert (score.upheld_complaints, score.fraud_flags, score.suspensions) == (0, 0, 0)
    assert (score.review_count, score.average_rating, score.rating_points) == (0, None, 0)


def test_complaints_a_suspension_and_good_reviews(market):
    """2 upheld complaints, 1 suspension, 5 reviews averaging 4.0: 100 - 30 - 10 + 5 = 65."""
    _rated(market, [5, 4, 4, 4, 3])
    _upheld(market, market.home, 2)
    providers.suspend(market.home, "inspection")
    providers.reinstate(market.home, "fixed")
    score = credit.credit_score(market.home, market.today)
    assert (score.complaint_points, score.suspension_points, score.rating_points) == (-30, -10, 5)
    assert (score.review_count, score.average_rating) == (5, 4.0)
    assert score.score == 65
    assert credit.credit_score(market.station, market.today).score == 100  # others unaffected


def test_fewer_than_5_reviews_do_not_count(market):
    _rated(market, [1, 1, 1, 1])
    score = credit.credit_score(market.home, market.today)
    assert (score.review_count, score.rating_points, score.score) == (4, 0, 100)
    _rated(market, [1], service=market.haircut)
    assert credit.credit_score(market.home, market.today).score == 90  # (1 - 3) x 5 = -10


@pytest.mark.parametrize(
    ("count", "total", "points"),
    [(5, 15, 0), (6, 21, 3), (6, 15, -3), (5, 25, 10), (5, 5, -10), (7, 22, 1), (4, 20, 0)],
)
def test_the_rating_term_rounds_halves_away_from_zero(count, total, points):
    # (6, 21): average 3.5 -> 2.5 -> 3; (6, 15): 2.5 -> -2.5 -> -3; (7, 22): 3.142.. -> 0.71 -> 1
    assert credit.rating_points(count, total) == points


def test_fraud_flags_come_from_a_registered_source(market, app, monkeypatch):
    asked = []

    def source(provider_id, since):
        asked.append((provider_id, since))
        return 2 if provider_id == market.home.id else 0

    monkeypatch.setitem(app.extensions, "marketplace.fraud_flag_sources", [])
    credit.register_fraud_flag_source(app, source)
    score = credit.credit_score(market.home, date(2026, 3, 31))
    assert (score.fraud_flags, score.fraud_points, score.score) == (2, -40, 60)
    assert asked == [(market.home.id, date(2025, 4, 1))]  # the last 12 months, inclusive
    assert not score.below_threshold  # 60 is the threshold itself


def test_the_score_stays_between_0_and_100(market):
    _upheld(market, market.station, 7)
    score = credit.credit_score(market.station, market.today)
    assert (score.unclamped, score.score) == (-5, 0)
    _rated(market, [5, 5, 5, 5, 5])
    assert credit.credit_score(market.home, market.today).unclamped == 110
    assert credit.credit_score(market.home, market.today).score == 100


def test_old_complaints_and_suspensions_drop_out(market):
    long_ago = at(-400, 10)  # upheld more than 12 months ago
    _upheld(market, market.station, 1, now=long_ago)
    _upheld(market, market.station, 1)
    providers.suspend(market.station, "inspection")
    providers.reinstate(market.station, "fixed")
    today = market.today
    assert credit.credit_score(market.station, today).score == 100 - 15 - 10

    if (today.month, today.day) == (2, 29):
        pytest.skip("the same date a year on does not exist")
    two_years_on = today.replace(year=today.year + 2)  # the suspension's window has closed
    assert credit.credit_score(market.station, two_years_on - timedelta(days=1)).suspensions == 1
    assert credit.credit_score(market.station, two_years_on).suspensions == 0
    a_year_on = today.replace(year=today.year + 1)
    assert credit.credit_score(market.station, a_year_on - timedelta(days=1)).upheld_complaints == 1
    assert credit.credit_score(market.station, a_year_on).upheld_complaints == 0


def test_providers_below_the_threshold(market):
    _upheld(market, market.station, 3)  # 55: listed
    _upheld(market, market.home, 2)  # 70: not
    _upheld(market, market.institution, 4)  # 40, but suspended already: not listed
    providers.suspend(market.institution, "under investigation")
    below = credit.providers_below_threshold(market.today)
    assert [(s.provider.id, s.score) for s in below] == [(market.station.id, 55)]
    assert credit.THRESHOLD == 60
    assert credit.providers_below_threshold(market.today, district_id=market.shenhe.id) == []
    assert len(credit.providers_below_threshold(market.today, district_id=market.heping.id)) == 1


def test_window_start_handles_month_ends():
    assert credit.window_start(date(2026, 2, 28), 12) == date(2025, 3, 1)
    assert credit.window_start(date(2024, 2, 29), 12) == date(2023, 3, 1)
    assert credit.window_start(date(2026, 3, 31), 1) == date(2026, 3, 1)


def test_the_bureaus_credit_page_recommends_suspension(market, client, login):
    from marketplace.views_complaints import certification_queue_url

    _upheld(market, market.station, 3)
    login(market.officer)
    response = client.get("/marketplace/bureau/credit", headers={"Accept-Language": "en"})
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    below = page.split('id="below-threshold"')[1].split("</ul>")[0]
    assert market.station.name in below and market.home.name not in below
    assert "Suspension recommended" in below and ">55<" in below
    with client.application.test_request_context():
        assert f'href="{certification_queue_url()}"' in below
    queue = client.get("/marketplace/bureau/complaints", headers={"Accept-Language": "en"})
    assert "suspension recommended" in queue.get_data(as_text=True)
    client.post("/logout")
    login(market.elder_user)
    assert client.get("/marketplace/bureau/credit").status_code == 403
