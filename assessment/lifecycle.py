"""An assessment from application to approval.

    applied -> assigned -> scheduled -> recorded -> approved
                                          |   ^
                                          v   |  (agency corrects and records again)
                                        returned
    applied / assigned / scheduled -> cancelled

Each step checks who may take it, changes nothing if a check fails, and writes an audit row.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, datetime, timedelta

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from assessment import events, fee_refunds, review
from assessment.conflicts import check_conflict_of_interest
from assessment.errors import AgencyNotActive, AssessorNotQualified, InvalidTransition
from assessment.models import ASSESSMENT_TYPES, Agency, Assessment, Assessor
from assessment.policy import add_months, rules_for_assessment
from assessment.scoring import score_assessment
from eldercare import audit
from eldercare.accounts import User
from eldercare.db import db
from eldercare.errors import Conflict, InvalidInput, PermissionDenied
from eldercare.residents import Resident
from eldercare.timeutil import local_today, now_utc, to_local

OPEN_STATUSES = ("applied", "assigned", "scheduled", "recorded", "returned")
MAX_FEE_FEN = 100_000  # 1,000 yuan: far above any real fee, catches a yuan/fen mix-up


def _require(assessment: Assessment, *statuses: str) -> None:
    if assessment.status not in statuses:
        raise InvalidTransition(details={"status": assessment.status, "allowed": list(statuses)})


def _audit(action: str, assessment: Assessment, before: str | None, **after) -> None:
    audit.record(
        action,
        assessment,
        district_id=assessment.resident.district_id,
        before={"status": before} if before else None,
        after={"status": assessment.status, **after},
    )


def latest_approved(resident_id: int, on: date | None = None) -> Assessment | None:
    """The most recent approved assessment in effect by ``on`` (valid or not)."""
    statement = sa.select(Assessment).where(
        Assessment.resident_id == resident_id, Assessment.status == "approved"
    )
    if on is not None:
        statement = statement.where(Assessment.effective_from <= on)
    return db.session.scalar(
        statement.order_by(Assessment.assessed_on.desc(), Assessment.id.desc()).limit(1)
    )


def apply(
    resident: Resident,
    *,
    type: str,
    applied_by: User | None,
    via: str,
    note: str | None = None,
    disputed: Assessment | None = None,
    today: date | None = None,
    applied_at: datetime | None = None,
) -> Assessment:
    """Open a case. ``applied_at`` is for results that reach the platform after the visit
    (an agency's spreadsheet): the case is dated when it really began, not when typed in."""
    today = today or local_today()
    if type not in ASSESSMENT_TYPES:
        raise InvalidInput(details={"type": _l("Choose the kind of assessment.")})
    if resident.date_of_death is not None:
        raise InvalidInput(_l("The register records this person as deceased."))
    if resident.moved_out_on is not None and resident.moved_out_on <= today:
        raise InvalidInput(_l("The register records that this person no longer lives here."))
    if type == "reassessment":
        if disputed is None or disputed.resident_id != resident.id or disputed.status != "approved":
            raise InvalidInput(
                _l("A re-assessment must name the approved result the elder disputes."),
                details={"disputed_assessment_id": _l("required")},
            )
    elif disputed is not None:
        raise InvalidInput(details={"disputed_assessment_id": _l("only for a re-assessment")})
    open_case = db.session.scalar(
        sa.select(Assessment.id).where(
            Assessment.resident_id == resident.id, Assessment.status.in_(OPEN_STATUSES)
        )
    )
    if open_case is not None:
        raise Conflict(
            _l("An assessment for this person is already in progress."),
            details={"assessment_id": open_case},
        )
    if type in ("first", "routine"):
        current = latest_approved(resident.id, today)
        reminder = timedelta(days=rules_for_assessment(today).expiry_reminder_days)
        if current is not None and current.valid_until - reminder >= today:
            raise Conflict(
                _l(
                    "A valid assessment exists until %(day)s; it need not be repeated.",
                    day=current.valid_until.isoformat(),
                ),
                details={"assessment_id": current.id},
            )
    assessment = Assessment(
        resident_id=resident.id,
        resident=resident,
        type=type,
        status="applied",
        applied_by_user_id=applied_by.id if applied_by else None,
        applied_via=via,
        application_note=(note or "").strip() or None,
        disputed_assessment_id=disputed.id if disputed else None,
        created_at=applied_at or now_utc(),
    )
    db.session.add(assessment)
    _audit("assessment.apply", assessment, None, type=type, via=via)
    return assessment


def assign(assessment: Assessment, agency: Agency, *, today: date | None = None) -> None:
    today = today or local_today()
    _require(assessment, "applied", "assigned")
    if not agency.is_active_on(today):
        raise AgencyNotActive()
    if assessment.disputed_assessment_id is not None:
        disputed = db.session.get(Assessment, assessment.disputed_assessment_id)
        if disputed.agency_id == agency.id:
            raise InvalidInput(
                _l("A re-assessment on dispute must go to a different agency."),
                details={"agency_id": agency.id},
            )
    check_conflict_of_interest(agency, assessment.resident_id, today)
    before = assessment.status
    assessment.agency_id, assessment.agency = agency.id, agency
    assessment.status, assessment.assigned_at = "assigned", now_utc()
    _audit("assessment.assign", assessment, before, agency=agency.licence_number)


def _agency_member(assessment: Assessment, user: User) -> bool:
    from assessment.models import AgencyAdmin

    assessor = db.session.scalar(sa.select(Assessor).where(Assessor.user_id == user.id))
    if assessor is not None and assessor.agency_id == assessment.agency_id:
        return True
    admin = db.session.get(AgencyAdmin, user.id)
    return admin is not None and admin.agency_id == assessment.agency_id


def schedule(
    assessment: Assessment, when: datetime, *, actor: User, today: date | None = None
) -> None:
    today = today or local_today()
    _require(assessment, "assigned", "scheduled")
    if not _agency_member(assessment, actor):
        raise PermissionDenied(_l("Only the assigned agency can schedule this visit."))
    if when.tzinfo is None:
        raise InvalidInput(details={"scheduled_for": _l("a time zone is required")})
    if to_local(when).date() < today:
        raise InvalidInput(details={"scheduled_for": _l("The visit cannot be in the past.")})
    before = assessment.status
    assessment.status, assessment.scheduled_for = "scheduled", when
    _audit("assessment.schedule", assessment, before, scheduled_for=when.isoformat())


def _check_assessor(assessor: Assessor, assessment: Assessment, day: date, field: str) -> None:
    if assessor.agency_id != assessment.agency_id:
        raise AssessorNotQualified(
            _l("The assessor does not belong to the assigned agency."),
            details={field: assessor.name},
        )
    if not assessor.qualified_on(day):
        raise AssessorNotQualified(
            _l(
                "The assessor's GB/T 42195 certificate is not valid on %(day)s.",
                day=day.isoformat(),
            ),
            details={
                field: assessor.name,
                "certificate_valid_until": assessor.certificate_valid_until.isoformat(),
            },
        )


def signed_content_digest(assessment: Assessment) -> str:
    content = {
        "assessment": assessment.id,
        "resident": assessment.resident_id,
        "assessed_on": assessment.assessed_on.isoformat(),
        "items": assessment.item_scores,
        "coma": assessment.coma,
        "diagnoses": assessment.diagnoses or "",
        "care_risk_events_30d": assessment.care_risk_events_30d,
        "assessors": [assessment.assessor1_id, assessment.assessor2_id],
    }
    return hashlib.sha256(
        json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def visit_problems(
    assessment: Assessment, *, assessed_on: date | None, fee_fen, today: date | None = None
) -> dict[str, str]:
    """The visit date and fee problems record() refuses, as field -> message, checked without
    either assessor: the tablet form lists them with every other error before it spends a
    co-signer sign-in guess. record() still checks them itself and has the last word."""
    today = today or local_today()
    problems: dict[str, str] = {}
    if assessed_on is not None:
        if assessed_on > today:
            problems["assessed_on"] = str(_l("The assessment date cannot be in the future."))
        elif assessed_on < to_local(assessment.created_at).date():
            problems["assessed_on"] = str(_l("The assessment date is before the application."))
    if fee_fen is not None and (
        isinstance(fee_fen, bool) or not isinstance(fee_fen, int) or not 0 <= fee_fen <= MAX_FEE_FEN
    ):
        problems["fee_fen"] = str(_l("The fee must be between 0 and 1,000 yuan."))
    return problems


def record(
    assessment: Assessment,
    *,
    items: dict,
    assessed_on: date,
    recorder: Assessor,
    cosigner: Assessor,
    coma: bool = False,
    diagnoses=(),
    care_risk_events_30d: int = 0,
    fee_fen: int = 0,
    today: date | None = None,
) -> None:
    """Both assessors sign; scores are validated before anything changes."""
    today = today or local_today()
    _require(assessment, "scheduled", "returned")
    if recorder.id == cosigner.id:
        raise InvalidInput(
            _l("Two different assessors must sign the assessment."),
            details={"cosigner": _l("must be a second assessor")},
        )
    agency = assessment.agency
    if agency is None or not agency.is_active_on(today):
        raise AgencyNotActive()
    if assessed_on > today:
        raise InvalidInput(
            details={"assessed_on": _l("The assessment date cannot be in the future.")}
        )
    if assessed_on < to_local(assessment.created_at).date():
        raise InvalidInput(
            details={"assessed_on": _l("The assessment date is before the application.")}
        )
    for assessor, field in ((recorder, "recorder"), (cosigner, "cosigner")):
        _check_assessor(assessor, assessment, assessed_on, field)
        _check_assessor(assessor, assessment, today, field)
    if isinstance(fee_fen, bool) or not isinstance(fee_fen, int) or not 0 <= fee_fen <= MAX_FEE_FEN:
        raise InvalidInput(details={"fee_fen": _l("The fee must be between 0 and 1,000 yuan.")})
    check_conflict_of_interest(agency, assessment.resident_id, assessed_on)
    result = score_assessment(
        items, coma=coma, diagnoses=diagnoses, care_risk_events_30d=care_risk_events_30d
    )

    policy = rules_for_assessment(assessed_on)
    before = assessment.status
    now = now_utc()
    assessment.assessed_on, assessment.recorded_at = assessed_on, now
    assessment.item_scores_json = json.dumps(
        {code: int(items[code]) for code in sorted(items)}, separators=(",", ":")
    )
    assessment.dimension_scores_json = json.dumps(result.dimensions, separators=(",", ":"))
    assessment.total, assessment.base_level, assessment.level = (
        result.total,
        result.base_level,
        result.level,
    )
    assessment.adjustments = " ".join(result.reasons) or None
    assessment.coma = bool(coma)
    assessment.diagnoses = " ".join(sorted({d.strip().upper() for d in diagnoses})) or None
    assessment.care_risk_events_30d = care_risk_events_30d
    assessment.assessor1_id, assessment.assessor2_id = recorder.id, cosigner.id
    assessment.assessor1_signed_at = assessment.assessor2_signed_at = now
    assessment.fee_fen = fee_fen
    # The fee is refunded from the pool only for a result of moderate or worse (policy).
    refundable = result.level in policy.eligible_level_set
    assessment.refundable_fee_fen = min(fee_fen, policy.fee_refund_cap_fen) if refundable else 0
    assessment.status = "recorded"
    db.session.flush()
    assessment.signed_content_sha256 = signed_content_digest(assessment)
    _audit(
        "assessment.record",
        assessment,
        before,
        total=result.total,
        level=result.level,
        adjustments=list(result.reasons),
        assessors=[recorder.certificate_number, cosigner.certificate_number],
    )


def _check_reviewer(assessment: Assessment, reviewer: User) -> None:
    if not reviewer.has_role("bureau_approver"):
        raise PermissionDenied()
    if reviewer.district_id is not None and reviewer.district_id != assessment.resident.district_id:
        raise PermissionDenied(_l("This case belongs to another district."))


def valid_until_for(assessment: Assessment) -> date:
    """The last day a recorded result counts: its validity from the visit."""
    validity = rules_for_assessment(assessment.assessed_on).assessment_validity_months
    return add_months(assessment.assessed_on, validity) - timedelta(days=1)


def _lock(assessment: Assessment) -> None:
    """Wait for anyone deciding the same case, then see its state as they left it: two
    approvers clicking at once approve it once (PostgreSQL; SQLite writes one at a time)."""
    db.session.scalar(
        sa.select(Assessment)
        .where(Assessment.id == assessment.id)
        .with_for_update(of=Assessment)
        .execution_options(populate_existing=True)
    )


def approve(assessment: Assessment, *, reviewer: User, today: date | None = None) -> None:
    today = today or local_today()
    _lock(assessment)
    _require(assessment, "recorded")
    _check_reviewer(assessment, reviewer)
    # The same checks the bureau reads on the bulk list; the first failing one refuses.
    for check in review.checks(assessment, today=today):
        if not check.passed:
            check.error.details = {**(check.error.details or {}), "check": check.code}
            raise check.error
    valid_until = valid_until_for(assessment)
    before = assessment.status
    assessment.status = "approved"
    assessment.reviewed_by_user_id, assessment.reviewed_at = reviewer.id, now_utc()
    assessment.effective_from, assessment.valid_until = today, valid_until
    _audit(
        "assessment.approve",
        assessment,
        before,
        level=assessment.level,
        valid_until=valid_until.isoformat(),
        fee_refund_fen=assessment.refundable_fee_fen,
    )
    fee_refunds.owe_for(assessment, on=today)
    events.emit(assessment.resident_id, "assessment_approved", today, assessment_id=assessment.id)


def return_for_correction(assessment: Assessment, *, reviewer: User, reason: str) -> None:
    _lock(assessment)
    _require(assessment, "recorded")
    _check_reviewer(assessment, reviewer)
    if not reason or not reason.strip():
        raise InvalidInput(details={"reason": _l("Say what the agency must correct.")})
    before = assessment.status
    assessment.status = "returned"
    assessment.reviewed_by_user_id, assessment.reviewed_at = reviewer.id, now_utc()
    assessment.review_note = reason.strip()
    _audit("assessment.return", assessment, before, reason=assessment.review_note)


def cancel(assessment: Assessment, *, actor: User, reason: str) -> None:
    _require(assessment, "applied", "assigned", "scheduled")
    if not reason or not reason.strip():
        raise InvalidInput(details={"reason": _l("Give the reason for cancelling.")})
    before = assessment.status
    assessment.status, assessment.review_note = "cancelled", reason.strip()
    _audit("assessment.cancel", assessment, before, reason=assessment.review_note)
