"""Marshmallow schemas of the assessment API; they also write its part of the OpenAPI document.

Component names come from the class names, so every class here starts with ``Assessment``
to stay clear of the other domains' schemas in the same document.

Input schemas state every rule a JSON Schema can (ranges, patterns, choices), so that the
published document admits nothing the code refuses and generated clients are right; the
service functions check them again for their other callers. Rules a JSON Schema cannot state
(score ranges per item, ICD-10 codes, who may sign, a reason needed only to return) belong
to the service functions, which name the offending field themselves; a score in particular
reaches ``assessment.scoring`` exactly as the client sent it.
"""

from __future__ import annotations

import marshmallow as ma
from flask_babel import lazy_gettext as _l
from marshmallow import fields, validate

from assessment.models import ASSESSMENT_STATUSES, ASSESSMENT_TYPES, LEVEL_CODES
from assessment.policy import LIMITS as POLICY_LIMITS
from assessment.policy import POLICY_LEVELS
from assessment.review import DECISIONS, MAX_CASES_PER_DECISION
from eldercare.api_fields import (
    AwareDateTime,
    Date,
    StrictBoolean,
    StrictInteger,
    district_code,
    page_limit,
    page_offset,
    resident_id_number,
    row_id,
    said,
)
from eldercare.api_fields import month as month_field


class ItemScores(fields.Dict):
    """Item code to score, passed on uncoerced: ``assessment.scoring`` checks every value
    (whole number, in the item's range, no booleans) and names each item that is wrong."""

    def __init__(self, **kwargs):
        super().__init__(keys=fields.String(), **kwargs)


# --- the instrument -------------------------------------------------------------------


class AssessmentInstrumentItemSchema(ma.Schema):
    code = fields.String(required=True)
    dimension = fields.String(required=True, metadata={"description": "dimension code"})
    zh = fields.String(required=True)
    en = fields.String(required=True)
    min = fields.Integer(required=True)
    max = fields.Integer(required=True)


class AssessmentInstrumentDimensionSchema(ma.Schema):
    code = fields.String(required=True)
    zh = fields.String(required=True)
    en = fields.String(required=True)
    max = fields.Integer(required=True)
    items = fields.List(
        fields.String(), required=True, metadata={"description": "item codes, in order"}
    )


class AssessmentInstrumentLevelSchema(ma.Schema):
    code = fields.String(required=True, validate=validate.OneOf(LEVEL_CODES))
    rank = fields.Integer(required=True, metadata={"description": "0 intact .. 4 complete loss"})
    zh = fields.String(required=True)
    en = fields.String(required=True)
    min_total = fields.Integer(required=True)
    max_total = fields.Integer(required=True)


class AssessmentInstrumentSchema(ma.Schema):
    max_total = fields.Integer(required=True)
    items = fields.List(fields.Nested(AssessmentInstrumentItemSchema), required=True)
    dimensions = fields.List(fields.Nested(AssessmentInstrumentDimensionSchema), required=True)
    levels = fields.List(fields.Nested(AssessmentInstrumentLevelSchema), required=True)


# --- cases ----------------------------------------------------------------------------


class AssessmentResidentSchema(ma.Schema):
    """What an agency needs to visit the elder; the full ID number is never sent."""

    name = fields.String(required=True)
    masked_id_number = fields.String(required=True)
    sex = fields.String(required=True, validate=validate.OneOf(("male", "female")))
    birth_date = fields.Date(required=True)
    district = fields.String(required=True, metadata={"description": "district code (GB/T 2260)"})
    street = fields.String(required=True)
    address = fields.String(required=True)
    phone = fields.String(allow_none=True)


class AssessmentSummarySchema(ma.Schema):
    id = fields.Integer(required=True)
    type = fields.String(required=True, validate=validate.OneOf(ASSESSMENT_TYPES))
    status = fields.String(required=True, validate=validate.OneOf(ASSESSMENT_STATUSES))
    external_ref = fields.String(allow_none=True)
    applied_at = fields.AwareDateTime(required=True)
    assigned_at = fields.AwareDateTime(allow_none=True)
    scheduled_for = fields.AwareDateTime(allow_none=True)
    assessed_on = fields.Date(allow_none=True)
    total = fields.Integer(allow_none=True)
    level = fields.String(allow_none=True, validate=validate.OneOf(LEVEL_CODES))
    resident = fields.Nested(AssessmentResidentSchema, required=True)


class AssessmentCaseSchema(AssessmentSummarySchema):
    recorded_at = fields.AwareDateTime(allow_none=True)
    items = fields.Dict(keys=fields.String(), values=fields.Integer(), allow_none=True)
    dimensions = fields.Dict(keys=fields.String(), values=fields.Integer(), allow_none=True)
    base_level = fields.String(allow_none=True, validate=validate.OneOf(LEVEL_CODES))
    adjustments = fields.List(
        fields.String(),
        required=True,
        metadata={"description": "coma, psychiatric_diagnosis, care_risk_events"},
    )
    coma = fields.Boolean(required=True)
    diagnoses = fields.List(fields.String(), required=True)
    care_risk_events_30d = fields.Integer(required=True)
    recorder_certificate = fields.String(allow_none=True)
    cosigner_certificate = fields.String(allow_none=True)
    fee_fen = fields.Integer(required=True)
    refundable_fee_fen = fields.Integer(required=True)
    review_note = fields.String(
        allow_none=True, metadata={"description": "what to correct, when returned"}
    )
    reviewed_at = fields.AwareDateTime(allow_none=True)
    effective_from = fields.Date(allow_none=True)
    valid_until = fields.Date(allow_none=True)


class AssessmentPageSchema(ma.Schema):
    items = fields.List(fields.Nested(AssessmentSummarySchema), required=True)
    total = fields.Integer(required=True, metadata={"description": "matching cases, all pages"})
    limit = fields.Integer(required=True)
    offset = fields.Integer(required=True)


class AssessmentListQuerySchema(ma.Schema):
    status = fields.String(validate=validate.OneOf(ASSESSMENT_STATUSES))
    limit = page_limit()
    offset = page_offset()


class AssessmentScheduleSchema(ma.Schema):
    scheduled_for = AwareDateTime(
        required=True,
        metadata={"description": "ISO 8601 with an offset, e.g. 2026-12-01T09:30:00+08:00"},
    )


class AssessmentResultSchema(ma.Schema):
    assessed_on = Date(
        required=True, metadata={"description": "the visit, a date in Asia/Shanghai"}
    )
    items = ItemScores(
        required=True,
        metadata={
            "description": "every item of GET /api/v1/instrument: code -> whole-number score",
            "additionalProperties": {"type": "integer"},
        },
    )
    coma = StrictBoolean(load_default=False)
    diagnoses = fields.List(
        fields.String(validate=validate.Length(max=10)),
        load_default=list,
        validate=validate.Length(max=20),
        metadata={"description": "ICD-10 codes, e.g. F00, F03.1"},
    )
    care_risk_events_30d = StrictInteger(load_default=0)
    recorder_certificate = fields.String(
        required=True,
        validate=validate.Length(min=1, max=40),
        metadata={"description": "GB/T 42195 certificate number of an assessor of your agency"},
    )
    cosigner_certificate = fields.String(
        required=True,
        validate=validate.Length(min=1, max=40),
        metadata={"description": "a second assessor of your agency"},
    )
    fee_fen = StrictInteger(required=True, metadata={"description": "the fee charged, in fen"})
    external_ref = fields.String(
        load_default=None,
        validate=validate.Length(min=1, max=60),
        metadata={"description": "your own reference for the case, unique in your agency"},
    )


# --- eligibility ----------------------------------------------------------------------


class AssessmentEligibilityCheckSchema(ma.Schema):
    # In the body, not the URL: a resident ID number must not end up in access logs.
    id_number = resident_id_number(required=True)
    on = Date(metadata={"description": "the day asked about (default: today, Shanghai)"})


class AssessmentEligibilityReasonSchema(ma.Schema):
    code = fields.String(required=True)
    message = fields.String(required=True, metadata={"description": "in the client's language"})


class AssessmentEligibilityAnswerSchema(ma.Schema):
    on = fields.Date(required=True)
    eligible = fields.Boolean(required=True)
    level = fields.String(allow_none=True, validate=validate.OneOf(LEVEL_CODES))
    reasons = fields.List(fields.Nested(AssessmentEligibilityReasonSchema), required=True)
    holds_until = fields.Date(
        allow_none=True, metadata={"description": "last day it holds, as far as known today"}
    )
    assessment_id = fields.Integer(allow_none=True)


# --- the bureau: moves, policy versions, fee refunds, bulk review -----------------------


class AssessmentMoveOutSchema(ma.Schema):
    # The ID number in the body, never in the URL (access logs).
    id_number = resident_id_number(required=True)
    moved_out_on = Date(
        required=True,
        metadata={"description": "first day no longer living in the city (a future day too)"},
    )


class AssessmentMoveOutAnswerSchema(ma.Schema):
    masked_id_number = fields.String(required=True)
    moved_out_on = fields.Date(required=True)
    eligible_until = fields.Date(required=True, metadata={"description": "the day before"})
    vouchers_stop_from = fields.Date(
        required=True, metadata={"description": "first day of the month after the move"}
    )


class AssessmentPolicyVersionSchema(ma.Schema):
    id = fields.Integer(required=True)
    effective_from = fields.Date(required=True)
    effective_to = fields.Date(allow_none=True, metadata={"description": "exclusive"})
    min_age = fields.Integer(required=True)
    eligible_levels = fields.List(fields.String(validate=validate.OneOf(LEVEL_CODES)))
    assessment_validity_months = fields.Integer(required=True)
    fee_refund_cap_fen = fields.Integer(required=True)
    conflict_lookback_months = fields.Integer(required=True)
    expiry_reminder_days = fields.Integer(required=True)
    note = fields.String(allow_none=True)


def _limit(name: str) -> validate.Range:
    low, high, message = POLICY_LIMITS[name]
    return validate.Range(min=low, max=high, error=message)


class AssessmentPolicyNewSchema(ma.Schema):
    effective_from = Date(
        required=True, metadata={"description": "tomorrow at the earliest (Asia/Shanghai)"}
    )
    min_age = StrictInteger(required=True, validate=_limit("min_age"))
    eligible_levels = fields.List(
        fields.String(validate=validate.OneOf(POLICY_LEVELS)),
        required=True,
        validate=validate.Length(
            min=1, max=len(POLICY_LEVELS), error=_l("Choose the assessed levels that qualify.")
        ),
    )
    assessment_validity_months = StrictInteger(
        required=True, validate=_limit("assessment_validity_months")
    )
    fee_refund_cap_fen = StrictInteger(required=True, validate=_limit("fee_refund_cap_fen"))
    conflict_lookback_months = StrictInteger(
        required=True, validate=_limit("conflict_lookback_months")
    )
    expiry_reminder_days = StrictInteger(required=True, validate=_limit("expiry_reminder_days"))
    note = fields.String(
        required=True,
        validate=said(500),
        metadata={"description": "the document that sets this rule"},
    )


class AssessmentFeeRefundSchema(ma.Schema):
    id = fields.Integer(required=True)
    assessment_id = fields.Integer(required=True)
    resident_name = fields.String(required=True)
    masked_id_number = fields.String(required=True)
    district = fields.String(required=True, metadata={"description": "district code"})
    level = fields.String(required=True, validate=validate.OneOf(LEVEL_CODES))
    fee_fen = fields.Integer(required=True, metadata={"description": "the fee charged"})
    amount_fen = fields.Integer(required=True, metadata={"description": "owed back"})
    owed_on = fields.Date(required=True, metadata={"description": "the approval day"})
    status = fields.String(required=True, validate=validate.OneOf(("owed", "paid")))
    payee_account_given = fields.Boolean(
        required=True,
        metadata={"description": "the elder, the family or the bureau gave the account"},
    )
    payee_account_last4 = fields.String(
        allow_none=True, metadata={"description": "the account number's last four digits"}
    )


class AssessmentFeeRefundPageSchema(ma.Schema):
    items = fields.List(fields.Nested(AssessmentFeeRefundSchema), required=True)
    total = fields.Integer(required=True)
    total_amount_fen = fields.Integer(required=True, metadata={"description": "all pages"})
    limit = fields.Integer(required=True)
    offset = fields.Integer(required=True)


class AssessmentFeeRefundQuerySchema(ma.Schema):
    month = month_field(metadata={"description": "YYYY-MM: refunds owed in that month"})
    district = district_code()
    limit = page_limit()
    offset = page_offset()


class AssessmentCheckSchema(ma.Schema):
    code = fields.String(
        required=True, metadata={"description": "signers, signature, scores, conflict, in_date"}
    )
    passed = fields.Boolean(required=True)
    message = fields.String(allow_none=True, metadata={"description": "why it failed"})


class AssessmentReviewCaseSchema(AssessmentSummarySchema):
    recorder_certificate = fields.String(allow_none=True)
    cosigner_certificate = fields.String(allow_none=True)
    agency_licence = fields.String(required=True)
    checks = fields.List(fields.Nested(AssessmentCheckSchema), required=True)
    passes = fields.Boolean(required=True, metadata={"description": "every check passed"})


class AssessmentReviewPageSchema(ma.Schema):
    items = fields.List(fields.Nested(AssessmentReviewCaseSchema), required=True)
    total = fields.Integer(required=True)
    limit = fields.Integer(required=True)
    offset = fields.Integer(required=True)


class AssessmentReviewQuerySchema(ma.Schema):
    agency_licence = fields.String(metadata={"description": "only this agency's cases"})
    limit = page_limit()
    offset = page_offset()


class AssessmentDecisionSchema(ma.Schema):
    assessment_ids = fields.List(
        row_id(),
        required=True,
        validate=validate.Length(
            min=1,
            max=MAX_CASES_PER_DECISION,
            error=_l("Select between 1 and %(most)s cases.", most=MAX_CASES_PER_DECISION),
        ),
        metadata={"description": f"1 to {MAX_CASES_PER_DECISION} recorded cases"},
    )
    decision = fields.String(
        required=True, validate=validate.OneOf(DECISIONS, error=_l("Choose approve or return."))
    )
    reason = fields.String(
        load_default=None,
        validate=validate.Length(max=2000),
        metadata={"description": "what to correct (required to return)"},
    )


class AssessmentDecisionOutcomeSchema(ma.Schema):
    assessment_id = fields.Integer(required=True)
    outcome = fields.String(
        required=True, validate=validate.OneOf(("approved", "returned", "refused"))
    )
    code = fields.String(allow_none=True, metadata={"description": "the failed check or error"})
    message = fields.String(allow_none=True, metadata={"description": "why it was refused"})


class AssessmentDecisionAnswerSchema(ma.Schema):
    outcomes = fields.List(fields.Nested(AssessmentDecisionOutcomeSchema), required=True)
