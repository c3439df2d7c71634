"""Bulk import of residents and assessments from CSV or XLSX (see issue 3, item 5).

Every row goes through the same service functions as the forms do (``register_resident``;
``lifecycle.apply -> assign -> schedule -> record``), so a spreadsheet can do nothing a person
at a form could not, and every rule and audit row applies.

- **Idempotent.** A resident is known by the ID number, an assessment by (agency, the agency's
  case number). A row that is already there with the same details is "unchanged"; with
  different details it is an error, never a silent overwrite. Importing a file twice changes
  nothing, not even the audit trail.
- **All or nothing.** The whole run sits in one SAVEPOINT and each row in its own, so a
  failing row's partial writes vanish; unless the operator asked for valid rows only, any
  error row rolls the whole run back. The caller's unit of work commits, as everywhere.
- **Row numbers** are the spreadsheet's (header = row 1), blank rows included, so an operator
  finds the cell where Excel shows it.
- **Unknown columns** are warnings, not errors: agencies' sheets carry serial numbers and notes.

This module runs an import; the parts live beside it, each using only those listed before it:
``import_reading`` (the file's limits and its table of cells), ``import_values`` (the columns
and a cell read as a value), ``import_rows`` (one resident or assessment row at a time).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import NamedTuple

from flask_babel import lazy_gettext as _l

from assessment.import_reading import DEFAULT_MAX_BYTES, FileRejected, cell_text, read_table
from assessment.import_rows import AssessmentRows, ResidentRows, error_problems
from assessment.import_values import (
    RESIDENT_COLUMNS,
    Column,
    assessment_columns,
    name_key,
    parse_fee_fen,
)
from eldercare import audit
from eldercare.accounts import User
from eldercare.db import db
from eldercare.timeutil import local_today

__all__ = [  # what the views, the CLI and the tests use, wherever it is defined
    "DEFAULT_MAX_BYTES",
    "KINDS",
    "RESIDENT_COLUMNS",
    "ImportReport",
    "Problem",
    "assessment_columns",
    "error_problems",
    "import_file",
    "parse_fee_fen",
]

KINDS = ("residents", "assessments")


class Problem(NamedTuple):
    row: int | None  # spreadsheet row (header = 1); None for the file as a whole
    column: str  # as headed in the file (or the column code, when the column is missing)
    reason: str  # in the operator's language


@dataclass
class ImportReport:
    kind: str
    rows_total: int = 0  # data rows that are not blank
    created: int = 0
    unchanged: int = 0
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    imported: bool = False  # the run was kept (no errors, or valid rows only)

    @property
    def error_rows(self) -> int:
        return len({p.row for p in self.errors if p.row is not None and p.row > 1})

    def as_dict(self) -> dict:
        return {
            **{k: v for k, v in asdict(self).items() if k not in ("errors", "warnings")},
            "error_rows": self.error_rows,
            "errors": [p._asdict() for p in self.errors],
            "warnings": [p._asdict() for p in self.warnings],
        }


# --- the header row ---------------------------------------------------------------------


def map_header(
    header: list, header_number: int, columns: tuple[Column, ...], report: ImportReport
) -> tuple[dict[str, int], dict[str, str]]:
    """Column code -> cell position, and code -> the header as written in the file."""
    lookup = {name_key(a): c.code for c in columns for a in (c.code, *c.aliases)}
    positions: dict[str, int] = {}
    names: dict[str, str] = {}
    for position, cell in enumerate(header):
        text = cell_text(cell)
        if not text:
            continue
        code = lookup.get(name_key(text))
        if code is None:
            report.warnings.append(
                Problem(header_number, text, str(_l("Unknown column; it was ignored.")))
            )
        elif code in positions:
            report.errors.append(
                Problem(header_number, text, str(_l("This column appears more than once.")))
            )
        else:
            positions[code], names[code] = position, text
    for column in columns:
        if column.required and column.code not in positions:
            report.errors.append(
                Problem(header_number, column.code, str(_l("This required column is missing.")))
            )
    return positions, names


# --- the run ----------------------------------------------------------------------------


def import_file(
    data: bytes,
    filename: str,
    kind: str,
    *,
    valid_rows_only: bool = False,
    actor: User | None = None,
    district_id: int | None = None,
    agency_id: int | None = None,
    today: date | None = None,
) -> ImportReport:
    """Import a spreadsheet of ``kind``; flushes only, the caller's unit of work commits.

    ``district_id`` limits residents to a district officer's district; ``agency_id`` limits
    assessments to an agency administrator's agency.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown import kind {kind!r}")
    report = ImportReport(kind)
    try:
        header_number, header, body = read_table(data, filename)
    except FileRejected as rejected:
        report.errors.append(Problem(None, "", str(rejected.reason)))
        return report
    report.rows_total = len(body)
    context = {"actor": actor, "district_id": district_id, "agency_id": agency_id}
    if kind == "residents":
        rows = ResidentRows(**context)
    else:
        rows = AssessmentRows(**context, today=today or local_today())
    positions, names = map_header(header, header_number, rows.columns, report)
    if report.errors:
        return report

    run = db.session.begin_nested()
    try:
        for number, cells in body:
            values = {
                code: cell_text(cells[i]) if i < len(cells) else "" for code, i in positions.items()
            }
            outcome = rows(number, values)
            if outcome == "created":
                report.created += 1
            elif outcome == "unchanged":
                report.unchanged += 1
            else:
                for code in sorted(outcome, key=lambda c: positions.get(c, len(positions))):
                    report.errors.append(Problem(number, names.get(code, code), outcome[code]))
        report.imported = not report.errors or (
            valid_rows_only and report.created + report.unchanged > 0
        )
        if report.imported and report.created:
            _audit_run(report, data, filename, valid_rows_only, district_id)
    except BaseException:
        run.rollback()
        raise
    if report.imported:
        run.commit()
    else:
        run.rollback()
        report.created = 0
    return report


def _audit_run(report, data, filename, valid_rows_only, district_id) -> None:
    # Only a run that changed something is recorded: a rerun or a rejected file changes nothing.
    audit.record(
        f"import.{report.kind}",
        object_type="import_files",
        object_id=hashlib.sha256(data).hexdigest(),
        district_id=district_id,
        after={
            "file": filename[-100:],
            "rows": report.rows_total,
            "created": report.created,
            "unchanged": report.unchanged,
            "error_rows": report.error_rows,
            "valid_rows_only": valid_rows_only,
        },
    )
