"""Periodic jobs of the vouchers domain (see eldercare.scheduler.ScheduledJob).

All are idempotent catch-ups: a second scheduler or a rerun expires and issues nothing
twice, and a run missed or failed is made up by the next one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date

import sqlalchemy as sa

from eldercare.db import db
from eldercare.job_runs import describe
from eldercare.scheduler import JobFailed, ScheduledJob
from eldercare.timeutil import local_today
from vouchers.integrity import anomalies
from vouchers.issuance.eligibility_feed import process_eligibility_events
from vouchers.issuance.monthly import expire_month, issue_monthly, month_of
from vouchers.models import Voucher
from vouchers.pool.ledger_checks import EVERY as LEDGER_CHECK_EVERY
from vouchers.pool.ledger_checks import verify_ledger_job

log = logging.getLogger(__name__)

CATCH_UP_MINUTES = 10  # how often the monthly catch-up looks for work
BATCH_SIZE = 200  # elders per commit at least: a crash loses at most one batch, a rerun redoes it


def commit_every(size: int = BATCH_SIZE) -> Callable[[int], None]:
    """A ``progress`` callback for issuance and expiry, which call it after each batch with
    the number of elders (vouchers) handled so far: it commits once ``size`` more were
    handled since its last commit, so a long run keeps what it finished (the unit of work
    commits the last, partial batch)."""
    committed = 0

    def progress(done: int) -> None:
        nonlocal committed
        if done - committed >= size:
            db.session.commit()
            committed = done

    return progress


def months_to_expire(current: date) -> list[date]:
    """Every month before ``current`` that still has active vouchers, oldest first."""
    return list(
        db.session.scalars(
            sa.select(Voucher.month)
            .where(Voucher.status == "active", Voucher.month < current)
            .distinct()
            .order_by(Voucher.month)
        )
    )


def _step(name: str, work: Callable[[], object], done: dict, failed: dict) -> None:
    """One step of the catch-up in transactions of its own: a step that fails is rolled
    back and noted, and the next step still runs (the next run retries the failed one)."""
    try:
        done[name] = work()
        db.session.commit()
    except Exception as error:
        db.session.rollback()
        log.exception("monthly catch-up: %s failed", name)
        failed[name] = describe(error)


def monthly_vouchers() -> dict:
    """The monthly catch-up, run every few minutes and at scheduler start: every past month
    that still has active vouchers is expired (oldest first; its balances go back to the
    districts), then the current month is issued to whoever still lacks a voucher. Both are
    idempotent, so running it often costs a few queries; a month missed by a stopped
    scheduler or a failed run is done by the next run. A failing step does not stop the
    others; the run then ends in JobFailed, recorded for the bureau, and is retried."""
    current = month_of(local_today())
    done: dict = {}
    failed: dict[str, str] = {}
    for month in months_to_expire(current):
        _step(
            f"expire {month:%Y-%m}",
            lambda month=month: expire_month(month, progress=commit_every(BATCH_SIZE)),
            done,
            failed,
        )
    _step(
        f"issue {current:%Y-%m}",
        lambda: issue_monthly(current, progress=commit_every(BATCH_SIZE)).to_dict(),
        done,
        failed,
    )
    if failed:
        message = "; ".join(f"{name}: {error}" for name, error in failed.items())
        raise JobFailed(message, {"done": done, "failed": failed})
    return done


def eligibility_events() -> dict:
    result = process_eligibility_events()
    # Committed before the anomaly rules re-check the dead: the feed holds the vouchers'
    # locks, and flagging locks redemption rows, which come before them in the lock order.
    db.session.commit()
    result["after_death"] = anomalies.recheck_deaths(result["died"])
    if result["after_death"]["failed"]:
        # The feed's work is committed and kept in the summary; the job shows failed and
        # the next run re-checks (a catch-up).
        raise JobFailed("the after-death re-check failed for some residents", result)
    return result


JOBS: list[ScheduledJob] = [
    ScheduledJob(
        id="vouchers-monthly",
        func=monthly_vouchers,
        trigger="interval",
        trigger_args={"minutes": CATCH_UP_MINUTES},
        description="Catch-up: expire every past month's vouchers, then issue this month's",
        run_at_start=True,
    ),
    ScheduledJob(
        id="vouchers-eligibility-events",
        func=eligibility_events,
        trigger="interval",
        trigger_args={"minutes": 1},
        description="Issue first vouchers and revoke on death or loss of eligibility",
    ),
    ScheduledJob(
        id="vouchers-verify-ledger",
        func=verify_ledger_job,
        trigger="interval",
        trigger_args={"minutes": int(LEDGER_CHECK_EVERY.total_seconds() // 60)},
        description="Verify the ledger (entries, balances, sub-ledgers) and store the result",
        run_at_start=True,
    ),
]
