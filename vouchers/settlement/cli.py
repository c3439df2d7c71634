"""`flask settlement ...` commands."""

from __future__ import annotations

import json

import click
from flask.cli import AppGroup

from eldercare.db import db, unit_of_work
from eldercare.errors import DomainError

cli = AppGroup("settlement", help="Settle providers: statements, approval, bank batches.")


def _message(error: DomainError) -> str:
    details = getattr(error, "details", None) or {}
    return "; ".join(str(v) for v in details.values()) or str(error)


@cli.command("run")
@click.option("--month", "month_text", help="The voucher month, YYYY-MM (default: catch up).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def run_command(month_text: str | None, as_json: bool) -> None:
    """Settle a month (statements per provider), or every settleable month.

    Exits 1 with the reason if the month may not be settled yet (or the input is bad)."""
    from vouchers.settlement.statements import run

    try:
        if month_text:
            with unit_of_work():
                report = run.run_settlement(run.parse_month(month_text))
        else:
            report = run.settle_due(commit=True)
            db.session.commit()
    except DomainError as error:
        click.echo(f"refused: {_message(error)}", err=True)
        raise SystemExit(1) from None
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False, sort_keys=True))
    else:
        _print(report)
    if report.get("failed"):
        raise SystemExit(1)


def _print(report: dict) -> None:
    reports = report["settled"].values() if "settled" in report else [report]
    for one in reports:
        click.echo(
            f"{one['month']}: {one['statements_created']} statements created, "
            f"{one['statements_extended']} extended, {one['lines_added']} lines, "
            f"subsidy {one['subsidy_fen']} fen, card co-payments {one['card_copay_fen']} fen"
        )
    if "settled" in report and not report["settled"]:
        click.echo("nothing to settle")
    for month, why in (report.get("failed") or {}).items():
        click.echo(f"{month}: failed: {why}", err=True)
