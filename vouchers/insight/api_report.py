"""/api/v1 for the bureau's finance and statistics systems: the report of a month or a year.

``GET /api/v1/bureau/report?period=2026-03|2026&district=<code>`` answers the report's
figures as JSON (money in fen, times in Asia/Shanghai); ``GET /api/v1/bureau/report.pdf``
the same as the PDF. Read-only, a bearer token of a bureau account ("read" or
"vouchers:read"); district staff get their district's report (another district's code is
404, as in the other bureau reads), city staff the city's or one district's. No period:
last month. A period that is not ``YYYY-MM`` or ``YYYY`` (2000-2099) is a 400.
"""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from eldercare.api import BEARER, bureau_reader, district_asked, error_responses, local_time
from eldercare.api_fields import district_code
from eldercare.tokens import token_required
from vouchers.api import blp
from vouchers.insight.report import (
    LEVELS,
    RECONCILIATION_STATUSES,
    UNKNOWN_LEVEL,
    Report,
    parse_period,
    report_for,
)

_READ = ("read", "vouchers:read")
PERIOD_PATTERN = r"^20[0-9]{2}(-(0[1-9]|1[0-2]))?$"
_FEN = {"description": "in fen"}
_LEVEL = fields.String(required=True, validate=validate.OneOf((*LEVELS, UNKNOWN_LEVEL)))


class VouchersReportQuerySchema(ma.Schema):
    # The pattern is the document's (for clients); the server reads the period itself, so
    # that a wrong one is a 400 with the report's own message, as on the page.
    period = fields.String(
        metadata={
            "description": "YYYY-MM (a month) or YYYY (a year), 2000-2099; default last month",
            "pattern": PERIOD_PATTERN,
        }
    )
    district = district_code(
        metadata={"description": "district code; district staff: their own only"}
    )


class VouchersReportDistrictSchema(ma.Schema):
    code = fields.String(required=True)
    name_zh = fields.String(required=True)
    name_en = fields.String(required=True)


class VouchersReportFundsSchema(ma.Schema):
    scope = fields.String(
        required=True,
        validate=validate.OneOf(("city", "district")),
        metadata={"description": "district: funding is city-wide; only allocations are given"},
    )
    central_fen = fields.Integer(allow_none=True, metadata=_FEN)
    local_fen = fields.Integer(allow_none=True, metadata=_FEN)
    allocated_fen = fields.Integer(required=True, metadata=_FEN)
    allocations = fields.List(
        fields.Dict(keys=fields.String()),
        required=True,
        metadata={"description": "[{district, allocated_fen}], net of take-backs"},
    )


class VouchersReportMonthSchema(ma.Schema):
    month = fields.String(required=True, metadata={"description": "YYYY-MM"})
    issued = fields.Integer(required=True)
    issued_fen = fields.Integer(required=True, metadata=_FEN)
    redeemed = fields.Integer(required=True)
    redeemed_fen = fields.Integer(required=True, metadata={"description": "subsidy, fen"})
    reversed = fields.Integer(required=True)
    elders_served = fields.Integer(required=True)


class VouchersReportLevelSchema(ma.Schema):
    level = _LEVEL
    count = fields.Integer(required=True)


class VouchersReportDistrictCountSchema(ma.Schema):
    district = fields.Nested(VouchersReportDistrictSchema, required=True)
    count = fields.Integer(required=True)


class VouchersReportFlagSchema(ma.Schema):
    rule = fields.String(required=True)
    label = fields.String(required=True, metadata={"description": "in the reader's language"})
    raised = fields.Integer(required=True)
    cleared = fields.Integer(required=True)
    rejected = fields.Integer(required=True)


class VouchersReportReconciliationSchema(ma.Schema):
    month = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(RECONCILIATION_STATUSES))
    last_run_at = fields.AwareDateTime(allow_none=True)
    open_exceptions = fields.Integer(required=True)


class VouchersReportSchema(ma.Schema):
    period = fields.String(required=True, metadata={"description": "YYYY-MM or YYYY"})
    kind = fields.String(required=True, validate=validate.OneOf(("month", "year")))
    first_day = fields.Date(required=True)
    last_day = fields.Date(required=True)
    district = fields.Nested(
        VouchersReportDistrictSchema, allow_none=True, metadata={"description": "null: the city"}
    )
    generated_at = fields.AwareDateTime(required=True)
    funds = fields.Nested(VouchersReportFundsSchema, required=True)
    months = fields.List(fields.Nested(VouchersReportMonthSchema), required=True)
    totals = fields.Nested(VouchersReportMonthSchema, required=True)
    elders_by_level = fields.List(fields.Nested(VouchersReportLevelSchema), required=True)
    elders_by_district = fields.List(
        fields.Nested(VouchersReportDistrictCountSchema), required=True
    )
    providers_certified = fields.Integer(required=True)
    agencies_certified = fields.Integer(required=True)
    certified_as_of = fields.Date(required=True)
    assessments_approved = fields.Integer(required=True)
    assessments_by_level = fields.List(fields.Nested(VouchersReportLevelSchema), required=True)
    fee_refunds_paid = fields.Integer(required=True)
    fee_refunds_paid_fen = fields.Integer(required=True, metadata=_FEN)
    flags_raised = fields.Integer(required=True)
    flags_cleared = fields.Integer(required=True)
    flags_rejected = fields.Integer(required=True)
    flags = fields.List(fields.Nested(VouchersReportFlagSchema), required=True)
    reconciliation = fields.List(fields.Nested(VouchersReportReconciliationSchema), required=True)


def _id_of(district) -> int | None:
    return district.id if district is not None else None


def _month(m) -> dict:
    return {
        "month": f"{m.month:%Y-%m}",
        "issued": m.issued,
        "issued_fen": m.issued_fen,
        "redeemed": m.redeemed,
        "redeemed_fen": m.redeemed_fen,
        "reversed": m.reversed,
        "elders_served": m.elders_served,
    }


def _district(d) -> dict:
    return {"code": d.code, "name_zh": d.name_zh, "name_en": d.name_en}


def report_json(report: Report) -> dict:
    totals = _month(report.totals) | {"month": report.period.text}
    return {
        "period": report.period.text,
        "kind": report.period.kind,
        "first_day": report.period.start,
        "last_day": report.period.last_day,
        "district": _district(report.district) if report.district else None,
        "generated_at": local_time(report.generated_at),
        "funds": {
            "scope": report.funds.scope,
            "central_fen": report.funds.central_fen,
            "local_fen": report.funds.local_fen,
            "allocated_fen": report.funds.allocated_fen,
            "allocations": [
                {"district": d.code, "allocated_fen": fen} for d, fen in report.funds.allocations
            ],
        },
        "months": [_month(m) for m in report.months],
        "totals": totals,
        "elders_by_level": [{"level": lv, "count": n} for lv, n in report.elders_by_level],
        "elders_by_district": [
            {"district": _district(d), "count": n} for d, n in report.elders_by_district
        ],
        "providers_certified": report.providers_certified,
        "agencies_certified": report.agencies_certified,
        "certified_as_of": report.certified_as_of,
        "assessments_approved": report.assessments_approved,
        "assessments_by_level": [
            {"level": lv, "count": n} for lv, n in report.assessments_by_level
        ],
        "fee_refunds_paid": report.fee_refunds_paid,
        "fee_refunds_paid_fen": report.fee_refunds_paid_fen,
        "flags_raised": report.flags_raised,
        "flags_cleared": report.flags_cleared,
        "flags_rejected": report.flags_rejected,
        "flags": [
            {
                "rule": f.rule,
                "label": str(f.label),
                "raised": f.raised,
                "cleared": f.cleared,
                "rejected": f.rejected,
            }
            for f in report.flags
        ],
        "reconciliation": [
            {
                "month": f"{r.month:%Y-%m}",
                "status": r.status,
                "last_run_at": local_time(r.last_run_at),
                "open_exceptions": r.open_exceptions,
            }
            for r in report.reconciliation
        ],
    }


def _report(query: dict) -> Report:
    user = bureau_reader()
    period = parse_period(query.get("period"))
    return report_for(period, _id_of(district_asked(query.get("district"), user)))


@blp.get("/bureau/report")
@token_required(*_READ, any_of=True)
@blp.doc(security=BEARER)
@blp.arguments(VouchersReportQuerySchema, location="query")
@blp.response(200, VouchersReportSchema)
@error_responses(blp, 400, 401, 403, 404, 422)
def bureau_report(query):
    """The bureau's report of a month or a year: funds received (the city's; a district's
    allocations), vouchers issued, redeemed and reversed by month, elders served by level
    and by district, certified providers and agencies, assessments approved, fee refunds
    paid, flags by rule and each month's reconciliation, as the report page shows them."""
    return report_json(_report(query))


@blp.get("/bureau/report.pdf")
@token_required(*_READ, any_of=True)
@blp.doc(
    security=BEARER,
    responses={
        "200": {
            "description": "The report as PDF (A4, Chinese then English).",
            "content": {"application/pdf": {"schema": {"type": "string", "format": "binary"}}},
        }
    },
)
@blp.arguments(VouchersReportQuerySchema, location="query")
@error_responses(blp, 400, 401, 403, 404, 422)
def bureau_report_pdf(query):
    """The same report as the PDF the report page offers."""
    from vouchers.insight.views_report import report_pdf_response

    return report_pdf_response(_report(query))
