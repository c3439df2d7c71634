"""/api/v1 for the bureau's anomaly flags and rules (on ``vouchers.api.blp``).

- ``GET /bureau/flags?status=open|cleared|rejected|all&rule=&month=YYYY-MM&limit=&offset=``:
  flags, oldest first, paged, each with its redemption's facts, the rule's name and the
  evidence both as data and in words (the reader's language, ``Accept-Language``), and
  whether the redemption is already settled ("read" or "vouchers:read").
- ``POST /bureau/flags/{id}/clear`` / ``.../reject`` {"reason": "..."}: decide a flag
  (``flags.clear`` / ``flags.reject``: rejecting reverses the redemption, or claws it back
  if settled, and closes its other open flags), audited. Scope "bureau:write", as every
  bureau write of the API; a bureau officer or approver, and, as on the flags page, a
  district's staff decide their district's flags (another district's flag answers 404).
  Decided already: 409.
- ``GET /bureau/anomaly-rules``: every rule's versions (read-only: a new version is added on
  the bureau's page, where an approver signs in to decide it).

Bureau accounts only; a district's staff see their district's flags only.
"""

from __future__ import annotations

from datetime import date

import marshmallow as ma
import sqlalchemy as sa
from flask import g
from marshmallow import fields, validate

from eldercare.api import BEARER, error_responses, for_bureau, local_time
from eldercare.api_fields import month as month_field
from eldercare.api_fields import page_limit, page_offset, said
from eldercare.db import db
from eldercare.tokens import token_required
from vouchers.api import blp
from vouchers.integrity import flags, rule_versions
from vouchers.integrity.models import FLAG_STATUSES, RedemptionFlag
from vouchers.integrity.rules import DEFAULTS
from vouchers.models import Redemption, Voucher

_READ = ("read", "vouchers:read")
_RULE_CODES = (flags.RULE_BUREAU, *DEFAULTS)
_LOCAL_TIME = {"description": "ISO 8601, in Asia/Shanghai (+08:00)"}


class VouchersFlagQuerySchema(ma.Schema):
    status = fields.String(load_default="open", validate=validate.OneOf((*FLAG_STATUSES, "all")))
    rule = fields.String(validate=validate.OneOf(_RULE_CODES))
    month = month_field(metadata={"description": "the voucher's month, YYYY-MM"})
    limit = page_limit()
    offset = page_offset()


class VouchersFlagRedemptionSchema(ma.Schema):
    id = fields.Integer(required=True)
    status = fields.String(required=True)
    month = fields.String(required=True, metadata={"description": "YYYY-MM"})
    provider_id = fields.Integer(required=True)
    subsidy_fen = fields.Integer(allow_none=True, metadata={"description": "in fen"})
    checked_in_at = fields.AwareDateTime(required=True, metadata=_LOCAL_TIME)
    settled = fields.Boolean(
        required=True,
        metadata={"description": "in an approved statement: rejecting claws it back"},
    )
    held = fields.Boolean(
        required=True,
        metadata={
            "description": "held out of settlement now: false once reversed (its flags stay "
            "open for a look) or settled"
        },
    )


class VouchersFlagSchema(ma.Schema):
    id = fields.Integer(required=True)
    rule = fields.String(required=True, metadata={"description": 'rule code ("bureau": by hand)'})
    rule_label = fields.String(required=True, metadata={"description": "the rule's name"})
    evidence = fields.Dict(required=True, metadata={"description": "the evidence, as data"})
    explanation = fields.String(
        required=True, metadata={"description": "the evidence in words (Accept-Language)"}
    )
    status = fields.String(required=True, validate=validate.OneOf(FLAG_STATUSES))
    raised_at = fields.AwareDateTime(required=True, metadata=_LOCAL_TIME)
    decided_at = fields.AwareDateTime(allow_none=True, metadata=_LOCAL_TIME)
    reason = fields.String(allow_none=True, metadata={"description": "the decision's reason"})
    redemption = fields.Nested(VouchersFlagRedemptionSchema, required=True)


class VouchersFlagPageSchema(ma.Schema):
    items = fields.List(fields.Nested(VouchersFlagSchema), required=True)
    total = fields.Integer(required=True, metadata={"description": "matching rows, all pages"})
    limit = fields.Integer(required=True)
    offset = fields.Integer(required=True)


class VouchersFlagDecisionSchema(ma.Schema):
    reason = fields.String(
        required=True,
        validate=said(flags.REASON_MAX),
        metadata={"description": "why; kept in the audit trail"},
    )


class VouchersAnomalyRuleVersionSchema(ma.Schema):
    id = fields.Integer(required=True)
    code = fields.String(required=True)
    label = fields.String(required=True)
    params = fields.Dict(required=True, metadata={"description": "the thresholds, as data"})
    enabled = fields.Boolean(required=True)
    effective_from = fields.Date(required=True)
    effective_to = fields.Date(
        allow_none=True, metadata={"description": "exclusive; null: open-ended"}
    )
    note = fields.String(allow_none=True)


class VouchersAnomalyRulesSchema(ma.Schema):
    versions = fields.List(fields.Nested(VouchersAnomalyRuleVersionSchema), required=True)


def _flag(flag: RedemptionFlag, redemption: Redemption, month: date) -> dict:
    # Another district's redemptions in a group's evidence are left out for district staff
    # (flags.evidence_for), in the data as in the words: worked out once, then put in words
    # as it stands (already the reader's).
    shown = flags.evidence_for(flag.evidence, g.api_user.district_id)
    return {
        "id": flag.id,
        "rule": flag.rule,
        "rule_label": flags.rule_label(flag.rule),
        "evidence": shown,
        "explanation": flags.explain(flag.rule, shown),
        "status": flag.status,
        "raised_at": local_time(flag.raised_at),
        "decided_at": local_time(flag.decided_at) if flag.decided_at else None,
        "reason": flag.reason,
        "redemption": {
            "id": redemption.id,
            "status": redemption.status,
            "month": month.strftime("%Y-%m"),
            "provider_id": redemption.provider_id,
            "subsidy_fen": redemption.subsidy_fen,
            "checked_in_at": local_time(redemption.checked_in_at),
            "settled": flags.is_settled(redemption),
            "held": flags.is_held(redemption),
        },
    }


def _month(text: str | None) -> date | None:
    if not text:
        return None
    year, month = text.split("-")
    return date(int(year), int(month), 1)


@blp.get("/bureau/flags")
@token_required(*_READ, any_of=True)
@for_bureau
@blp.doc(security=BEARER)
@blp.arguments(VouchersFlagQuerySchema, location="query")
@blp.response(200, VouchersFlagPageSchema)
@error_responses(blp, 401, 403, 422)
def bureau_flags(query):
    """Flags on redemptions, oldest first: ``status`` (open by default, or all), ``rule``
    (a code; "bureau" for holds by hand), ``month`` (the voucher's), paged. Each with the
    evidence as data and in words, and whether its redemption is already settled. A
    district's staff see their district only."""
    status = None if query["status"] == "all" else query["status"]
    statement = flags.flag_query(
        g.api_user, status=status, rule=query.get("rule"), month=_month(query.get("month"))
    ).add_columns(Voucher.month)
    total = db.session.scalar(
        sa.select(sa.func.count()).select_from(statement.order_by(None).subquery())
    )
    rows = db.session.execute(statement.offset(query["offset"]).limit(query["limit"])).all()
    return {
        "items": [_flag(flag, redemption, month) for flag, redemption, month in rows],
        "total": total,
        "limit": query["limit"],
        "offset": query["offset"],
    }


def _decision(action, body, flag_id: int) -> dict:
    flag = flags.flag_in_scope(flag_id, g.api_user)
    action(flag, reason=body["reason"], actor=g.api_user)
    redemption = db.session.get(Redemption, flag.redemption_id)
    db.session.refresh(flag)
    db.session.refresh(redemption)
    return _flag(flag, redemption, redemption.voucher.month)


@blp.post("/bureau/flags/<int:flag_id>/clear")
@token_required("bureau:write")
@for_bureau
@blp.doc(security=BEARER)
@blp.arguments(VouchersFlagDecisionSchema, example={"reason": "电话核实，服务已提供"})
@blp.response(200, VouchersFlagSchema)
@error_responses(blp, 401, 403, 404, 409, 422)
def bureau_flag_clear(body, flag_id: int):
    """Nothing wrong: the flag is cleared with the reason (audited); the redemption is
    settled with the next run unless another open flag still holds it, or it was reversed
    meanwhile (``redemption.held`` false: nothing is settled). Decided already: 409."""
    return _decision(flags.clear, body, flag_id)


@blp.post("/bureau/flags/<int:flag_id>/reject")
@token_required("bureau:write")
@for_bureau
@blp.doc(security=BEARER)
@blp.arguments(VouchersFlagDecisionSchema, example={"reason": "家属证实当日未上门"})
@blp.response(200, VouchersFlagSchema)
@error_responses(blp, 401, 403, 404, 409, 422)
def bureau_flag_reject(body, flag_id: int):
    """The service was not delivered as claimed: the flag is rejected with the reason, the
    redemption reversed through the normal path (a card co-payment refunded; a settled one
    clawed back from the provider) and its other open flags closed as rejected with it;
    audited. Decided already: 409; a reversal refused (its window closed): 409, nothing
    changed."""
    return _decision(flags.reject, body, flag_id)


@blp.get("/bureau/anomaly-rules")
@token_required(*_READ, any_of=True)
@for_bureau
@blp.doc(security=BEARER)
@blp.response(200, VouchersAnomalyRulesSchema)
@error_responses(blp, 401, 403)
def bureau_anomaly_rules():
    """Every anomaly rule's versions, newest first: thresholds, on or off, in force from
    ``effective_from`` until ``effective_to`` (exclusive). Read-only."""
    return {
        "versions": [
            {
                "id": v.id,
                "code": v.code,
                "label": flags.rule_label(v.code),
                "params": v.params or {},
                "enabled": v.enabled,
                "effective_from": v.effective_from,
                "effective_to": v.effective_to,
                "note": v.note,
            }
            for versions in rule_versions.history().values()
            for v in versions
        ]
    }
