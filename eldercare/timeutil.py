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
