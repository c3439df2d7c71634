"""Builders for assessment tests."""

from __future__ import annotations

from datetime import date, timedelta

from assessment.instrument import instrument


def items_with_total(total: int) -> dict[str, int]:
    """A complete, valid item set whose scores add up to ``total`` (filled greedily)."""
    remaining = total
    items = {}
    for code, item in instrument().items.items():
        score = min(item.max, remaining)
        items[code] = score
        remaining -= score
    assert remaining == 0, f"{total} is more than the instrument's maximum"
    return items


def add_years(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


def yesterday(day: date) -> date:
    return day - timedelta(days=1)
