"""Periodic jobs: each domain lists its jobs; `flask scheduler run` runs them.

APScheduler keeps its job store in the platform's database so that a restarted scheduler
knows what it already planned. Every job must be idempotent: a second scheduler or a
manual rerun never issues, expires or settles twice.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import click
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.blocking import BlockingScheduler
from flask import current_app
from flask.cli import AppGroup

from eldercare.db import unit_of_work
from eldercare.timeutil import SHANGHAI

log = logging.getLogger(__name__)
cli = AppGroup("scheduler", help="Run or inspect the periodic jobs.")


@dataclass(frozen=True)
class ScheduledJob:
    id: str
    func: Callable[[], object]  # runs inside an app context and one unit of work
    trigger: str  # "cron" or "interval"
    trigger_args: dict = field(default_factory=dict)
    description: str = ""


def all_jobs(app) -> dict[str, ScheduledJob]:
    return {job.id: job for job in app.extensions.get("scheduled_jobs", [])}


def run_job(job_id: str) -> object:
    """Entry point APScheduler stores by reference; builds its own app for the job."""
    from eldercare import create_app

    app = create_app()
    with app.app_context():
        job = all_jobs(app)[job_id]
        with unit_of_work():
            return job.func()


@cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable list.")
def list_jobs(as_json: bool):
    jobs = all_jobs(current_app)
    rows = [
        {"id": j.id, "trigger": j.trigger, "args": j.trigger_args, "description": j.description}
        for j in jobs.values()
    ]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False))
    elif not rows:
        click.echo("no jobs registered")
    else:
        for row in rows:
            click.echo(f"{row['id']}: {row['trigger']} {row['args']}  {row['description']}")


@cli.command("run-job")
@click.argument("job_id")
def run_one(job_id: str):
    """Run one job now, in this process."""
    jobs = all_jobs(current_app)
    if job_id not in jobs:
        raise click.BadParameter(f"unknown job {job_id!r}; see 'flask scheduler list'")
    with unit_of_work():
        result = jobs[job_id].func()
    click.echo(json.dumps({"job": job_id, "result": result}, ensure_ascii=False, default=str))


def make_scheduler(app, scheduler_class=BlockingScheduler):
    """A scheduler whose job store lives in the app's database."""
    return scheduler_class(
        timezone=SHANGHAI,
        jobstores={
            "default": SQLAlchemyJobStore(
                url=app.config["SQLALCHEMY_DATABASE_URI"], tablename="apscheduler_jobs"
            )
        },
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600},
    )


def add_jobs(scheduler, app, jobs=None) -> None:
    for job in jobs if jobs is not None else all_jobs(app).values():
        scheduler.add_job(
            "eldercare.scheduler:run_job",
            trigger=job.trigger,
            args=[job.id],
            id=job.id,
            name=job.description or job.id,
            replace_existing=True,
            **job.trigger_args,
        )


@cli.command("run")
def run_scheduler():
    """Run the scheduler in the foreground until stopped."""
    app = current_app._get_current_object()
    scheduler = make_scheduler(app)
    add_jobs(scheduler, app)
    log.info("scheduler starting with %d jobs", len(scheduler.get_jobs()))
    scheduler.start()
