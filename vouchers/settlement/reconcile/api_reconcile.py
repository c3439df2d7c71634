"""Reconciliation in ``/api/v1/settlement`` for the bureau's finance system.

- ``POST /reconciliations`` {"month": "YYYY-MM"}: reconcile the month now ("bureau:write",
  city-wide bureau staff); the run as stored.
- ``GET /reconciliations?month=YYYY-MM``: the month's runs, newest first ("read" or
  "vouchers:read", bureau staff; a district's staff see their district's rows only).
- ``GET /exceptions?status=open|resolved|all&month=``: the exception queue.
- ``POST /exceptions/{id}/resolve`` {"resolution": "..."}: resolve a finding in writing
  ("bureau:write", city-wide staff), audited.
"""

from __future__ import annotations

import re
from datetime import date

import marshmallow as ma
import sqlalchemy as sa
from flask import g
from flask_babel import lazy_gettext as _l
from marshmallow import fields, validate

from eldercare.api import BEARER, error_responses, for_bureau
from eldercare.api_fields import month as month_field
from eldercare.api_fields import said
from eldercare.db import db
from eldercare.errors import InvalidInput, NotFound, PermissionDenied
from eldercare.timeutil import SHANGHAI
from eldercare.tokens import token_required
from vouchers.settlement import exceptions as queue
from vouchers.settlement.models import ReconciliationRun, SettlementException
from vouchers.settlement.reconcile import reconcile
from vouchers.settlement.statements.api_statements import blp
from vouchers.settlement.statements.run import parse_month

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
MONTH_MESSAGE = _l("Give the month as YYYY-MM, for example 2026-11.")
RUNS_SHOWN = 20
QUEUE_SHOWN = 200


class ReconcileMonthSchema(ma.Schema):
    month = month_field(required=True, metadata={"example": "2026-11"})


class ReconcileMonthQuerySchema(ma.Schema):
    month = month_field(metadata={"example": "2026-11"})


class ReconcileExceptionQuerySchema(ma.Schema):
    status = fields.String(
        validate=validate.OneOf(("open", "resolved", "all")), load_default="open"
    )
    month = month_field(metadata={"example": "2026-11"})


class ReconcileResolutionSchema(ma.Schema):
    resolution = fields.String(required=True, validate=said())


class ReconcileRunSchema(ma.Schema):
    id = fields.Integer()
    month = fields.String()
    ok = fields.Boolean()
    started_at = fields.String()
    finished_at = fields.String()
    open_exceptions = fields.Integer()
    findings = fields.Dict(metadata={"description": "identity, districts, checks, mismatches"})


class ReconcileRunsSchema(ma.Schema):
    runs = fields.List(fields.Nested(ReconcileRunSchema))


class ReconcileExceptionSchema(ma.Schema):
    id = fields.Integer()
    source = fields.String()
    kind = fields.String()
    label = fields.String()
    month = fields.String(allow_none=True)
    district_id = fields.Integer(allow_none=True)
    evidence = fields.Dict()
    status = fields.String()
    found_at = fields.String()
    resolution = fields.String(allow_none=True)
    resolved_at = fields.String(allow_none=True)


class ReconcileExceptionsSchema(ma.Schema):
    exceptions = fields.List(fields.Nested(ReconcileExceptionSchema))


def _month(text: str | None) -> date:
    """YYYY-MM of the programme's years (2000-2099: ``run.parse_month``), or refused."""
    if not _MONTH.match((text or "").strip()):
        raise InvalidInput(details={"month": MONTH_MESSAGE})
    return parse_month(text)


def _city():
    if g.api_user.district_id is not None:
        raise PermissionDenied(_l("This is for the city bureau's staff."))


def _time(value):
    return value.astimezone(SHANGHAI).isoformat() if value else None


def _run(run: ReconciliationRun) -> dict:
    scope = g.api_user.district_id
    findings = dict(run.findings)
    if scope is not None:  # a district's staff: their district's rows and findings only
        findings = {
            "districts": [d for d in findings["districts"] if d["district_id"] == scope],
            "mismatches": [m for m in findings["mismatches"] if m.get("district_id") == scope],
        }
    return {
        "id": run.id,
        "month": f"{run.month:%Y-%m}",
        "ok": run.ok,
        "started_at": _time(run.started_at),
        "finished_at": _time(run.finished_at),
        "open_exceptions": reconcile.open_exceptions(run.month, district_id=scope),
        "findings": findings,
    }


def _exception(x: SettlementException) -> dict:
    return {
        "id": x.id,
        "source": x.source,
        "kind": x.kind,
        "label": queue.kind_label(x.kind),
        "month": f"{x.month:%Y-%m}" if x.month else None,
        "district_id": x.district_id,
        "evidence": x.evidence,
        "status": x.status,
        "found_at": _time(x.found_at),
        "resolution": x.resolution,
        "resolved_at": _time(x.resolved_at),
    }


@blp.post("/reconciliations")
@token_required("bureau:write")
@for_bureau
@blp.doc(security=BEARER)
@blp.arguments(ReconcileMonthSchema, example={"month": "2026-11"})
@blp.response(201, ReconcileRunSchema)
@error_responses(blp, 401, 403, 422)
def reconcile_month(body):
    """Reconcile a month now: the pool identity (total and per district) and sub-ledgers,
    the card gateway, the bank, the approved statements' hashes. Each mismatch is queued."""
    _city()
    run = reconcile.reconcile_month(_month(body["month"]), actor=g.api_user)
    return _run(run)


@blp.get("/reconciliations")
@token_required("read", "vouchers:read", any_of=True)
@for_bureau
@blp.doc(security=BEARER)
@blp.arguments(ReconcileMonthQuerySchema, location="query")
@blp.response(200, ReconcileRunsSchema)
@error_responses(blp, 401, 403, 422)
def reconciliations(args):
    """The month's reconciliation runs, newest first (default: last month)."""
    month = _month(args["month"]) if args.get("month") else reconcile.previous_month()
    runs = db.session.scalars(
        sa.select(ReconciliationRun)
        .where(ReconciliationRun.month == month)
        .order_by(ReconciliationRun.finished_at.desc(), ReconciliationRun.id.desc())
        .limit(RUNS_SHOWN)
    )
    return {"runs": [_run(r) for r in runs]}


@blp.get("/exceptions")
@token_required("read", "vouchers:read", any_of=True)
@for_bureau
@blp.doc(security=BEARER)
@blp.arguments(ReconcileExceptionQuerySchema, location="query")
@blp.response(200, ReconcileExceptionsSchema)
@error_responses(blp, 401, 403, 422)
def settlement_exceptions(args):
    """The exception queue: open (default), resolved or all; a month's (and the books')."""
    query = sa.select(SettlementException).order_by(SettlementException.id.desc())
    if args["status"] != "all":
        query = query.where(SettlementException.status == args["status"])
    if args.get("month"):
        query = query.where(reconcile.of_month(_month(args["month"])))
    if g.api_user.district_id is not None:
        query = query.where(SettlementException.district_id == g.api_user.district_id)
    return {"exceptions": [_exception(x) for x in db.session.scalars(query.limit(QUEUE_SHOWN))]}


@blp.post("/exceptions/<int:exception_id>/resolve")
@token_required("bureau:write")
@for_bureau
@blp.doc(security=BEARER)
@blp.arguments(ReconcileResolutionSchema, example={"resolution": "Bank confirmed; re-imported."})
@blp.response(200, ReconcileExceptionSchema)
@error_responses(blp, 401, 403, 404, 409, 422)
def resolve_exception(body, exception_id: int):
    """Resolve a finding with a written resolution (at least a few words); audited. One
    already resolved: 409."""
    _city()
    found = db.session.get(SettlementException, exception_id)
    if found is None:
        raise NotFound()
    queue.resolve(found, resolution=body["resolution"], actor=g.api_user)
    return _exception(found)
