"""Periodic jobs of the vouchers domain (see eldercare.scheduler.ScheduledJob)."""

from eldercare.scheduler import ScheduledJob

JOBS: list[ScheduledJob] = []
