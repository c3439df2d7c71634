"""Periodic jobs of the vouchers domain (see eldercare.scheduler.ScheduledJob).

Both are idempotent: a second scheduler or a rerun expires and issues nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable

from eldercare.db import db
from eldercare.scheduler import ScheduledJob
from eldercare.timeutil import local_today
from vouchers.eligibility_feed import process_eligibility_events
from vouchers.issuance import expire_month, issue_monthly, month_of, previous_month

BATCH_SIZE = 200  # elders per commit: a crash loses at most this many, and a rerun redoes them


def commit_every(size: int = BATCH_SIZE) -> Callable[[int], None]:
    """A ``progress`` callback for issuance and expiry that commits each full batch, so a long
    run keeps what it finished (the unit of work commits the last, partial batch)."""

    def progress(done: int) -> None:
        if done % size == 0:
            db.session.commit()

    return progress


def monthly_vouchers() -> dict:
    """At 00:05 on the 1st (Asia/Shanghai): last month's vouchers expire and their balances
    go back to the districts, then this month's are issued."""
    month = month_of(local_today())
    expired = expire_month(previous_month(month), progress=commit_every())
    db.session.commit()  # expiry's returns are in the districts before issuance draws on them
    issued = issue_monthly(month, progress=commit_every())
    return {"expired": expired, "issued": issued.to_dict()}


def eligibility_events() -> dict:
    return process_eligibility_events()


JOBS: list[ScheduledJob] = [
    ScheduledJob(
        id="vouchers-monthly",
        func=monthly_vouchers,
        trigger="cron",
        trigger_args={"day": 1, "hour": 0, "minute": 5, "timezone": "Asia/Shanghai"},
        description="Expire last month's vouchers, then issue this month's",
    ),
    ScheduledJob(
        id="vouchers-eligibility-events",
        func=eligibility_events,
        trigger="interval",
        trigger_args={"minutes": 1},
        description="Issue first vouchers and revoke on death or loss of eligibility",
    ),
]
