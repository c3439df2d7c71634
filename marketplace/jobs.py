"""Periodic jobs of the marketplace domain (see eldercare.scheduler.ScheduledJob)."""

from eldercare.scheduler import ScheduledJob
from marketplace.bookings import remind_upcoming_bookings

JOBS: list[ScheduledJob] = [
    ScheduledJob(
        id="marketplace.remind_bookings",
        func=remind_upcoming_bookings,
        trigger="cron",
        trigger_args={"hour": 18, "minute": 0},  # Asia/Shanghai, the scheduler's zone
        description="Remind elders and families the day before an accepted booking",
    ),
]
