"""/api/v1 endpoints of the assessment domain, for agencies' own software and the city.

An agency's system acts through a token of its agency administrator (or of one of its
assessors) and sees only its agency's cases; another agency's case answers 404, exactly
like a missing one. The city's systems ask about eligibility with a bureau account's token.

Every rule lives in the service modules (``lifecycle``, ``scoring``, ``eligibility``); the
views here find the caller's agency and case, call them, and shape the answer.

Authentication runs before the body is parsed, so a caller without a valid token learns
nothing about the request format from a 422.
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from flask import g
from flask_babel import lazy_gettext as _l
from flask_smorest import Blueprint

from assessment import lifecycle
from assessment.agencies import assessor_for_user
from assessment.eligibility import eligibility_on
from assessment.errors import InvalidScores
from assessment.instrument import instrument
from assessment.models import Agency, AgencyAdmin, Assessment, Assessor
from assessment.schemas import (
    AssessmentCaseSchema,
    AssessmentEligibilityAnswerSchema,
    AssessmentEligibilityCheckSchema,
    AssessmentInstrumentSchema,
    AssessmentListQuerySchema,
    AssessmentPageSchema,
    AssessmentResultSchema,
    AssessmentScheduleSchema,
)
from assessment.scoring import normalize_diagnoses
from eldercare.accounts import BUREAU_ROLES
from eldercare.api import BEARER, error_responses, local_time, page_of, rename_details
from eldercare.auth import ensure_in_district
from eldercare.db import db
from eldercare.errors import Conflict, DomainError, InvalidInput, NotFound, PermissionDenied
from eldercare.register import resident_id_error
from eldercare.residents import Resident
from eldercare.timeutil import local_today
from eldercare.tokens import token_required

blp = Blueprint(
    "assessment_api", __name__, url_prefix="/api/v1", description="Assessments and eligibility"
)

# A retry may arrive after the bureau has already approved what the first attempt recorded.
_RECORDED_STATUSES = ("recorded", "approved")
# lifecycle.record names the signers "recorder" / "cosigner"; the API's fields carry the
# certificate numbers.
_SIGNER_FIELDS = {"recorder": "recorder_certificate", "cosigner": "cosigner_certificate"}


# --- who is asking ----------------------------------------------------------------------


def _caller_agency() -> Agency:
    """The agency the token's account works for: as its administrator, or as an assessor."""
    user = g.api_user
    if user.has_role("agency_admin"):
        link = db.session.get(AgencyAdmin, user.id)
        if link is not None:
            return db.session.get(Agency, link.agency_id)
    if user.has_role("assessor"):
        assessor = assessor_for_user(user)
        if assessor is not None and assessor.active:
            return assessor.agency
    raise PermissionDenied(_l("The token's account does not belong to an assessment agency."))


def _own_case(agency: Agency, assessment_id: int, *, for_update: bool = False) -> Assessment:
    statement = sa.select(Assessment).where(
        Assessment.id == assessment_id, Assessment.agency_id == agency.id
    )
    if for_update:
        # Two deliveries of the same submission queue up here; the second then finds the
        # case recorded and answers as a retry instead of recording twice.
        statement = statement.with_for_update(of=Assessment).execution_options(
            populate_existing=True
        )
    case = db.session.scalar(statement)
    if case is None:
        raise NotFound()  # another agency's case looks exactly like a missing one
    return case


def _agency_assessors(agency: Agency, body: dict) -> tuple[Assessor, Assessor]:
    found, problems = [], {}
    for field in ("recorder_certificate", "cosigner_certificate"):
        assessor = db.session.scalar(
            sa.select(Assessor).where(
                Assessor.certificate_number == body[field].strip(),
                Assessor.agency_id == agency.id,
            )
        )
        if assessor is None:
            # The same answer whether the certificate is unknown or another agency's.
            problems[field] = _l("No assessor of your agency holds this certificate number.")
        found.append(assessor)
    if problems:
        raise InvalidInput(details=problems)
    return found[0], found[1]


# --- shaping answers --------------------------------------------------------------------


def _summary(case: Assessment) -> dict:
    resident = case.resident
    return {
        "id": case.id,
        "type": case.type,
        "status": case.status,
        "external_ref": case.external_ref,
        "applied_at": local_time(case.created_at),
        "assigned_at": local_time(case.assigned_at),
        "scheduled_for": local_time(case.scheduled_for),
        "assessed_on": case.assessed_on,
        "total": case.total,
        "level": case.level,
        "resident": {
            "name": resident.name,
            "masked_id_number": resident.masked_id_number,
            "sex": resident.sex,
            "birth_date": resident.birth_date,
            "district": resident.district.code,
            "street": resident.street,
            "address": resident.address,
            # The agency needs the phone to arrange the visit while the case is open; after
            # that it keeps only what tells the elder apart.
            "phone": (
                resident.phone if case.status in lifecycle.OPEN_STATUSES else resident.masked_phone
            ),
        },
    }


def _case(case: Assessment) -> dict:
    recorded = case.item_scores_json is not None
    return _summary(case) | {
        "recorded_at": local_time(case.recorded_at),
        "items": case.item_scores if recorded else None,
        "dimensions": case.dimension_scores if recorded else None,
        "base_level": case.base_level,
        "adjustments": case.adjustment_codes,
        "coma": case.coma,
        "diagnoses": case.diagnoses.split() if case.diagnoses else [],
        "care_risk_events_30d": case.care_risk_events_30d,
        "recorder_certificate": case.assessor1.certificate_number if case.assessor1 else None,
        "cosigner_certificate": case.assessor2.certificate_number if case.assessor2 else None,
        "fee_fen": case.fee_fen,
        "refundable_fee_fen": case.refundable_fee_fen,
        "review_note": case.review_note,
        "reviewed_at": local_time(case.reviewed_at),
        "effective_from": case.effective_from,
        "valid_until": case.valid_until,
    }


def _canonical(value) -> str:
    # JSON keeps 3, "3", 3.0 and true apart, where Python's == would call 1 and True equal.
    return json.dumps(value, sort_keys=True)


def _is_retry(case: Assessment, body: dict, recorder: Assessor, cosigner: Assessor) -> bool:
    """Whether ``body`` is what this case already holds: the same submission delivered again."""
    if case.status not in _RECORDED_STATUSES:
        return False
    try:
        diagnoses = " ".join(normalize_diagnoses(body["diagnoses"])) or None
    except InvalidScores:
        return False
    return (
        case.assessed_on == body["assessed_on"]
        and _canonical(case.item_scores) == _canonical(body["items"])
        and case.coma is body["coma"]
        and case.diagnoses == diagnoses
        and case.care_risk_events_30d == body["care_risk_events_30d"]
        and (case.assessor1_id, case.assessor2_id) == (recorder.id, cosigner.id)
        and case.fee_fen == body["fee_fen"]
        and body["external_ref"] in (None, case.external_ref)
    )


def _set_external_ref(case: Assessment, agency: Agency, ref: str | None) -> None:
    if ref is None or ref == case.external_ref:
        return
    if case.external_ref is not None:
        raise Conflict(
            _l("This case already carries a different external reference."),
            details={"external_ref": case.external_ref},
        )
    other = db.session.scalar(
        sa.select(Assessment.id).where(
            Assessment.agency_id == agency.id, Assessment.external_ref == ref
        )
    )
    if other is not None:
        raise Conflict(
            _l("Another case of your agency already has this external reference."),
            details={"external_ref": ref, "assessment_id": other},
        )
    case.external_ref = ref


# --- endpoints --------------------------------------------------------------------------


@blp.get("/instrument")
@blp.doc(security=BEARER)
@blp.response(200, AssessmentInstrumentSchema)
@error_responses(blp, 401, 403)
@token_required("read")
def get_instrument():
    """The GB/T 42195-2022 instrument: items with their score ranges, dimensions, levels."""
    inst = instrument()
    return {
        "max_total": inst.max_total,
        "items": [
            {"code": i.code, "dimension": i.dimension, "zh": i.zh, "en": i.en,
             "min": i.min, "max": i.max}
            for i in inst.items.values()
        ],
        "dimensions": [
            {"code": d.code, "zh": d.zh, "en": d.en, "max": d.max,
             "items": [i.code for i in d.items]}
            for d in inst.dimensions
        ],
        "levels": [
            {"code": lv.code, "rank": lv.rank, "zh": lv.zh, "en": lv.en,
             "min_total": lv.min_total, "max_total": lv.max_total}
            for lv in inst.levels
        ],
    }  # fmt: skip


@blp.get("/assessments")
@token_required("assessments:write", "read", any_of=True)
@blp.doc(security=BEARER)
@blp.arguments(AssessmentListQuerySchema, location="query")
@blp.response(200, AssessmentPageSchema)
@error_responses(blp, 401, 403, 422)
def list_assessments(query):
    """The cases assigned to the caller's agency, oldest first; filter by ``status``."""
    agency = _caller_agency()
    statement = sa.select(Assessment).where(Assessment.agency_id == agency.id)
    if "status" in query:
        statement = statement.where(Assessment.status == query["status"])
    page = page_of(statement, (Assessment.id,), query)
    return page | {"items": [_summary(case) for case in page["items"]]}


@blp.get("/assessments/<int:assessment_id>")
@token_required("assessments:write", "read", any_of=True)
@blp.doc(security=BEARER)
@blp.response(200, AssessmentCaseSchema)
@error_responses(blp, 401, 403, 404)
def get_assessment(assessment_id):
    """One case of the caller's agency, with its result once recorded."""
    return _case(_own_case(_caller_agency(), assessment_id))


@blp.post("/assessments/<int:assessment_id>/schedule")
@token_required("assessments:write")
@blp.doc(security=BEARER)
@blp.arguments(AssessmentScheduleSchema)
@blp.response(200, AssessmentCaseSchema)
@error_responses(blp, 401, 403, 404, 409, 422)
def schedule_assessment(body, assessment_id):
    """Set (or move) the date and time of the home visit: today or later (a 422 naming
    ``scheduled_for`` otherwise)."""
    case = _own_case(_caller_agency(), assessment_id, for_update=True)
    lifecycle.schedule(case, body["scheduled_for"], actor=g.api_user)
    return _case(case)


@blp.post("/assessments/<int:assessment_id>/result")
@token_required("assessments:write")
@blp.doc(security=BEARER)
@blp.arguments(AssessmentResultSchema)
@blp.response(200, AssessmentCaseSchema)
@error_responses(blp, 401, 403, 404, 409, 422)
def record_result(body, assessment_id):
    """Record the result, signed by two assessors of the agency (named by certificate; a
    certificate no assessor of the agency holds is a 422 naming it).

    The agency's system attests both signatures. Sending the same result again answers as
    the first time and changes nothing; a different result for a recorded case is a 409.
    """
    agency = _caller_agency()
    case = _own_case(agency, assessment_id, for_update=True)
    recorder, cosigner = _agency_assessors(agency, body)
    if _is_retry(case, body, recorder, cosigner):
        return _case(case)
    try:
        lifecycle.record(
            case,
            items=body["items"],
            assessed_on=body["assessed_on"],
            recorder=recorder,
            cosigner=cosigner,
            coma=body["coma"],
            diagnoses=body["diagnoses"],
            care_risk_events_30d=body["care_risk_events_30d"],
            fee_fen=body["fee_fen"],
        )
    except DomainError as error:
        rename_details(error, _SIGNER_FIELDS)
        raise
    _set_external_ref(case, agency, body["external_ref"])
    return _case(case)


@blp.post("/eligibility-checks")
@token_required("read", lookup=True)
@blp.doc(security=BEARER)
@blp.arguments(AssessmentEligibilityCheckSchema)
@blp.response(200, AssessmentEligibilityAnswerSchema)
@error_responses(blp, 401, 403, 404, 422)
def check_eligibility(query):
    """Whether the holder of a resident ID number may receive vouchers on a day, and why not.

    For bureau accounts (and administrators). District staff ask only about residents of
    their district; any other number answers 404, as a missing record would.
    """
    user = g.api_user
    if not user.has_role(*BUREAU_ROLES, "admin"):
        raise PermissionDenied(_l("Only bureau accounts may ask about eligibility."))
    id_number = query["id_number"]
    problem = resident_id_error(id_number)
    if problem:
        raise InvalidInput(details={"id_number": problem})
    number = id_number.strip().upper()
    resident = db.session.scalar(sa.select(Resident).where(Resident.id_number_is(number)))
    if user.district_id is not None:
        if resident is None:
            raise NotFound()
        ensure_in_district(resident.district_id, user=user)
    answer = eligibility_on(
        resident if resident is not None else number, query.get("on") or local_today()
    )
    return {
        "on": answer.on,
        "eligible": answer.eligible,
        "level": answer.level,
        "reasons": [{"code": r.code, "message": r.message} for r in answer.reasons],
        "holds_until": answer.holds_until,
        "assessment_id": answer.assessment_id,
    }
