"""Periodic jobs of the assessment domain (see eldercare.scheduler.ScheduledJob)."""

from assessment.reminders import remind_expiring_assessments
from eldercare.scheduler import ScheduledJob

JOBS: list[ScheduledJob] = [
    ScheduledJob(
        id="assessment.remind_expiring",
        func=remind_expiring_assessments,
        trigger="cron",
        trigger_args={"hour": 8, "minute": 0},  # Asia/Shanghai, the scheduler's zone
        description="Remind elders and families 30 days before an assessment expires",
    ),
]
