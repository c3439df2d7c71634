"""The monthly jobs killed with SIGKILL at random points (PostgreSQL): issuance, expiry, the
settlement catch-up and the scheduler's monthly catch-up, each run as the real ``flask``
command in a process of its own, killed part way at a delay drawn from seeded random
generators, rerun to completion; the database must then equal a twin's on which the command
ran once, uninterrupted (tests/killed_runs.py).

And each job started twice at once, as two processes: its work is done once (the same twin).
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import date

import pytest
import sqlalchemy as sa

from eldercare import audit
from eldercare.db import db
from eldercare.timeutil import local_today
from tests.conftest import ON_POSTGRES
from tests.killed_runs import (
    app_on,
    clone,
    flask_command,
    kill_part_way,
    kill_points,
    seeded_template,
    state,
    timed_run,
)
from tests.vouchers.test_issuance_crash import CAP, DISTRICTS, check_books, seed_elders
from vouchers.issuance.monthly import month_of, previous_month
from vouchers.models import Voucher
from vouchers.pool import ledger

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not ON_POSTGRES, reason="PostgreSQL-only; set TEST_DATABASE_URL (CI does)"),
]

SEEDS = (1, 2, 3)  # each job is killed once per seed (tests/killed_runs.py: kill_points)
# Issuance and expiry: 2,000 elders in two districts; each district's batch is committed on
# its own (the monthly catch-up: four commits, expiry's two then issuance's two).
ELDERS = 2000
# Settlement: two months (each its own transaction in the catch-up), each 1,000 vouchers with
# 4,000 redemptions at 40 providers.
REDEMPTIONS = 4000


def _month(day: date) -> str:
    return day.strftime("%Y-%m")


def _seed_elders(app) -> None:
    seed_elders(app, ELDERS)


def _seed_last_months_vouchers(app) -> None:
    """Every elder holds last month's voucher, unspent, issued from the district's account as
    the real flow leaves the books. Set-based."""
    _seed_elders(app)
    month = previous_month(month_of(local_today()))
    with app.app_context():
        policy_id = db.session.scalar(sa.text("SELECT min(id) FROM voucher_policies"))
        db.session.execute(
            sa.text(
                "INSERT INTO vouchers (resident_id, month, kind, policy_id, district_id,"
                " face_value_fen, balance_fen, held_fen, status, issued_at)"
                " SELECT r.id, :month, 'home_community', :policy, r.district_id, :cap,"
                " :cap, 0, 'active', :issued FROM residents r"
            ),
            {"month": month, "policy": policy_id, "cap": CAP, "issued": month},
        )
        for code in DISTRICTS:
            face = db.session.execute(
                sa.text(
                    "SELECT sum(v.face_value_fen) FROM vouchers v"
                    " JOIN districts d ON d.id = v.district_id WHERE d.code = :code"
                ),
                {"code": code},
            ).scalar_one()
            face = int(face)
            account = ledger.district_account_code(code)
            ledger.post("issue", "seed", [(account, -face), ("vouchers:outstanding", face)])
        db.session.commit()


def _seed_settleable_months(app) -> None:
    from bench.settlement import _seed_month, _seed_parties

    with app.app_context():
        _seed_parties(REDEMPTIONS, providers=40)
        for month in _settled_months():
            _seed_month(month, REDEMPTIONS, providers=40)


def _settled_months() -> list[date]:
    # Two and three months back: their reversal windows have closed whatever today's date.
    two_ago = previous_month(previous_month(month_of(local_today())))
    return [previous_month(two_ago), two_ago]


def _issuance_checks(url: str) -> None:
    with app_on(url) as app:
        check_books(app, expected_count=ELDERS)


def _expiry_checks(url: str) -> None:
    month = previous_month(month_of(local_today()))
    with app_on(url):
        statuses = db.session.scalars(
            sa.select(Voucher.status).where(Voucher.month == month).distinct()
        ).all()
        assert statuses == ["expired"]
        unspent = db.session.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(Voucher.balance_fen), 0)).where(
                Voucher.status == "active"
            )
        )
        assert ledger.balances().get("vouchers:outstanding", 0) == unspent
        assert ledger.verify_ledger().ok and audit.verify_chain().ok


def _monthly_job_checks(url: str) -> None:
    _expiry_checks(url)
    with app_on(url):
        holders = db.session.execute(
            sa.select(Voucher.resident_id, sa.func.count())
            .where(Voucher.month == month_of(local_today()))
            .group_by(Voucher.resident_id)
        ).all()
        assert len(holders) == ELDERS and {n for _, n in holders} == {1}


def _settlement_checks(url: str) -> None:
    from vouchers.settlement.reconcile.reconcile import reconcile_month

    with app_on(url):
        lines = db.session.scalar(sa.text("SELECT count(*) FROM statement_lines"))
        assert lines == REDEMPTIONS * len(_settled_months())
        assert ledger.verify_ledger().ok and audit.verify_chain().ok
        for month in _settled_months():
            run = reconcile_month(month)
            assert run.ok, (month, run.findings)
        db.session.rollback()


JOBS = {
    "issuance": (
        _seed_elders,
        lambda: ("vouchers", "issue", "--month", _month(month_of(local_today())), "--json"),
        _issuance_checks,
        lambda report: report["issued"],
    ),
    "expiry": (
        _seed_last_months_vouchers,
        lambda: (
            "vouchers",
            "expire",
            "--month",
            _month(previous_month(month_of(local_today()))),
            "--json",
        ),
        _expiry_checks,
        lambda report: report["expired"],
    ),
    "settlement": (
        _seed_settleable_months,
        lambda: ("settlement", "run", "--json"),  # the catch-up, as the scheduler runs it
        _settlement_checks,
        lambda report: sum(month["lines_added"] for month in report["settled"].values()),
    ),
    # The scheduler's monthly catch-up (vouchers.jobs.monthly_vouchers) as `flask scheduler
    # run-job` runs it: last month expired, then this month issued, each step committing.
    "monthly-job": (
        _seed_last_months_vouchers,
        lambda: ("scheduler", "run-job", "vouchers-monthly"),
        _monthly_job_checks,
        lambda report: sum(
            step.get("expired", 0) + step.get("issued", 0) for step in report["result"].values()
        ),
    ),
}


@dataclass
class Uninterrupted:
    """A job's seeded template and what one uninterrupted run of it left on a twin."""

    template: str
    args: tuple[str, ...]
    before: dict
    expected: dict
    done: int  # the work its report counts (vouchers issued or expired, lines added)
    span: float  # seconds of work, from its first transaction (the kill delays' range)


@pytest.fixture(scope="module")
def uninterrupted():
    runs: dict[str, Uninterrupted] = {}
    templates: dict = {}  # by seed function: jobs seeded alike share one template
    with ExitStack() as stack:

        def of(job: str) -> Uninterrupted:
            if job not in runs:
                seed, command, checks, done = JOBS[job]
                if seed not in templates:
                    templates[seed] = stack.enter_context(
                        seeded_template(f"eldercare_killed_{job.replace('-', '_')}", seed)
                    )
                template = templates[seed]
                with clone(template) as twin:
                    outcome, span = timed_run(twin, command())
                    assert outcome.returncode == 0, outcome.err
                    checks(twin)
                    runs[job] = Uninterrupted(
                        template,
                        command(),
                        state(template),
                        state(twin),
                        done(json.loads(outcome.out)),
                        span,
                    )
                assert runs[job].expected != runs[job].before  # the job had work to do
            return runs[job]

        yield of


@pytest.mark.parametrize("job", list(JOBS))
def test_a_job_killed_at_random_points_and_rerun_ends_as_an_uninterrupted_run(job, uninterrupted):
    run, checks = uninterrupted(job), JOBS[job][2]
    partial = []  # what each kill left: a state neither the template's nor the end's
    for number, delay in zip(SEEDS, kill_points(SEEDS, run.span), strict=True):
        with clone(run.template) as url:
            killed = kill_part_way(url, run.args, delay)
            if killed.killed:
                assert killed.returncode == -9
                left = state(url)
                partial.append(left not in (run.expected, run.before))
            rerun = flask_command(url, *run.args)
            assert rerun.returncode == 0, rerun.err
            assert state(url) == run.expected, f"seed {number}"
            checks(url)
    # Not asserted (it depends on the machine's speed): how many kills left a partial state.
    print(f"{job}: work {run.span:.1f} s; kills that left a partial state: {partial}")


@pytest.mark.parametrize("job", list(JOBS))
def test_two_commands_of_a_job_at_once_do_its_work_once(job, uninterrupted):
    """What two schedulers (or an operator and the scheduler) starting the job at once do."""
    run, checks, done = uninterrupted(job), JOBS[job][2], JOBS[job][3]
    with clone(run.template) as url:
        processes = [flask_command(url, *run.args, start_only=True) for _ in range(2)]
        ended = [(process, *process.communicate(timeout=600)) for process in processes]
        assert all(process.returncode == 0 for process, _, _ in ended), ended
        reports = [json.loads(out) for _, out, _ in ended]
        assert sum(done(report) for report in reports) == run.done
        assert state(url) == run.expected
        checks(url)
