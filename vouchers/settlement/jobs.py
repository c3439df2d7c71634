"""Periodic jobs of settlement (see eldercare.scheduler.ScheduledJob)."""

from __future__ import annotations

from eldercare.scheduler import JobFailed, ScheduledJob
from vouchers.settlement.reconcile.reconcile import RECONCILE_JOB

SETTLE_EVERY_MINUTES = 60


def settlement_run() -> dict:
    """The catch-up: every month whose cut-off has passed and that has something to settle
    (a missed day or a restart loses nothing: the next run finds the month still
    settleable). Each month commits on its own; a failing month is retried next hour and
    the run is recorded as failed with what was done."""
    from vouchers.settlement.statements.run import settle_due

    report = settle_due(commit=True)
    if report["failed"]:
        message = "; ".join(f"{m}: {why}" for m, why in report["failed"].items())
        raise JobFailed(message, report)
    return report


JOBS: list = [
    ScheduledJob(
        id="settlement-run",
        func=settlement_run,
        trigger="interval",
        trigger_args={"minutes": SETTLE_EVERY_MINUTES},
        description="Catch-up: settle every month whose reversal window has closed",
        run_at_start=True,
    ),
]
JOBS.append(RECONCILE_JOB)  # settlement-reconcile: daily, last month and this month
