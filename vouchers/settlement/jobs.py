"""Periodic jobs of settlement (see eldercare.scheduler.ScheduledJob)."""

from vouchers.settlement.reconcile import RECONCILE_JOB

JOBS: list = []
JOBS.append(RECONCILE_JOB)  # settlement-reconcile: daily, last month and this month
