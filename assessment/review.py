"""The bureau's review of recorded results: the checks a case must pass before approval, and
one decision for many cases at once (after an agency's spreadsheet import).

``lifecycle.approve`` runs the same checks, so approving one case from its card and approving
a hundred from the bulk list refuse the same things.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from assessment.conflicts import check_conflict_of_interest
from assessment.errors import ConflictOfInterest, InvalidScores
from assessment.models import Assessment
from assessment.scoring import score_assessment
from eldercare.db import db
from eldercare.errors import Conflict, DomainError, InvalidInput

CHECK_LABELS = {
    "signers": _l("Two different assessors of the agency signed, certified that day"),
    "signature": _l("The result is what they signed"),
    "scores": _l("Scores, total and level agree"),
    "conflict": _l("No conflict of interest"),
    "in_date": _l("Not yet expired"),
}
DECISIONS = ("approve", "return")
MAX_CASES_PER_DECISION = 200


@dataclass(frozen=True)
class Check:
    code: str
    error: DomainError | None = None  # None: passed

    @property
    def passed(self) -> bool:
        return self.error is None

    @property
    def label(self) -> str:
        return str(CHECK_LABELS[self.code])

    @property
    def message(self) -> str | None:
        return None if self.error is None else str(self.error.message)


def _signers_error(case: Assessment) -> DomainError | None:
    signers = (case.assessor1, case.assessor2)
    if None in signers or case.assessor1_id == case.assessor2_id:
        return Conflict(_l("Two different assessors must sign the assessment."))
    for assessor in signers:
        if assessor.agency_id != case.agency_id:
            return Conflict(_l("The assessor does not belong to the assigned agency."))
        if assessor.certificate_valid_until < case.assessed_on:
            return Conflict(
                _l(
                    "The assessor's GB/T 42195 certificate is not valid on %(day)s.",
                    day=case.assessed_on.isoformat(),
                )
            )
    return None


def _scores_error(case: Assessment) -> DomainError | None:
    mismatch = Conflict(_l("The stored total or level does not follow from the item scores."))
    try:
        result = score_assessment(
            case.item_scores,
            coma=case.coma,
            diagnoses=case.diagnoses.split() if case.diagnoses else (),
            care_risk_events_30d=case.care_risk_events_30d,
        )
    except InvalidScores:
        return mismatch
    if (result.total, result.base_level, result.level) != (case.total, case.base_level, case.level):
        return mismatch
    return None


def _conflict_error(case: Assessment) -> DomainError | None:
    try:
        check_conflict_of_interest(case.agency, case.resident_id, case.assessed_on)
    except ConflictOfInterest as error:
        return error
    return None


def checks(case: Assessment, *, today: date) -> list[Check]:
    """Every check of a recorded case, in the order the bureau reads them."""
    from assessment.lifecycle import signed_content_digest, valid_until_for

    signature = None
    if case.signed_content_sha256 != signed_content_digest(case):
        signature = Conflict(_l("The recorded result no longer matches what the assessors signed."))
    in_date = None
    if valid_until_for(case) < today:
        in_date = InvalidInput(_l("This assessment has already expired; a new one is needed."))
    return [
        Check("signers", _signers_error(case)),
        Check("signature", signature),
        Check("scores", _scores_error(case)),
        Check("conflict", _conflict_error(case)),
        Check("in_date", in_date),
    ]


# --------------------------------------------------------------------------- bulk decision


@dataclass(frozen=True)
class Outcome:
    assessment_id: int
    outcome: str  # approved, returned, refused
    message: str | None = None  # why it was refused
    code: str | None = None  # the failed check or the error's code


def _validate(case_ids, decision: str, reason: str | None) -> list[int]:
    errors = {}
    ids = case_ids if isinstance(case_ids, list | tuple) else None
    if (
        not ids
        or len(ids) > MAX_CASES_PER_DECISION
        or any(isinstance(i, bool) or not isinstance(i, int) or i <= 0 for i in ids)
    ):
        errors["assessment_ids"] = _l(
            "Select between 1 and %(most)s cases.", most=MAX_CASES_PER_DECISION
        )
    if decision not in DECISIONS:
        errors["decision"] = _l("Choose approve or return.")
    elif decision == "return" and not (reason or "").strip():
        errors["reason"] = _l("Say what the agency must correct.")
    if errors:
        raise InvalidInput(details=errors)
    return sorted(set(ids))


def _lock_in_id_order(ids: list[int]) -> dict[int, Assessment]:
    """Lock every selected case before anything is written, always in id order: two approvers
    deciding overlapping selections queue up on the first shared case instead of each holding
    what the other needs (an audit append's lock included)."""
    found = db.session.scalars(
        sa.select(Assessment)
        .where(Assessment.id.in_(ids))
        .order_by(Assessment.id)
        .with_for_update(of=Assessment)
        .execution_options(populate_existing=True)
    ).unique()
    return {case.id: case for case in found}


def decide_many(
    case_ids, decision: str, *, reviewer, reason: str | None = None, today: date
) -> list[Outcome]:
    """One decision for many recorded cases; each case is decided (or refused, with the
    reason) in a savepoint of its own, so one bad case never undoes the others. Cases of
    another district look missing. The caller's unit of work commits."""
    from assessment import lifecycle

    ids = _validate(case_ids, decision, reason)
    cases = _lock_in_id_order(ids)
    outcomes = []
    for case_id in ids:
        case = cases.get(case_id)
        if case is None or reviewer.district_id not in (None, case.resident.district_id):
            outcomes.append(
                Outcome(case_id, "refused", str(_l("No such case in your district.")), "not_found")
            )
            continue
        try:
            with db.session.begin_nested():
                if decision == "approve":
                    lifecycle.approve(case, reviewer=reviewer, today=today)
                    outcomes.append(Outcome(case_id, "approved"))
                else:
                    lifecycle.return_for_correction(case, reviewer=reviewer, reason=reason)
                    outcomes.append(Outcome(case_id, "returned"))
        except DomainError as error:
            code = (error.details or {}).get("check") or error.code
            outcomes.append(Outcome(case_id, "refused", str(error.message), code))
    return outcomes
