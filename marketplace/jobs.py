"""Periodic jobs of the marketplace domain (see eldercare.scheduler.ScheduledJob)."""

from eldercare.scheduler import ScheduledJob

JOBS: list[ScheduledJob] = []
