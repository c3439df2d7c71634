"""What each scheduled job did: one ``job_runs`` row per run, and each job's health.

The job wrapper (``eldercare.scheduler.execute``) writes the row in transactions of its own,
before and after the job's unit of work: a job that fails is rolled back, its record is
not. ``flask scheduler list`` and the bureau's pool page read them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from eldercare.db import Base, UTCDateTime, db
from eldercare.errors import DomainError
from eldercare.timeutil import now_utc

log = logging.getLogger(__name__)
STATUSES = ("running", "ok", "failed")
ERROR_LENGTH = 1000
LIST_ITEMS = 20  # a result's lists are cut to this many items (with the count kept)
KEEP_FOR = timedelta(days=30)  # older runs are pruned, except each job's last success


class JobRun(Base):
    __tablename__ = "job_runs"
    __table_args__ = (
        sa.CheckConstraint("status IN ('running', 'ok', 'failed')", name="known_status"),
        sa.Index("ix_job_runs_job_id_started_at", "job_id", "started_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(sa.String(100))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # running until the wrapper records the end; a row left running means the process died.
    status: Mapped[str] = mapped_column(sa.String(10), default="running")
    # Failed: the exception, cut to ERROR_LENGTH (a database error's SQL and values left out).
    error: Mapped[str | None] = mapped_column(sa.String(ERROR_LENGTH))
    # What the job returned (or, for a partial failure, what it did), lists cut short.
    result: Mapped[dict | None] = mapped_column(sa.JSON)

    def to_dict(self) -> dict:
        return {
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "status": self.status,
            "error": self.error,
            "result": self.result,
        }


def describe(error: BaseException) -> str:
    """The error as the bureau and the operator read it, without the SQL and its values (a
    database error's parameters could name elders)."""
    if isinstance(error, sa.exc.DBAPIError) and error.orig is not None:
        text = f"{type(error.orig).__name__}: {error.orig}"
    elif isinstance(error, DomainError):
        details = "; ".join(str(m) for m in error.details.values())
        text = f"{type(error).__name__}: {error.message}" + (f" ({details})" if details else "")
    else:
        text = f"{type(error).__name__}: {error}"
    return text.strip()[:ERROR_LENGTH]


def _summary(value):
    """``value`` as JSON with long lists cut short: a month's report can list thousands."""
    if isinstance(value, dict):
        return {str(k): _summary(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [_summary(v) for v in value[:LIST_ITEMS]]
        return items if len(value) <= LIST_ITEMS else items + [f"… {len(value)} in all"]
    return json.loads(json.dumps(value, default=str))


def record_start(job_id: str) -> int:
    run = JobRun(job_id=job_id, started_at=now_utc(), status="running")
    db.session.add(run)
    db.session.commit()
    return run.id


def record_end(run_id: int, job_id: str, *, error: BaseException | None, result) -> None:
    """Close the run's row in a transaction of its own. A failure here is logged, never
    raised: it must not hide the job's own outcome."""
    try:
        db.session.execute(
            sa.update(JobRun)
            .where(JobRun.id == run_id)
            .values(
                finished_at=now_utc(),
                status="failed" if error is not None else "ok",
                error=describe(error) if error is not None else None,
                result=_summary(result) if result is not None else None,
            )
        )
        _prune(job_id)
        db.session.commit()
    except Exception:
        db.session.rollback()
        log.exception("could not record the end of run %s of job %s", run_id, job_id)


def _prune(job_id: str) -> None:
    last_ok = _last(job_id, JobRun.status == "ok")
    db.session.execute(
        sa.delete(JobRun).where(
            JobRun.job_id == job_id,
            JobRun.started_at < now_utc() - KEEP_FOR,
            JobRun.id != (last_ok.id if last_ok else -1),
        )
    )


def _last(job_id: str, *where) -> JobRun | None:
    return db.session.scalar(
        sa.select(JobRun).where(JobRun.job_id == job_id, *where).order_by(JobRun.id.desc()).limit(1)
    )


@dataclass
class JobHealth:
    job_id: str
    last_run: JobRun | None
    last_success: JobRun | None
    last_failure: JobRun | None

    @property
    def failing(self) -> bool:
        """The last run that finished failed (a retry may be running now)."""
        finished = self.last_run
        if finished is not None and finished.status == "running":
            finished = _last(self.job_id, JobRun.status != "running")
        return finished is not None and finished.status == "failed"

    def succeeded_within(self, period: timedelta) -> bool:
        return (
            self.last_success is not None
            and self.last_success.finished_at is not None
            and self.last_success.finished_at >= now_utc() - period
        )


def health_of(job_id: str) -> JobHealth:
    return JobHealth(
        job_id,
        _last(job_id),
        _last(job_id, JobRun.status == "ok"),
        _last(job_id, JobRun.status == "failed"),
    )
