"""/api/v1/settlement for the bureau's finance system: bank batches, their files and
results, and providers' bank-account changes.

A token of a city-wide bureau officer's or approver's account: "read" to read, and
"bureau:write" to make a batch, import a result or decide a change. The same services as
the pages, so the same rules (maker-checker on payee changes, nothing paid twice).
"""

from __future__ import annotations

import functools

import marshmallow as ma
import sqlalchemy as sa
from flask import g
from flask_babel import lazy_gettext as _l
from flask_smorest.fields import Upload

from eldercare.api import BEARER, error_responses, local_time
from eldercare.api_fields import said
from eldercare.db import db
from eldercare.tokens import token_required
from marketplace.models import Provider
from vouchers.settlement.bank import bank_files, bank_results, payees
from vouchers.settlement.bank.views_bank import download
from vouchers.settlement.exceptions import kind_label
from vouchers.settlement.models import BankBatch
from vouchers.settlement.statements.api_statements import blp


def _city_bureau(view):
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        bank_files.require_city_bureau(g.api_user)
        return view(*args, **kwargs)

    return wrapper


class TransferSchema(ma.Schema):
    line_no = ma.fields.Integer()
    reference = ma.fields.String()
    kind = ma.fields.String(metadata={"description": "statement or fee_refund"})
    statement_id = ma.fields.Integer(allow_none=True)
    fee_refund_id = ma.fields.Integer(allow_none=True)
    payee_account_name = ma.fields.String()
    payee_bank_name = ma.fields.String()
    payee_account_number = ma.fields.String()
    amount_fen = ma.fields.Integer()
    status = ma.fields.String(metadata={"description": "sent, paid or failed"})
    bank_reason = ma.fields.String(allow_none=True)
    decided_at = ma.fields.Function(lambda t: local_time(t.decided_at))


class BatchSchema(ma.Schema):
    id = ma.fields.Integer()
    reference = ma.fields.String()
    line_count = ma.fields.Integer()
    total_fen = ma.fields.Integer()
    created_at = ma.fields.Function(lambda b: local_time(b.created_at))


class BatchDetailSchema(BatchSchema):
    transfers = ma.fields.List(ma.fields.Nested(TransferSchema))


class BatchCreateSchema(ma.Schema):
    expected_count = ma.fields.Integer(
        load_default=None, metadata={"description": "Refuse unless this many are waiting"}
    )
    expected_total_fen = ma.fields.Integer(load_default=None)


class FileQuerySchema(ma.Schema):
    format = ma.fields.String(load_default="csv", validate=ma.validate.OneOf(("csv", "xlsx")))


class ImportOutcomeSchema(ma.Schema):
    import_id = ma.fields.Integer()
    paid = ma.fields.List(ma.fields.String())
    failed = ma.fields.List(ma.fields.Dict())
    already = ma.fields.List(ma.fields.String())
    exceptions = ma.fields.List(ma.fields.Dict())


class PayeeChangeSchema(ma.Schema):
    id = ma.fields.Integer()
    provider_id = ma.fields.Integer()
    provider_name = ma.fields.String()
    account_name = ma.fields.String()
    bank_name = ma.fields.String()
    account_number = ma.fields.String()
    current_account_number = ma.fields.String()
    status = ma.fields.String()
    requested_at = ma.fields.DateTime()


class ResultFileSchema(ma.Schema):
    # In the document as a multipart body, so that a client knows to send the file.
    file = Upload(
        required=True,
        error_messages={"required": _l("Choose the bank's result file to import.")},
        metadata={"description": "the bank's result file, CSV or XLSX"},
    )


class RejectSchema(ma.Schema):
    reason = ma.fields.String(required=True, validate=said())


@blp.post("/batches")
@token_required("bureau:write")
@_city_bureau
@blp.doc(security=BEARER)
@blp.arguments(BatchCreateSchema)
@blp.response(201, BatchDetailSchema)
@error_responses(blp, 401, 403, 409, 422)
def create_batch(body):
    """A batch of every approved, unpaid statement and owed fee refund with an account.
    With ``expected_count``/``expected_total_fen``, nothing is made (409) unless that is
    still what is waiting. 409 also when nothing is waiting."""
    expect = None
    if body.get("expected_count") is not None or body.get("expected_total_fen") is not None:
        expect = (body.get("expected_count"), body.get("expected_total_fen"))
    batch = bank_files.create_batch(actor=g.api_user, expect=expect)
    db.session.flush()
    db.session.refresh(batch)
    return batch


@blp.get("/batches")
@token_required("read")
@_city_bureau
@blp.doc(security=BEARER)
@blp.response(200, BatchSchema(many=True))
@error_responses(blp, 401, 403)
def list_batches():
    """The latest 100 batches, newest first."""
    return db.session.scalars(
        sa.select(BankBatch).order_by(BankBatch.created_at.desc(), BankBatch.id.desc()).limit(100)
    ).all()


@blp.get("/batches/<int:batch_id>")
@token_required("read")
@_city_bureau
@blp.doc(security=BEARER)
@blp.response(200, BatchDetailSchema)
@error_responses(blp, 401, 403, 404)
def get_batch(batch_id: int):
    """A batch with its transfers, their status and the bank's reasons."""
    return bank_files.batch_by_id(batch_id)


@blp.get("/batches/<int:batch_id>/file")
@token_required("read")
@_city_bureau
@blp.doc(security=BEARER)
@blp.arguments(FileQuerySchema, location="query")
@error_responses(blp, 401, 403, 404, 422)
def batch_file(query, batch_id: int):
    """The batch file for the bank (``format=csv`` (UTF-8 with BOM) or ``xlsx``), streamed:
    H header, column titles, D lines, T trailer (README)."""
    return download(bank_files.batch_by_id(batch_id), query["format"])


@blp.post("/batches/<int:batch_id>/results")
@token_required("bureau:write")
@_city_bureau
@blp.doc(security=BEARER)
@blp.arguments(ResultFileSchema, location="files")
@blp.response(200, ImportOutcomeSchema)
@error_responses(blp, 401, 403, 404, 409, 422)
def import_results(files, batch_id: int):
    """Import the bank's result file (multipart field ``file``, CSV or XLSX). 422 with the
    reason, naming ``file``, when its content is refused whole; 409 when the same file was
    imported before."""
    batch = bank_files.batch_by_id(batch_id)
    upload = files["file"]
    outcome = bank_results.import_result(batch, upload.read(), upload.filename, actor=g.api_user)
    return {
        "import_id": outcome.record.id,
        "paid": outcome.paid,
        "failed": [{"reference": r, "reason": reason} for r, reason in outcome.failed],
        "already": outcome.already,
        "exceptions": [e | {"label": kind_label(e["kind"])} for e in outcome.exceptions],
    }


def _change_dict(change, provider: Provider) -> dict:
    return {
        "id": change.id,
        "provider_id": provider.id,
        "provider_name": provider.name,
        "account_name": change.account_name,
        "bank_name": change.bank_name,
        "account_number": change.account_number,
        "current_account_number": provider.bank_account_number,
        "status": change.status,
        "requested_at": local_time(change.requested_at),
    }


@blp.get("/payee-changes")
@token_required("read")
@_city_bureau
@blp.doc(security=BEARER)
@blp.response(200, PayeeChangeSchema(many=True))
@error_responses(blp, 401, 403)
def list_payee_changes():
    """Providers' bank-account changes waiting for a decision, oldest first."""
    return [_change_dict(c, p) for c, p in payees.pending_changes()]


@blp.post("/payee-changes/<int:change_id>/approve")
@token_required("bureau:write")
@_city_bureau
@blp.doc(security=BEARER)
@blp.response(200, PayeeChangeSchema)
@error_responses(blp, 401, 403, 404, 409)
def approve_payee_change(change_id: int):
    """Approve: the provider's next statements are paid to the new account. Refused to
    the person who requested it and when already decided."""
    change = payees.change_by_id(change_id)
    payees.approve(change, actor=g.api_user)
    return _change_dict(change, db.session.get(Provider, change.provider_id))


@blp.post("/payee-changes/<int:change_id>/reject")
@token_required("bureau:write")
@_city_bureau
@blp.doc(security=BEARER)
@blp.arguments(RejectSchema)
@blp.response(200, PayeeChangeSchema)
@error_responses(blp, 401, 403, 404, 409, 422)
def reject_payee_change(body, change_id: int):
    """Reject with a reason; the account stays as it is."""
    change = payees.change_by_id(change_id)
    payees.reject(change, reason=body["reason"], actor=g.api_user)
    return _change_dict(change, db.session.get(Provider, change.provider_id))
