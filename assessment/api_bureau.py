"""/api/v1 operations for the bureau's own systems: moves out of the city, eligibility policy
versions, the assessment fees owed back, and one decision for many recorded results.

Reads need the ``read`` scope, changes ``bureau:write``; the token's account must hold the
bureau role the page would ask for. District staff see and change only their district:
anything else answers 404, as a missing record would.
"""

from __future__ import annotations

from datetime import date, timedelta

import sqlalchemy as sa
from flask import g
from flask_babel import lazy_gettext as _l

from assessment import fee_refunds, policy, review
from assessment.api import blp
from assessment.eligibility import record_move_out
from assessment.models import Agency, Assessment, EligibilityPolicy
from assessment.schemas import (
    AssessmentDecisionAnswerSchema,
    AssessmentDecisionSchema,
    AssessmentFeeRefundPageSchema,
    AssessmentFeeRefundQuerySchema,
    AssessmentMoveOutAnswerSchema,
    AssessmentMoveOutSchema,
    AssessmentPolicyNewSchema,
    AssessmentPolicyVersionSchema,
    AssessmentReviewPageSchema,
    AssessmentReviewQuerySchema,
)
from eldercare import stored_text
from eldercare.accounts import BUREAU_ROLES
from eldercare.api import BEARER, error_responses, page_of
from eldercare.auth import ensure_in_district, scope_to_district
from eldercare.db import db
from eldercare.errors import InvalidInput, NotFound, PermissionDenied
from eldercare.register import resident_id_error
from eldercare.residents import Resident
from eldercare.timeutil import local_today
from eldercare.tokens import token_required

WRITE = "bureau:write"
_EXAMPLE_ID = "210102194403121225"


def _require_role(*roles: str):
    user = g.api_user
    if not user.has_role(*roles):
        raise PermissionDenied(_l("This operation is for the bureau's accounts."))
    return user


def _resident_by_number(id_number: str, user) -> Resident:
    problem = resident_id_error(id_number)
    if problem:
        raise InvalidInput(details={"id_number": problem})
    resident = db.session.scalar(sa.select(Resident).where(Resident.id_number_is(id_number)))
    if resident is None:
        raise NotFound()
    ensure_in_district(resident.district_id, user=user)
    return resident


def _next_month(day: date) -> date:
    return date(day.year + (day.month == 12), day.month % 12 + 1, 1)


# --- moving out of the city -------------------------------------------------------------


@blp.post("/residents/move-out")
@token_required(WRITE)
@blp.doc(security=BEARER)
@blp.arguments(
    AssessmentMoveOutSchema, example={"id_number": _EXAMPLE_ID, "moved_out_on": "2026-01-15"}
)
@blp.response(
    200,
    AssessmentMoveOutAnswerSchema,
    example={
        "masked_id_number": "2101**********0021",
        "moved_out_on": "2026-01-15",
        "eligible_until": "2026-01-14",
        "vouchers_stop_from": "2026-02-01",
    },
)
@error_responses(blp, 401, 403, 404, 409, 422)
def move_out(body):
    """Record that an elder moves (or moved) out of the city; vouchers stop from the month
    after. A known future day is allowed; a second move for the same elder is a 409."""
    user = _require_role("bureau_officer")
    resident = _resident_by_number(body["id_number"], user)
    record_move_out(resident, body["moved_out_on"], today=local_today())
    moved = resident.moved_out_on
    return {
        "masked_id_number": resident.masked_id_number,
        "moved_out_on": moved,
        "eligible_until": moved - timedelta(days=1),
        "vouchers_stop_from": _next_month(moved),
    }


# --- eligibility policy versions --------------------------------------------------------

_POLICY_EXAMPLE = {
    "effective_from": "2027-01-01",
    "min_age": 60,
    "eligible_levels": ["moderate", "severe", "complete"],
    "assessment_validity_months": 12,
    "fee_refund_cap_fen": 12000,
    "conflict_lookback_months": 12,
    "expiry_reminder_days": 30,
    "note": "沈民发〔2026〕12号",
}


def _version(p: EligibilityPolicy) -> dict:
    return {
        "id": p.id,
        "effective_from": p.effective_from,
        "effective_to": p.effective_to,
        "min_age": p.min_age,
        "eligible_levels": p.eligible_levels.split(),
        "assessment_validity_months": p.assessment_validity_months,
        "fee_refund_cap_fen": p.fee_refund_cap_fen,
        "conflict_lookback_months": p.conflict_lookback_months,
        "expiry_reminder_days": p.expiry_reminder_days,
        "note": stored_text.render(p.note) or None,  # the seeded basis in the reader's words
    }


@blp.get("/eligibility-policies")
@token_required("read")
@blp.doc(security=BEARER)
@blp.response(
    200,
    AssessmentPolicyVersionSchema(many=True),
    example=[{"id": 2, "effective_to": None, **_POLICY_EXAMPLE}],
)
@error_responses(blp, 401, 403)
def list_policies():
    """Every eligibility policy version, newest first."""
    _require_role(*BUREAU_ROLES, "admin")
    return [_version(p) for p in policy.versions()]


@blp.post("/eligibility-policies")
@token_required(WRITE)
@blp.doc(security=BEARER)
@blp.arguments(AssessmentPolicyNewSchema, example=_POLICY_EXAMPLE)
@blp.response(
    201, AssessmentPolicyVersionSchema, example={"id": 2, "effective_to": None, **_POLICY_EXAMPLE}
)
@error_responses(blp, 401, 403, 409, 422)
def add_policy(body):
    """Add a version from a future date (a city-wide approver only); the version in force
    then ends on that day. A version starting on or after that date already: 409."""
    user = _require_role("bureau_approver")
    return _version(policy.add_version(**body, actor=user))


# --- assessment fee refunds -------------------------------------------------------------


@blp.get("/assessment-fee-refunds")
@token_required("read")
@blp.doc(security=BEARER)
@blp.arguments(AssessmentFeeRefundQuerySchema, location="query")
@blp.response(
    200,
    AssessmentFeeRefundPageSchema,
    example={
        "items": [
            {
                "id": 7,
                "assessment_id": 41,
                "resident_name": "王秀英",
                "masked_id_number": "2101**********0021",
                "district": "210102",
                "level": "moderate",
                "fee_fen": 8050,
                "amount_fen": 8050,
                "owed_on": "2025-07-03",
                "status": "owed",
                "payee_account_given": True,
                "payee_account_last4": "7890",
            }
        ],
        "total": 1,
        "total_amount_fen": 8050,
        "limit": 50,
        "offset": 0,
    },
)
@error_responses(blp, 401, 403, 404, 422)
def list_fee_refunds(query):
    """Assessment fees owed back to elders (moderate or worse, up to the policy's cap), by
    the month they became owed and district; paged, oldest first. A district code no
    district has: 404, as for a district outside the officer's own."""
    user = _require_role(*BUREAU_ROLES, "admin")
    month = fee_refunds.parse_month(query.get("month"))
    try:
        district = fee_refunds.district_by_code(query.get("district"))
    except InvalidInput as error:  # the form's message; for the API a code is a resource
        raise NotFound(_l("No district has this code."), details=error.details) from None
    if district is not None and user.district_id not in (None, district.id):
        raise NotFound()
    filters = {"month": month, "district_id": district.id if district else None}
    scoped = fee_refunds.FeeRefund.district_id
    statement = scope_to_district(fee_refunds.refunds_query(**filters), scoped, user=user)
    total, amount = db.session.execute(
        scope_to_district(fee_refunds.totals_query(**filters), scoped, user=user)
    ).one()
    rows = db.session.execute(
        statement.order_by(*fee_refunds.REFUND_ORDER).limit(query["limit"]).offset(query["offset"])
    ).all()
    return {
        "items": [
            {
                "id": refund.id,
                "assessment_id": case.id,
                "resident_name": resident.name,
                "masked_id_number": resident.masked_id_number,
                "district": district_row.code,
                "level": case.level,
                "fee_fen": case.fee_fen,
                "amount_fen": refund.amount_fen,
                "owed_on": refund.owed_on,
                "status": refund.status,
                "payee_account_given": refund.payee_account_number is not None,
                "payee_account_last4": (refund.payee_account_number or "")[-4:] or None,
            }
            for refund, resident, district_row, case in rows
        ],
        "total": total,
        "total_amount_fen": amount,
        "limit": query["limit"],
        "offset": query["offset"],
    }


# --- reviewing many recorded results ----------------------------------------------------

_CHECKS_EXAMPLE = [
    {"code": code, "passed": True, "message": None}
    for code in ("signers", "signature", "scores", "conflict", "in_date")
]


@blp.get("/assessment-reviews")
@token_required("read")
@blp.doc(security=BEARER)
@blp.arguments(AssessmentReviewQuerySchema, location="query")
@blp.response(
    200,
    AssessmentReviewPageSchema,
    example={
        "items": [
            {
                "id": 41,
                "type": "first",
                "status": "recorded",
                "external_ref": "KP-2025-0117",
                "applied_at": "2025-03-04T00:00:00+08:00",
                "assigned_at": "2025-03-04T09:12:00+08:00",
                "scheduled_for": "2025-03-04T00:00:00+08:00",
                "assessed_on": "2025-03-04",
                "total": 50,
                "level": "moderate",
                "resident": {
                    "name": "王秀英",
                    "masked_id_number": "2101**********0021",
                    "sex": "female",
                    "birth_date": "1944-03-12",
                    "district": "210102",
                    "street": "南湖街道",
                    "address": "三好街 12 号",
                    "phone": None,
                },
                "agency_licence": "LN-PG-2025-001",
                "recorder_certificate": "C-001",
                "cosigner_certificate": "C-002",
                "checks": _CHECKS_EXAMPLE,
                "passes": True,
            }
        ],
        "total": 1,
        "limit": 50,
        "offset": 0,
    },
)
@error_responses(blp, 401, 403, 422)
def list_reviews(query):
    """Recorded results waiting for the bureau, each with its checks (two different
    certified signers, the signed content, scores against total and level, conflict of
    interest, not yet expired); oldest first, district-scoped."""
    from assessment.api import _summary

    user = _require_role("bureau_approver")
    statement = (
        sa.select(Assessment)
        .join(Resident, Resident.id == Assessment.resident_id)
        .where(Assessment.status == "recorded")
    )
    if query.get("agency_licence"):
        statement = statement.join(Agency, Agency.id == Assessment.agency_id).where(
            Agency.licence_number == query["agency_licence"].strip()
        )
    statement = scope_to_district(statement, Resident.district_id, user=user)
    page = page_of(statement, (Assessment.recorded_at, Assessment.id), query)
    today = local_today()
    items = []
    for case in page["items"]:
        checks = review.checks(case, today=today)
        items.append(
            _summary(case)
            | {
                "agency_licence": case.agency.licence_number,
                "recorder_certificate": case.assessor1.certificate_number
                if case.assessor1
                else None,
                "cosigner_certificate": case.assessor2.certificate_number
                if case.assessor2
                else None,
                "checks": [
                    {"code": c.code, "passed": c.passed, "message": c.message} for c in checks
                ],
                "passes": all(c.passed for c in checks),
            }
        )
    return page | {"items": items}


@blp.post("/assessment-reviews")
@token_required(WRITE)
@blp.doc(security=BEARER)
@blp.arguments(
    AssessmentDecisionSchema, example={"assessment_ids": [41, 42, 43], "decision": "approve"}
)
@blp.response(
    200,
    AssessmentDecisionAnswerSchema,
    example={
        "outcomes": [
            {"assessment_id": 41, "outcome": "approved", "code": None, "message": None},
            {
                "assessment_id": 42,
                "outcome": "refused",
                "code": "conflict",
                "message": "This agency served the elder in the last 12 months and may not "
                "assess them.",
            },
            {
                "assessment_id": 43,
                "outcome": "refused",
                "code": "invalid_transition",
                "message": "The assessment is not in a state that allows this step.",
            },
        ]
    },
)
@error_responses(blp, 401, 403, 422)
def decide_reviews(body):
    """One decision (approve, or return with a reason) for many recorded results. Each
    case is decided and audited on its own: a case failing a check is refused with the
    reason and the others go ahead. Two approvers deciding the same cases at once decide
    each case once; the later one is told the case is no longer waiting."""
    user = _require_role("bureau_approver")
    outcomes = review.decide_many(
        body["assessment_ids"],
        body["decision"],
        reviewer=user,
        reason=body["reason"],
        today=local_today(),
    )
    return {
        "outcomes": [
            {"assessment_id": o.assessment_id, "outcome": o.outcome, "code": o.code,
             "message": o.message}
            for o in outcomes
        ]
    }  # fmt: skip
