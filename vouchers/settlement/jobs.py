"""Periodic jobs of settlement (see eldercare.scheduler.ScheduledJob)."""

JOBS: list = []
