"""The bureau's bank pages (city-wide bureau officers and approvers).

- ``bank`` (GET /settlement/bank): the approved statements and fee refunds waiting to be
  paid, "Create the batch" (the count and total repeated in the button; if what is waiting
  changed since the page was shown, nothing is made and the page says so), and the batches.
- ``bank_batch`` (GET /settlement/bank/batches/<id>): a batch's lines with their status and
  the bank's reasons, the CSV and XLSX downloads, the result-file upload and the imports.
- ``bank_batch_file`` (GET …/file.csv|xlsx): the file, streamed.
- ``bank_batch_results`` (POST …/results): imports the bank's result file and shows what it
  did: paid, failed with the bank's reasons, lines sent to the exception queue.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import Response, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from assessment.models import FeeRefund
from eldercare.accounts import BUREAU_ROLES
from eldercare.auth import roles_required
from eldercare.db import db
from eldercare.errors import DomainError, InvalidInput, NotFound
from eldercare.forms import problem_from, whole_number, yuan
from eldercare.navigation import Destination
from eldercare.residents import Resident, mask_name
from eldercare.streaming import row_body
from eldercare.timeutil import format_local
from marketplace.models import Provider
from vouchers.settlement.bank import bank_files, bank_results
from vouchers.settlement.exceptions import kind_label
from vouchers.settlement.models import (
    BankBatch,
    BankResultImport,
    BankTransfer,
    SettlementException,
    Statement,
)
from vouchers.settlement.views import bp

XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
BATCH_LIST = 30
UPLOAD_SLACK = 64 * 1024
TRANSFER_LABELS = {"sent": _l("Sent to the bank"), "paid": _l("Paid"), "failed": _l("Failed")}

DESTINATIONS = [
    Destination(
        "settlement.bank",
        _l("Bank payments"),
        description=_l("Pay approved statements and fee refunds: batch files and bank results."),
    )
]


@bp.context_processor
def _helpers():
    return {"yuan": yuan, "format_local": format_local, "kind_label": kind_label}


@bp.url_value_preprocessor
def _limit_result_upload(endpoint, _values):
    if endpoint == "settlement.bank_batch_results":
        from flask import current_app

        request.max_content_length = current_app.config["IMPORT_MAX_BYTES"] + UPLOAD_SLACK


def waiting_rows() -> tuple[list, list]:
    statements = db.session.execute(
        bank_files.waiting_statements()
        .add_columns(Provider.name)
        .join(Provider, Provider.id == Statement.provider_id)
        .order_by(Statement.month, Provider.name, Statement.seq)
    ).all()
    refunds = db.session.execute(
        bank_files.waiting_refunds()
        .add_columns(Resident.name)
        .join(Resident, Resident.id == FeeRefund.resident_id)
        .order_by(FeeRefund.owed_on, FeeRefund.id)
    ).all()
    return statements, [(r, mask_name(name)) for r, name in refunds]


def _render_bank(status=200, problem=None):
    bank_files.require_city_bureau(current_user)
    statements, refunds = waiting_rows()
    batches = db.session.scalars(
        sa.select(BankBatch)
        .order_by(BankBatch.created_at.desc(), BankBatch.id.desc())
        .limit(BATCH_LIST)
    ).all()
    # Late "paid" results for transfers that had failed: possibly paid twice, shown first.
    paid_after_failure = db.session.scalars(
        sa.select(SettlementException)
        .where(
            SettlementException.kind == "bank.paid_after_failure",
            SettlementException.status == "open",
            SettlementException.fingerprint.like("bank:paid_after_failure:%"),
        )
        .order_by(SettlementException.found_at, SettlementException.id)
    ).all()
    return render_template(
        "settlement/bank.html",
        paid_after_failure=paid_after_failure,
        labels=TRANSFER_LABELS,
        statements=statements,
        refunds=refunds,
        waiting=bank_files.waiting_totals(),
        batches=batches,
        counts=_status_counts([b.id for b in batches]),
        problem=problem,
    ), status


def _status_counts(batch_ids: list[int]) -> dict:
    counts: dict = {}
    for batch_id, status, n in db.session.execute(
        sa.select(BankTransfer.batch_id, BankTransfer.status, sa.func.count())
        .where(BankTransfer.batch_id.in_(batch_ids))
        .group_by(BankTransfer.batch_id, BankTransfer.status)
    ):
        counts.setdefault(batch_id, {})[status] = n
    return counts


@bp.get("/bank")
@roles_required(*BUREAU_ROLES, also=bank_files.require_city_bureau)
def bank():
    return _render_bank()


@bp.post("/bank/batches")
@roles_required(*BUREAU_ROLES)
def bank_batch_create():
    count = whole_number(request.form.get("expected_count"))
    total = whole_number(request.form.get("expected_total_fen"), digits=15)
    try:
        if count is None or total is None:
            raise InvalidInput(_l("Reload the page and confirm the batch again."))
        batch = bank_files.create_batch(actor=current_user, expect=(count, total))
    except DomainError as error:
        db.session.rollback()
        return _render_bank(error.status, problem_from(error, ()))
    flash(
        _("Batch %(ref)s is made: %(count)s transfers, %(total)s. Download the file for the bank.",
          ref=batch.reference, count=batch.line_count, total=yuan(batch.total_fen)),
        "success",
    )  # fmt: skip
    return redirect(url_for(".bank_batch", batch_id=batch.id))


def _batch_lines(batch: BankBatch) -> list:
    return db.session.execute(
        sa.select(BankTransfer, Statement.month, Provider.name)
        .outerjoin(Statement, Statement.id == BankTransfer.statement_id)
        .outerjoin(Provider, Provider.id == Statement.provider_id)
        .where(BankTransfer.batch_id == batch.id)
        .order_by(BankTransfer.line_no)
    ).all()


def _render_batch(batch: BankBatch, status=200, problem=None, outcome=None):
    bank_files.require_city_bureau(current_user)
    imports = db.session.scalars(
        sa.select(BankResultImport)
        .where(BankResultImport.batch_id == batch.id)
        .order_by(BankResultImport.imported_at.desc())
    ).all()
    return render_template(
        "settlement/bank_batch.html",
        batch=batch,
        lines=_batch_lines(batch),
        imports=imports,
        labels=TRANSFER_LABELS,
        problem=problem,
        outcome=outcome,
    ), status


def _batch(batch_id: int) -> BankBatch:
    batch = db.session.get(BankBatch, batch_id)
    if batch is None:
        raise NotFound()
    return batch


@bp.get("/bank/batches/<int:batch_id>")
@roles_required(*BUREAU_ROLES)
def bank_batch(batch_id: int):
    return _render_batch(_batch(batch_id))


def download(batch: BankBatch, fmt: str) -> Response:
    """The batch file, streamed (CSV or XLSX); the pages and the API both answer this."""
    if fmt == "xlsx":
        chunks, mimetype = bank_files.xlsx_chunks, XLSX_TYPE
    else:
        chunks, mimetype = bank_files.csv_chunks, "text/csv; charset=utf-8"
    # The body loads the batch again in its own session (``eldercare.streaming``).
    response = Response(row_body(chunks, BankBatch, batch.id), mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{batch.reference}.{fmt}"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/bank/batches/<int:batch_id>/file.<any(csv, xlsx):fmt>")
@roles_required(*BUREAU_ROLES)
def bank_batch_file(batch_id: int, fmt: str):
    bank_files.require_city_bureau(current_user)
    return download(_batch(batch_id), fmt)


@bp.post("/bank/batches/<int:batch_id>/results")
@roles_required(*BUREAU_ROLES)
def bank_batch_results(batch_id: int):
    batch = _batch(batch_id)
    upload = request.files.get("file")
    data = upload.read() if upload else b""
    try:
        outcome = bank_results.import_result(
            batch, data, upload.filename if upload else "", actor=current_user
        )
    except DomainError as error:
        db.session.rollback()
        return _render_batch(_batch(batch_id), error.status, problem_from(error, ("file",)))
    summary = {
        "paid": list(outcome.paid),
        "failed": list(outcome.failed),
        "already": list(outcome.already),
        "exceptions": [e | {"label": kind_label(e["kind"])} for e in outcome.exceptions],
    }
    return _render_batch(batch, 200, None, summary)
