"""Builders for assessment tests."""

from __future__ import annotations

from datetime import date, timedelta

from assessment.demo import items_with_total  # noqa: F401  (re-exported for the tests)


def add_years(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


def yesterday(day: date) -> date:
    return day - timedelta(days=1)
