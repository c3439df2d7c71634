"""`flask assessment ...` commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from flask.cli import AppGroup

from assessment.importing import import_file
from eldercare.db import db, unit_of_work

cli = AppGroup(
    "assessment",
    help="GB/T 42195-2022 ability assessments and the eligibility they decide.",
)


@cli.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--kind", required=True, type=click.Choice(["residents", "assessments"]))
@click.option(
    "--valid-rows-only",
    is_flag=True,
    help="Import the valid rows and report the others (default: any error imports nothing).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report.")
def import_command(file: Path, kind: str, valid_rows_only: bool, as_json: bool):
    """Import a CSV or XLSX file of residents or assessments; rerunning it changes nothing.

    Exits 1 when the file has errors and nothing was imported.
    """
    with unit_of_work():
        report = import_file(file.read_bytes(), file.name, kind, valid_rows_only=valid_rows_only)
        if not report.created:
            db.session.rollback()  # nothing to keep: the run leaves no trace
    if as_json:
        click.echo(json.dumps(report.as_dict(), ensure_ascii=False))
    else:
        _print_summary(report)
    sys.exit(1 if report.errors and not report.imported else 0)


def _print_summary(report) -> None:
    for problem in report.errors:
        where = f"row {problem.row}" if problem.row is not None else "file"
        column = f", {problem.column}" if problem.column else ""
        click.echo(f"error   {where}{column}: {problem.reason}", err=True)
    for problem in report.warnings:
        click.echo(f"warning row {problem.row}, {problem.column}: {problem.reason}", err=True)
    outcome = "imported" if report.imported else "NOT imported (nothing was changed)"
    click.echo(
        f"{report.kind}: {outcome}; {report.rows_total} rows, {report.created} created, "
        f"{report.unchanged} unchanged, {report.error_rows} with errors"
    )
