"""The ledger check, run off the page: stored results of ``ledger.verify_ledger``.

``verify_ledger`` reads every journal line (a second or so per million lines on PostgreSQL),
too much for every load of the pool page. The hourly job ``vouchers-verify-ledger``,
``flask vouchers verify-ledger`` and the pool page's "Check now" button run it and store the
result (``ledger_checks``); the pool page and the API show the last one and its age.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from eldercare.db import db
from eldercare.scheduler import JobFailed
from eldercare.timeutil import now_utc
from vouchers.models import JournalLine, LedgerCheckRun
from vouchers.pool.ledger import verify_ledger

EVERY = timedelta(hours=1)  # the scheduled check
# Older than this, the page says the scheduled check is not running.
STALE_AFTER = timedelta(hours=2)
# The pool page's button reads the whole journal; clicks closer together than this show the
# last result instead of starting another scan.
BUTTON_INTERVAL = timedelta(minutes=1)


def run_check(*, requested_by_user_id: int | None = None) -> LedgerCheckRun:
    """Verify the books now and store the result in the caller's unit of work."""
    started = now_utc()
    lines = db.session.scalar(sa.select(sa.func.count()).select_from(JournalLine)) or 0
    check = verify_ledger()
    run = LedgerCheckRun(
        started_at=started,
        finished_at=now_utc(),
        ok=check.ok,
        findings=check.to_dict(),
        journal_lines=lines,
        requested_by_user_id=requested_by_user_id,
    )
    db.session.add(run)
    db.session.flush()
    return run


def last_check() -> LedgerCheckRun | None:
    return db.session.scalar(
        sa.select(LedgerCheckRun)
        .order_by(LedgerCheckRun.started_at.desc(), LedgerCheckRun.id.desc())
        .limit(1)
    )


def is_stale(run: LedgerCheckRun | None) -> bool:
    return run is None or run.finished_at < now_utc() - STALE_AFTER


def verify_ledger_job() -> dict:
    """The scheduled check: stored whatever it finds; a failed check is also a failed run,
    so ``flask scheduler list`` shows it too."""
    run = run_check()
    summary = {"ok": run.ok, "journal_lines": run.journal_lines, "check_id": run.id}
    if not run.ok:
        db.session.commit()  # the finding is kept: the failed run rolls back nothing of it
        raise JobFailed("the books do not balance; see the pool page", run.findings | summary)
    return summary


def checked_recently(run: LedgerCheckRun | None) -> bool:
    return run is not None and run.finished_at > now_utc() - BUTTON_INTERVAL
