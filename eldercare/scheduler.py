"""Periodic jobs: each domain lists its jobs; `flask scheduler run` runs them.

APScheduler keeps its job store in the platform's database so that a restarted scheduler
knows what it already planned. Every job must be idempotent: a second scheduler or a
manual rerun never issues, expires or settles twice; and every job is a catch-up (it does
whatever is due and not yet done), so a run that comes late or twice is harmless, and a run
that failed is simply redone by the next one.

- A restart keeps each stored next run time: a job is written to the store only when it is
  missing or its definition changed (APScheduler 3's ``replace_existing=True`` would
  recompute the next run from now, and a run missed while the scheduler was down would
  never happen). Jobs marked ``run_at_start`` also run once when the scheduler starts.
- One app (and so one engine and pool) per scheduler process: ``make_scheduler`` binds it
  and ``run_job`` pushes its context for each run.
- Each run is recorded in ``job_runs`` (``eldercare.job_runs``), failures included.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import click
import sqlalchemy as sa
from flask import current_app
from flask.cli import AppGroup

from eldercare import job_runs
from eldercare.db import db, unit_of_work
from eldercare.timeutil import SHANGHAI, format_local

log = logging.getLogger(__name__)
cli = AppGroup("scheduler", help="Run or inspect the periodic jobs.")

JOB_STORE_TABLE = "apscheduler_jobs"
RUN_JOB = "eldercare.scheduler:run_job"  # what the store keeps: a reference, not the app
# coalesce: runs missed while down become one; no misfire grace limit: a catch-up that comes
# late still runs (APScheduler would otherwise skip a run more than the grace time late).
JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": None}


@dataclass(frozen=True)
class ScheduledJob:
    id: str
    func: Callable[[], object]  # runs inside an app context and one unit of work
    trigger: str  # "cron" or "interval"
    trigger_args: dict = field(default_factory=dict)
    description: str = ""
    run_at_start: bool = False  # also run once whenever the scheduler starts


class JobFailed(Exception):
    """Raised by a job that did part of its work: recorded as a failure with ``summary``
    (what was done and what failed) as the run's result."""

    def __init__(self, message: str, summary: dict):
        super().__init__(message)
        self.summary = summary


def all_jobs(app) -> dict[str, ScheduledJob]:
    return {job.id: job for job in app.extensions.get("scheduled_jobs", [])}


# --------------------------------------------------------------------------- running a job


def execute(job: ScheduledJob) -> tuple[bool, object]:
    """Run ``job`` in the current app context as one unit of work, recorded in job_runs.
    Returns (ok, result or error text). A failure is logged and recorded, not raised: the
    next scheduled run retries."""
    run_id = job_runs.record_start(job.id)
    try:
        with unit_of_work():
            result = job.func()
    except Exception as error:
        log.exception("job %s failed", job.id)
        job_runs.record_end(run_id, job.id, error=error, result=getattr(error, "summary", None))
        return False, job_runs.describe(error)
    job_runs.record_end(run_id, job.id, error=None, result=result)
    return True, result


_app = None  # the scheduler process's app, bound by make_scheduler
_running: dict[str, threading.Lock] = {}
_running_guard = threading.Lock()


def bind_app(app) -> None:
    global _app
    _app = app


def run_job(job_id: str) -> object:
    """Entry point APScheduler stores by reference. Runs in the app bound by
    ``make_scheduler``: building an app per run would build an engine and a connection
    pool per run, which nothing closes. A run that finds the same job already running in
    this process (the run at start overlapping a scheduled one) does nothing."""
    if _app is None:
        raise RuntimeError("no app bound; start the scheduler with 'flask scheduler run'")
    with _running_guard:
        lock = _running.setdefault(job_id, threading.Lock())
    if not lock.acquire(blocking=False):
        log.info("job %s is already running in this process; this run does nothing", job_id)
        return None
    try:
        with _app.app_context():
            return execute(all_jobs(_app)[job_id])[1]
    finally:
        lock.release()


# --------------------------------------------------------------------------- the scheduler


# APScheduler is imported by the functions that use it: only `flask scheduler` needs it, and
# every other command, job and worker would pay for the import at start-up.


def make_scheduler(app, scheduler_class=None):
    """A scheduler (blocking unless ``scheduler_class`` says otherwise) whose job store lives
    in the app's database, on the app's own engine, with the app bound for the runs."""
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.jobstores.memory import MemoryJobStore
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

    if scheduler_class is None:
        from apscheduler.schedulers.blocking import BlockingScheduler as scheduler_class

    bind_app(app)
    with app.app_context():
        engine = db.engine
    return scheduler_class(
        timezone=SHANGHAI,
        jobstores={
            "default": SQLAlchemyJobStore(engine=engine, tablename=JOB_STORE_TABLE),
            "startup": MemoryJobStore(),  # the one-off runs at start; never stored
        },
        executors={"default": ThreadPoolExecutor(job_threads(engine))},
        job_defaults=JOB_DEFAULTS,
    )


def job_threads(engine) -> int:
    """How many jobs may run at once. SQLite has one writer: two jobs writing at the same
    moment make one fail with "database is locked" (a read transaction cannot wait to
    become a write one), so on SQLite (the demo) the jobs take turns."""
    return 1 if engine.dialect.name == "sqlite" else 4


def _trigger(job: ScheduledJob, interval_cap_seconds: float = 0):
    """The job's trigger; with ``interval_cap_seconds`` (SCHEDULER_INTERVAL_CAP_SECONDS, for
    a demo or a test that wants to see the catch-ups work in seconds) no interval job waits
    longer than that between runs. Cron jobs keep their hour: they are tied to a time of day,
    not to a delay."""
    from apscheduler.triggers.cron import CronTrigger
    from apscheduler.triggers.interval import IntervalTrigger

    if job.trigger == "interval" and interval_cap_seconds:
        own = IntervalTrigger(**job.trigger_args).interval.total_seconds()
        if interval_cap_seconds < own:
            return IntervalTrigger(seconds=interval_cap_seconds, timezone=SHANGHAI)
    triggers = {"cron": CronTrigger, "interval": IntervalTrigger}
    return triggers[job.trigger](**({"timezone": SHANGHAI} | job.trigger_args))


def _definition(func_ref: str, args, trigger) -> tuple:
    """What makes two stored jobs the same job; the next run time is not part of it."""
    return (func_ref, tuple(args), type(trigger).__name__, str(trigger), str(trigger.timezone))


def add_jobs(scheduler, app, jobs=None) -> None:
    """Put the app's jobs into the store before the scheduler starts: a job is written only
    when missing or when its definition changed, so every stored next run time survives a
    restart. A changed job's next run is never later than the stored one (a cron job turned
    interval does not skip its due run). Jobs the app no longer has are removed."""
    jobs = list(jobs if jobs is not None else all_jobs(app).values())
    store = scheduler._jobstores["default"]
    store.jobs_t.create(store.engine, checkfirst=True)
    stored = {job.id: job for job in store.get_all_jobs()}
    now = datetime.now(SHANGHAI)
    for gone in set(stored) - {job.id for job in jobs}:
        log.info("job %s is no longer registered; removed from the store", gone)
        store.remove_job(gone)
    interval_cap = app.config.get("SCHEDULER_INTERVAL_CAP_SECONDS") or 0
    for job in jobs:
        trigger = _trigger(job, interval_cap)
        old = stored.get(job.id)
        next_run = trigger.get_next_fire_time(None, now)
        unchanged = old is not None and _definition(
            old.func_ref, old.args, old.trigger
        ) == _definition(RUN_JOB, [job.id], trigger)
        if unchanged:
            next_run = old.next_run_time
        elif old is not None and old.next_run_time is not None:
            next_run = min(next_run, old.next_run_time)
        if not unchanged:
            scheduler.add_job(
                RUN_JOB,
                trigger=trigger,
                args=[job.id],
                id=job.id,
                name=job.description or job.id,
                replace_existing=True,
                next_run_time=next_run,
            )
        if job.run_at_start and next_run is not None and next_run > now:
            # Not due in the store, so it would not run now: a one-off run at start.
            scheduler.add_job(
                RUN_JOB,
                trigger="date",
                args=[job.id],
                id=f"{job.id}@start",
                name=f"{job.description or job.id} (at start)",
                jobstore="startup",
            )


@cli.command("run")
def run_scheduler():
    """Run the scheduler in the foreground until stopped. On PostgreSQL only one scheduler
    per database is active; another started beside it stands by until that one stops."""
    from eldercare.scheduler_leader import Leadership, watch

    app = current_app._get_current_object()
    poll = app.config["SCHEDULER_STANDBY_POLL_SECONDS"]
    leadership = Leadership(db.engine)
    if not leadership.try_acquire():
        log.warning("another scheduler is active on this database; standing by")
        click.echo("another scheduler is active on this database; standing by", err=True)
        leadership.wait(poll)
    scheduler = make_scheduler(app)
    add_jobs(scheduler, app)
    lost = threading.Event()

    def on_lost() -> None:
        lost.set()
        scheduler.shutdown(wait=False)

    stop_watch = watch(leadership, on_lost, poll)
    log.info("scheduler starting with %d jobs", len(all_jobs(app)))
    click.echo(f"scheduler active with {len(all_jobs(app))} jobs", err=True)
    try:
        scheduler.start()
    finally:
        stop_watch.set()
        leadership.release()
    if lost.is_set():
        # Another scheduler may lead by now; whoever supervises this process restarts it.
        raise SystemExit(3)


# --------------------------------------------------------------------------- inspecting


def stored_next_runs() -> dict[str, datetime | None]:
    """Each stored job's next run time, read from the job store's table (absent before the
    scheduler's first start)."""
    connection = db.session.connection()
    if not sa.inspect(connection).has_table(JOB_STORE_TABLE):
        return {}
    table = sa.table(JOB_STORE_TABLE, sa.column("id"), sa.column("next_run_time"))
    return {
        job_id: datetime.fromtimestamp(stamp, UTC) if stamp is not None else None
        for job_id, stamp in connection.execute(sa.select(table.c.id, table.c.next_run_time))
    }


def _run(run: job_runs.JobRun | None) -> dict | None:
    return run.to_dict() if run is not None else None


def job_rows(app) -> list[dict]:
    next_runs = stored_next_runs()
    rows = []
    for job in all_jobs(app).values():
        health = job_runs.health_of(job.id)
        next_run = next_runs.get(job.id)
        rows.append(
            {
                "id": job.id,
                "trigger": job.trigger,
                "args": job.trigger_args,
                "description": job.description,
                "next_run_time": next_run.isoformat() if next_run else None,
                "failing": health.failing,
                "last_run": _run(health.last_run),
                "last_success": _run(health.last_success),
                "last_failure": _run(health.last_failure),
            }
        )
    return rows


def _human(row: dict) -> str:
    def when(run):
        return format_local(datetime.fromisoformat(run["started_at"])) if run else "never"

    next_run = row["next_run_time"]
    lines = [
        f"{row['id']}: {row['trigger']} {row['args']}  {row['description']}",
        f"  next run: {format_local(datetime.fromisoformat(next_run)) if next_run else '-'}"
        f"  last run: {when(row['last_run'])}"
        f" ({row['last_run']['status'] if row['last_run'] else '-'})"
        f"  last success: {when(row['last_success'])}",
    ]
    if row["last_failure"]:
        failure = row["last_failure"]
        state = "FAILING" if row["failing"] else "since succeeded"
        lines.append(f"  last failure ({state}): {when(failure)} {failure['error']}")
    return "\n".join(lines)


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable list.")
def list_jobs(as_json: bool):
    """Each job: its trigger, stored next run, last run, last success and last failure."""
    rows = job_rows(current_app)
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False))
    elif not rows:
        click.echo("no jobs registered")
    else:
        click.echo("\n".join(_human(row) for row in rows))


@cli.command("run-job")
@click.argument("job_id")
def run_one(job_id: str):
    """Run one job now, in this process (recorded like a scheduled run)."""
    jobs = all_jobs(current_app)
    if job_id not in jobs:
        raise click.BadParameter(f"unknown job {job_id!r}; see 'flask scheduler list'")
    ok, outcome = execute(jobs[job_id])
    key = "result" if ok else "error"
    click.echo(json.dumps({"job": job_id, key: outcome}, ensure_ascii=False, default=str))
    if not ok:
        raise SystemExit(1)
