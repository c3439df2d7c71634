"""GET /api/v1/bureau/forecast: the pool forecast (vouchers.insight.forecast) with what-ifs.

A token of a bureau account ("read" or "vouchers:read"). District staff get their own
district; another district's code answers 404. City staff get the city, or the district
whose code they give. Read-only: the what-ifs are computed with and never stored.
"""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields

from eldercare.api import BEARER, bureau_reader, district_asked, error_responses
from eldercare.tokens import token_required
from vouchers.api import blp
from vouchers.insight import forecast as fc

_MONTH = {"description": "YYYY-MM", "example": "2026-09"}


# The what-ifs are read by the forecast itself (a bad one is its 400 naming the field, as on
# the page); the patterns tell clients and test generators the values it accepts.
PERCENT_PATTERN = r"^(100(\.0{1,2})?|[0-9]{1,2}(\.[0-9]{1,2})?)$"
CAP_PATTERN = r"^(100000(\.0{1,2})?|[0-9]{1,5}(\.[0-9]{1,2})?)$"
ELIGIBLE_PATTERN = r"^(10000000|[0-9]{1,7})$"


def _what_if(description: str, pattern: str) -> fields.String:
    return fields.String(metadata={"description": description, "pattern": pattern})


class VouchersForecastQuerySchema(ma.Schema):
    district = fields.String(
        metadata={"description": "district code (staff of a district: theirs, the default)"}
    )
    take_up = _what_if("what-if take-up rate, percent from 0 to 100", PERCENT_PATTERN)
    ratio = _what_if("what-if ratio the voucher pays, percent from 0 to 100", PERCENT_PATTERN)
    cap = _what_if("what-if monthly cap, yuan from 0 to 100000", CAP_PATTERN)
    eligible = _what_if("what-if eligible elders, 0 to 10000000", ELIGIBLE_PATTERN)


class VouchersForecastInputsSchema(ma.Schema):
    money_left_fen = fields.Integer(required=True)
    eligible = fields.Integer(required=True)
    take_up_bp = fields.Integer(required=True)
    out_of_pocket_fen = fields.Integer(
        required=True, metadata={"description": "price - insurance, per user per month"}
    )
    ratio_bp = fields.Integer(required=True)
    cap_fen = fields.Integer(required=True)
    start_month = fields.String(required=True, metadata=_MONTH)


class VouchersForecastMonthSchema(ma.Schema):
    month = fields.String(required=True, metadata=_MONTH)
    opening_fen = fields.Integer(required=True)
    spend_fen = fields.Integer(required=True)
    closing_fen = fields.Integer(required=True)
    shortfall_fen = fields.Integer(required=True)


class VouchersForecastHistorySchema(ma.Schema):
    month = fields.String(required=True, metadata=_MONTH)
    eligible = fields.Integer(required=True)
    users = fields.Integer(required=True)
    take_up_bp = fields.Integer(required=True)
    out_of_pocket_fen = fields.Integer(required=True)
    subsidy_fen = fields.Integer(required=True)


class VouchersForecastSchema(ma.Schema):
    district = fields.String(required=True, allow_none=True)
    answer = fields.String(required=True)
    assumptions = fields.String(required=True)
    current = fields.Nested(VouchersForecastInputsSchema, required=True)
    inputs = fields.Nested(VouchersForecastInputsSchema, required=True)
    subsidy_per_user_fen = fields.Integer(required=True)
    monthly_spend_fen = fields.Integer(required=True)
    months = fields.Integer(
        required=True, allow_none=True, metadata={"description": "null: no spend, indefinitely"}
    )
    run_out_month = fields.String(required=True, allow_none=True, metadata=_MONTH)
    lasts_until = fields.String(required=True, allow_none=True, metadata=_MONTH)
    lasts_beyond = fields.String(required=True, allow_none=True, metadata=_MONTH)
    table = fields.List(fields.Nested(VouchersForecastMonthSchema), required=True)
    history = fields.List(fields.Nested(VouchersForecastHistorySchema), required=True)


def _month(day) -> str | None:
    return f"{day:%Y-%m}" if day is not None else None


def _inputs(i: fc.Inputs) -> dict:
    return {
        "money_left_fen": i.money_left_fen,
        "eligible": i.eligible,
        "take_up_bp": i.take_up_bp,
        "out_of_pocket_fen": i.out_of_pocket_fen,
        "ratio_bp": i.ratio_bp,
        "cap_fen": i.cap_fen,
        "start_month": _month(i.start),
    }


@blp.get("/bureau/forecast")
@token_required("read", "vouchers:read", any_of=True)
@blp.doc(security=BEARER)
@blp.arguments(VouchersForecastQuerySchema, location="query")
@blp.response(200, VouchersForecastSchema)
@error_responses(blp, 400, 401, 403, 404, 422)
def bureau_forecast(query):
    """The month the pool (or the district's money) runs out at the current take-up, with
    what-ifs (``take_up`` %, ``ratio`` %, ``cap`` yuan, ``eligible``): the answer in words,
    the inputs from the data (``current``) and those used (``inputs``), the month-by-month
    table and the months it is based on. A bad what-if is a 400 naming the field."""
    user = bureau_reader()
    district = district_asked(query.get("district"), user)
    result = fc.forecast(district, fc.parse_what_ifs(query))
    p = result.projection
    return {
        "district": district.code if district else None,
        "answer": fc.answer(p),
        "assumptions": fc.assumptions(p),
        "current": _inputs(result.current),
        "inputs": _inputs(result.inputs),
        "subsidy_per_user_fen": p.subsidy_per_user_fen,
        "monthly_spend_fen": p.monthly_spend_fen,
        "months": p.months,
        "run_out_month": _month(p.run_out),
        "lasts_until": _month(p.lasts_until),
        "lasts_beyond": _month(p.beyond),
        "table": [
            {
                "month": _month(r.month),
                "opening_fen": r.opening_fen,
                "spend_fen": r.spend_fen,
                "closing_fen": r.closing_fen,
                "shortfall_fen": r.shortfall_fen,
            }
            for r in p.rows
        ],
        "history": [
            {
                "month": _month(m.month),
                "eligible": m.eligible,
                "users": m.users,
                "take_up_bp": m.take_up_bp,
                "out_of_pocket_fen": m.out_of_pocket_fen,
                "subsidy_fen": m.subsidy_fen,
            }
            for m in result.history.months
        ],
    }
