"""Providers' credit scores, from what the platform knows about their conduct.

On a day D (Shanghai), a provider's score is

    score = 100
            - 15 x complaints upheld in the last 12 months
            - 20 x fraud flags raised in the last 12 months
            - 10 x suspensions in the last 24 months
            + (average rating - 3) x 5, rounded to a whole number (halves away from zero),
              only when the provider had at least 5 reviews in the last 12 months (else 0)

then clamped to 0..100; always an integer. "The last 12 months" on D are the days after the
same date a year earlier, up to and including D (24 months likewise). A complaint counts from
the day the bureau upheld it; a suspension is the audit trail's ``provider.suspend`` row for
the provider; a review counts from the day it was written. Fraud flags are the vouchers
domain's, which this package may not import: it registers a source with
``register_fraud_flag_source(app, fn)``, ``fn(provider_id, since_date) -> int`` (flags on or
after ``since_date``); with none registered there are no flags. The vouchers domain counts
confirmed findings (``vouchers.ports.confirmed_findings``): each of the provider's
redemptions on which a bureau officer rejected an anomaly flag (the rule's finding, or an
officer's own hold, checked and confirmed: the service was not delivered as claimed),
counted from the day of the decision, and each redemption bureau staff reversed without a
flag; a redemption counts once however many of its flags were rejected. A flag still open
or cleared counts nothing: only a decision against the provider lowers its score.

A provider scoring below ``THRESHOLD`` (60) is listed to the bureau as "suspension
recommended"; suspending remains the bureau's decision (``providers.suspend``).

Example: 2 upheld complaints, 1 suspension, 5 reviews averaging 4.0:
100 - 30 - 10 + 5 = 65.
"""

from __future__ import annotations

import calendar
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from fractions import Fraction

import sqlalchemy as sa
from flask import current_app

from eldercare.audit import AuditLog
from eldercare.db import db
from eldercare.timeutil import SHANGHAI
from marketplace.models import Complaint, Provider, Review

BASE = 100
THRESHOLD = 60  # below this the bureau's list says "suspension recommended"
COMPLAINT_POINTS = 15  # per complaint upheld in the last 12 months
FRAUD_POINTS = 20  # per fraud flag in the last 12 months
SUSPENSION_POINTS = 10  # per suspension in the last 24 months
RATING_POINTS_PER_STAR = 5  # per star of the average above (or below) 3
MIN_REVIEWS = 5  # fewer reviews in the last 12 months say too little to count
COMPLAINT_MONTHS = FRAUD_MONTHS = REVIEW_MONTHS = 12
SUSPENSION_MONTHS = 24

FraudFlagSource = Callable[[int, date], int]
_EXTENSION = "marketplace.fraud_flag_sources"


def register_fraud_flag_source(app, source: FraudFlagSource) -> None:
    app.extensions.setdefault(_EXTENSION, []).append(source)


def fraud_flags(provider_id: int, since: date) -> int:
    return sum(int(source(provider_id, since)) for source in _sources())


def _sources() -> list[FraudFlagSource]:
    return list(current_app.extensions.get(_EXTENSION, []))


def window_start(day: date, months: int) -> date:
    """The first day of the ``months`` months ending on ``day``."""
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    same = date(year, month, min(day.day, calendar.monthrange(year, month)[1]))
    return same + timedelta(days=1)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=SHANGHAI)


def rating_points(review_count: int, rating_total: int) -> int:
    """(average - 3) x 5 rounded, halves away from zero; 0 below MIN_REVIEWS reviews."""
    if review_count < MIN_REVIEWS:
        return 0
    exact = Fraction(RATING_POINTS_PER_STAR * (rating_total - 3 * review_count), review_count)
    magnitude = int(abs(exact) + Fraction(1, 2))
    return magnitude if exact >= 0 else -magnitude


@dataclass(frozen=True)
class CreditScore:
    provider: Provider
    today: date
    upheld_complaints: int
    fraud_flags: int
    suspensions: int
    review_count: int
    average_rating: float | None
    rating_points: int

    @property
    def complaint_points(self) -> int:
        return -COMPLAINT_POINTS * self.upheld_complaints

    @property
    def fraud_points(self) -> int:
        return -FRAUD_POINTS * self.fraud_flags

    @property
    def suspension_points(self) -> int:
        return -SUSPENSION_POINTS * self.suspensions

    @property
    def unclamped(self) -> int:
        return (
            BASE
            + self.complaint_points
            + self.fraud_points
            + self.suspension_points
            + self.rating_points
        )

    @property
    def score(self) -> int:
        return max(0, min(100, self.unclamped))

    @property
    def below_threshold(self) -> bool:
        return self.score < THRESHOLD


def _grouped_counts(statement) -> dict:
    return {key: count for key, count in db.session.execute(statement)}


def credit_scores(providers: Iterable[Provider], today: date) -> list[CreditScore]:
    """The scores of several providers on ``today``, with a few queries for all of them."""
    providers = list(providers)
    if not providers:
        return []
    ids = [p.id for p in providers]
    end = _midnight(today + timedelta(days=1))
    complaints_since = _midnight(window_start(today, COMPLAINT_MONTHS))
    reviews_since = _midnight(window_start(today, REVIEW_MONTHS))
    suspensions_since = _midnight(window_start(today, SUSPENSION_MONTHS))
    fraud_since = window_start(today, FRAUD_MONTHS)

    upheld = _grouped_counts(
        sa.select(Complaint.provider_id, sa.func.count(Complaint.id))
        .where(
            Complaint.provider_id.in_(ids),
            Complaint.status == "upheld",
            Complaint.closed_at >= complaints_since,
            Complaint.closed_at < end,
        )
        .group_by(Complaint.provider_id)
    )
    suspended = _grouped_counts(
        sa.select(AuditLog.object_id, sa.func.count(AuditLog.id))
        .where(
            AuditLog.action == "provider.suspend",
            AuditLog.object_type == Provider.__tablename__,
            AuditLog.object_id.in_([str(i) for i in ids]),
            AuditLog.occurred_at >= suspensions_since,
            AuditLog.occurred_at < end,
        )
        .group_by(AuditLog.object_id)
    )
    reviews = {
        provider_id: (count, int(total or 0))
        for provider_id, count, total in db.session.execute(
            sa.select(Review.provider_id, sa.func.count(Review.id), sa.func.sum(Review.rating))
            .where(
                Review.provider_id.in_(ids),
                Review.created_at >= reviews_since,
                Review.created_at < end,
            )
            .group_by(Review.provider_id)
        )
    }
    sources = _sources()
    scores = []
    for provider in providers:
        count, total = reviews.get(provider.id, (0, 0))
        scores.append(
            CreditScore(
                provider=provider,
                today=today,
                upheld_complaints=upheld.get(provider.id, 0),
                fraud_flags=sum(int(source(provider.id, fraud_since)) for source in sources),
                suspensions=suspended.get(str(provider.id), 0),
                review_count=count,
                average_rating=total / count if count else None,
                rating_points=rating_points(count, total),
            )
        )
    return scores


def credit_score(provider: Provider, today: date) -> CreditScore:
    return credit_scores([provider], today)[0]


def providers_below_threshold(today: date, *, district_id: int | None = None) -> list[CreditScore]:
    """Active providers scoring below THRESHOLD, lowest first (of one district if given)."""
    statement = sa.select(Provider).where(Provider.status == "active")
    if district_id is not None:
        statement = statement.where(Provider.district_id == district_id)
    below = [s for s in credit_scores(db.session.scalars(statement), today) if s.below_threshold]
    return sorted(below, key=lambda s: (s.score, s.provider.name, s.provider.id))
