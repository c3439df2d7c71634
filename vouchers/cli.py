"""`flask vouchers ...` commands."""

from __future__ import annotations

import json
import os
from datetime import date, datetime

import click
from flask.cli import AppGroup

from eldercare.db import unit_of_work
from eldercare.errors import InvalidInput
from vouchers.integrity import anomalies
from vouchers.issuance.eligibility_feed import process_eligibility_events
from vouchers.issuance.monthly import expire_month, issue_monthly
from vouchers.jobs import BATCH_SIZE, commit_every
from vouchers.pool.ledger_checks import run_check

cli = AppGroup(
    "vouchers",
    help="Voucher policy, the subsidy pool ledger, issuance, QR redemption, settlement.",
)
# Test hook for the crash test only: exit abruptly after this many elders, as a killed
# process would. Never set in production.
CRASH_AFTER_ENV = "VOUCHERS_ISSUE_CRASH_AFTER"


class MonthType(click.ParamType):
    name = "YYYY-MM"

    def convert(self, value, param, ctx):
        if isinstance(value, date):
            return value
        try:
            return datetime.strptime(value.strip(), "%Y-%m").date()
        except (ValueError, AttributeError):
            self.fail(f"{value!r} is not a month; write it as YYYY-MM, e.g. 2025-08", param, ctx)


def _progress():
    commit = commit_every()
    crash_after = int(os.environ.get(CRASH_AFTER_ENV) or 0)

    def progress(done: int) -> None:
        commit(done)
        if crash_after and done >= crash_after:
            os._exit(1)

    return progress


def _refuse_month(error: InvalidInput) -> click.BadParameter:
    message = "; ".join(str(m) for m in error.details.values()) or str(error.message)
    return click.BadParameter(message, param_hint="--month")


def _echo(result: dict, as_json: bool, summary: str) -> None:
    click.echo(json.dumps(result, ensure_ascii=False) if as_json else summary)


@cli.command("issue")
@click.option("--month", required=True, type=MonthType(), help="The month, YYYY-MM.")
@click.option("--limit", type=click.IntRange(min=1), help="Handle at most this many elders.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report.")
def issue_command(month: date, limit: int | None, as_json: bool):
    """Issue the month's vouchers to every eligible elder who has none; rerun to complete."""
    try:
        with unit_of_work():
            report = issue_monthly(month, limit=limit, progress=_progress())
    except InvalidInput as error:
        raise _refuse_month(error) from None
    data = report.to_dict()
    lines = [
        f"{data['month']}: {data['issued']} issued ({data['total_fen'] / 100:.2f} yuan), "
        f"{data['already_issued']} already held one, {data['not_eligible']} not eligible, "
        f"{data['left_out_count']} left out for lack of money"
    ]
    lines += [
        f"  left out: resident {row['resident_id']} ({row['district']}, {row['level']}), "
        f"needs {row['needed_fen'] / 100:.2f} yuan"
        for row in data["left_out"]
    ]
    if data["left_out_count"] > len(data["left_out"]):
        lines.append(f"  ... and {data['left_out_count'] - len(data['left_out'])} more")
    _echo(data, as_json, "\n".join(lines))


@cli.command("expire")
@click.option("--month", required=True, type=MonthType(), help="A month that has ended, YYYY-MM.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report.")
def expire_command(month: date, as_json: bool):
    """Expire a past month's vouchers and return their balances to the districts."""
    try:
        with unit_of_work():
            result = expire_month(month, progress=commit_every(BATCH_SIZE))
    except InvalidInput as error:
        raise _refuse_month(error) from None
    summary = (
        f"{result['month']}: {result['expired']} expired, "
        f"{result['returned_fen'] / 100:.2f} yuan returned to the districts"
    )
    if result["held"]:
        summary += f"; {len(result['held'])} wait for a payment in flight (rerun later)"
    _echo(result, as_json, summary)


@cli.command("process-events")
@click.option("--limit", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report.")
def process_events_command(limit: int, as_json: bool):
    """Act on new eligibility events (first vouchers at once, revocations; an event that
    fails is parked for the bureau), then issue the vouchers whose eligibility begins today."""
    with unit_of_work():
        result = process_eligibility_events(limit=limit)
    with unit_of_work():  # after the feed's commit, as the job does (the lock order)
        result["after_death"] = anomalies.recheck_deaths(result["died"])
    summary = (
        f"{result['processed']} events: {len(result['issued'])} vouchers issued, "
        f"{len(result['revoked'])} revoked, {len(result['left_out'])} left out for lack of money"
    )
    for parked in result["parked"]:
        summary += f"; event {parked['event_id']} parked: {parked['error']}"
    summary += f"; {result['after_death']['flagged']} redemptions flagged after a death"
    for resident_id, error in result["after_death"]["failed"].items():
        summary += f"; after-death re-check of resident {resident_id} failed: {error}"
    _echo(result, as_json, summary)


@cli.command("verify-ledger")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report.")
def verify_ledger_command(as_json: bool):
    """Verify the ledger now (every entry balanced, every balance equal to its lines, the
    sub-ledgers equal to their accounts) and store the result for the pool page. Exits 1
    when the books do not balance."""
    with unit_of_work():
        run = run_check()
        result = run.findings | {"journal_lines": run.journal_lines}
    seconds = (run.finished_at - run.started_at).total_seconds()
    summary = (
        f"the books balance: {run.journal_lines} journal lines checked in {seconds:.1f} s"
        if run.ok
        else "THE BOOKS DO NOT BALANCE: "
        + "; ".join(f"{k}: {v}" for k, v in run.findings.items() if v and k != "ok")
    )
    _echo(result, as_json, summary)
    if not run.ok:
        raise SystemExit(1)
