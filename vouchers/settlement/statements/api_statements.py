"""The settlement API for the bureau's finance system (``/api/v1/settlement``).

The other api_* modules add their endpoints to ``blp``. Statements and runs here:
- POST /runs {month}: settle a month (refused before its cut-off, 422);
- GET /statements?month=YYYY-MM&status=: the statements;
- GET /statements/{id}?page=: one statement with a page of its lines (100 a page);
- POST /statements/{id}/approve {expected_payable_fen[, expected_fingerprint]}: refused
  (409) if the statement changed since it was read; POST /statements/{id}/reject {reason}.
A city-wide bureau account's token only: "read" or "vouchers:read" to read, "bureau:write"
to run, approve or reject (approving and rejecting: a bureau approver's token).
"""

from __future__ import annotations

import functools

import sqlalchemy as sa
from flask import g
from flask_babel import lazy_gettext as _l
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from eldercare.api import BEARER, error_responses
from eldercare.api_fields import month as month_field
from eldercare.api_fields import said
from eldercare.db import db
from eldercare.errors import NotFound, PermissionDenied
from eldercare.tokens import token_required
from vouchers.settlement.models import STATEMENT_STATUSES, Statement, StatementLine
from vouchers.settlement.statements import approval, run

blp = Blueprint(
    "settlement_api", __name__, url_prefix="/api/v1/settlement", description="Settlement"
)
LINES_PAGE = 100


def city_bureau(view):
    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        if not approval.may_prepare(g.api_user):
            raise PermissionDenied(_l("Settlement is done by the city-wide bureau staff."))
        return view(*args, **kwargs)

    return wrapper


class RunIn(Schema):
    month = month_field(required=True, metadata={"example": "2026-11"})


class RunOut(Schema):
    month = fields.String()
    settles_from = fields.String()
    statements_created = fields.Integer()
    statements_extended = fields.Integer()
    lines_added = fields.Integer()
    subsidy_fen = fields.Integer()
    card_copay_fen = fields.Integer()
    awaiting_second_statements = fields.Integer()


class StatementsQuery(Schema):
    month = month_field(required=True)
    status = fields.String(validate=validate.OneOf(STATEMENT_STATUSES))


class StatementOut(Schema):
    id = fields.Integer()
    provider_id = fields.Integer()
    month = fields.Function(lambda s: f"{s.month:%Y-%m}")
    seq = fields.Integer()
    status = fields.String()
    line_count = fields.Integer()
    subsidy_fen = fields.Integer()
    card_copay_fen = fields.Integer()
    clawback_fen = fields.Integer()
    payable_fen = fields.Integer()
    payee_account_name = fields.String()
    payee_bank_name = fields.String()
    payee_account_number = fields.String()
    lines_hash = fields.String(allow_none=True)
    prepared_by_user_id = fields.Integer(allow_none=True)
    prepared_at = fields.DateTime()
    approved_by_user_id = fields.Integer(allow_none=True)
    approved_at = fields.DateTime(allow_none=True)
    second_approved_by_user_id = fields.Integer(allow_none=True)
    second_approved_at = fields.DateTime(allow_none=True)
    rejected_by_user_id = fields.Integer(allow_none=True)
    rejected_at = fields.DateTime(allow_none=True)
    rejection_reason = fields.String(allow_none=True)


class LineOut(Schema):
    redemption_id = fields.Integer()
    district_id = fields.Integer()
    price_fen = fields.Integer()
    insurance_fen = fields.Integer()
    subsidy_fen = fields.Integer()
    copay_fen = fields.Integer()
    payment_method = fields.String()
    card_copay_fen = fields.Integer()


class StatementDetailOut(StatementOut):
    fingerprint = fields.String(
        metadata={"description": "What the lines and totals are now; send it back to approve."}
    )
    page = fields.Integer()
    pages = fields.Integer()
    lines = fields.List(fields.Nested(LineOut))


class PageQuery(Schema):
    page = fields.Integer(load_default=1, validate=validate.Range(min=1))


class ApproveIn(Schema):
    """What the approver was shown: approval is refused (409) if the statement changed."""

    expected_payable_fen = fields.Integer(
        required=True,
        strict=True,
        validate=validate.Range(min=0),
        metadata={"description": "The payable_fen the approver checked (GET the statement)."},
    )
    expected_fingerprint = fields.String(
        validate=validate.Length(max=64),
        metadata={"description": "Optional: the fingerprint of the statement as read."},
    )


class RejectIn(Schema):
    reason = fields.String(required=True, validate=said())


def _statement(statement_id: int) -> Statement:
    statement = db.session.get(Statement, statement_id)
    if statement is None:
        raise NotFound()
    return statement


@blp.post("/runs")
@token_required("bureau:write")
@city_bureau
@blp.doc(security=BEARER)
@blp.arguments(RunIn)
@blp.response(200, RunOut)
@error_responses(blp, 401, 403, 422)
def post_run(body):
    """Settle a voucher month: statements per provider (set-based; rerunning adds only
    what is new). Refused (422) before the month's cut-off."""
    return run.run_settlement(run.parse_month(body["month"]), actor=g.api_user)


@blp.get("/statements")
@token_required("read", "vouchers:read", any_of=True)
@city_bureau
@blp.doc(security=BEARER)
@blp.arguments(StatementsQuery, location="query")
@blp.response(200, StatementOut(many=True))
@error_responses(blp, 401, 403, 422)
def list_statements(query):
    """The statements of a month, optionally of one status."""
    select = sa.select(Statement).where(Statement.month == run.parse_month(query["month"]))
    if query.get("status"):
        select = select.where(Statement.status == query["status"])
    return list(db.session.scalars(select.order_by(Statement.provider_id, Statement.seq)))


@blp.get("/statements/<int:statement_id>")
@token_required("read", "vouchers:read", any_of=True)
@city_bureau
@blp.doc(security=BEARER)
@blp.arguments(PageQuery, location="query")
@blp.response(200, StatementDetailOut)
@error_responses(blp, 401, 403, 404)
def get_statement(query, statement_id):
    """One statement with a page of its lines (100 a page, by redemption)."""
    statement = _statement(statement_id)
    pages = max(1, -(-statement.line_count // LINES_PAGE))
    page = min(query["page"], pages)  # past the end: the last page (a huge one overflows)
    lines = db.session.scalars(
        sa.select(StatementLine)
        .where(StatementLine.statement_id == statement.id)
        .order_by(StatementLine.redemption_id)
        .limit(LINES_PAGE)
        .offset((page - 1) * LINES_PAGE)
    ).all()
    return _WithLines(statement, page, pages, lines, approval.fingerprint(statement))


class _WithLines:
    """A statement as the detail schema reads it: its own attributes plus a page of lines."""

    def __init__(self, statement, page, pages, lines, fingerprint):
        self._statement, self.page, self.pages, self.lines = statement, page, pages, lines
        self.fingerprint = fingerprint

    def __getattr__(self, name):
        return getattr(self._statement, name)


@blp.post("/statements/<int:statement_id>/approve")
@token_required("bureau:write")
@city_bureau
@blp.doc(security=BEARER)
@blp.arguments(ApproveIn)
@blp.response(200, StatementOut)
@error_responses(blp, 401, 403, 404, 409, 422)
def approve_statement(body, statement_id):
    """Approve (maker-checker; above the threshold the first approval waits for a second,
    different approver). The answer's status says which. ``expected_payable_fen`` (and
    optionally ``expected_fingerprint``) is what the approver checked: if the statement
    changed since (a rerun added lines, a reversal or a flag took one out), nothing is
    approved (409: review it again)."""
    return approval.approve(
        _statement(statement_id),
        actor=g.api_user,
        expected_payable_fen=body["expected_payable_fen"],
        expected_fingerprint=body.get("expected_fingerprint"),
    )


@blp.post("/statements/<int:statement_id>/reject")
@token_required("bureau:write")
@city_bureau
@blp.doc(security=BEARER)
@blp.arguments(RejectIn)
@blp.response(200, StatementOut)
@error_responses(blp, 401, 403, 404, 409, 422)
def reject_statement(body, statement_id):
    """Reject with a reason: the lines go back to be settled by the next run."""
    return approval.reject(_statement(statement_id), actor=g.api_user, reason=body["reason"])
