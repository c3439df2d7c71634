"""Periodic jobs of the assessment domain (see eldercare.scheduler.ScheduledJob)."""

from eldercare.scheduler import ScheduledJob

JOBS: list[ScheduledJob] = []
