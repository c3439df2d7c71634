"""UTC in the database, Asia/Shanghai on screen and for month boundaries."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

SHANGHAI = ZoneInfo("Asia/Shanghai")


def now_utc() -> datetime:
    return datetime.now(UTC)


def to_local(value: datetime) -> datetime:
    return value.astimezone(SHANGHAI)


def local_today(at: datetime | None = None) -> date:
    """The calendar date in Shanghai, which is what 'today' means for the programme."""
    return to_local(at or now_utc()).date()


def format_local(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if value is None:
        return ""
    return to_local(value).strftime(fmt)


# The days a date typed into the programme can fall on: births from 1900, validity and policy
# dates until 2100. Year 9999 (or 1) is a typing error, and the arithmetic done on dates
# (the next day, the next month, a time zone) overflows on it: refused where dates are read
# (eldercare.forms.parse_date for the pages, eldercare.api_fields for the API).
FIRST_DAY = date(1900, 1, 1)
LAST_DAY = date(2100, 12, 31)


def in_date_range(day: date) -> bool:
    return FIRST_DAY <= day <= LAST_DAY
