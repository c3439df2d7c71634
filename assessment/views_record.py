"""The assessors' tablet form: recording a visit's item scores, signed by two assessors.

The page shows every item of GB/T 42195-2022 with what each score means, and a running total
as a guide; on submit the service scores again and has the last word.
"""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from assessment import lifecycle
from assessment.agencies import assessor_for_user
from assessment.errors import InvalidTransition
from assessment.forms import ADJUSTMENT_LABELS, split_codes
from assessment.instrument import instrument
from assessment.models import Assessment, Assessor
from assessment.score_meanings import meanings_for
from assessment.scoring import CARE_RISK_THRESHOLD, input_problems
from assessment.views import bp, label_of, level_label, other_label_of, problem_from
from assessment.views_agency import RECORDABLE, agency_case
from eldercare.auth import LoginFailed, authenticate, roles_required
from eldercare.db import db
from eldercare.errors import DomainError, PermissionDenied
from eldercare.forms import (
    FormErrors,
    input_problem,
    parse_date,
    parse_yuan,
    whole_number_or_raw,
    yuan,
)
from eldercare.i18n import current_locale
from eldercare.timeutil import local_today

MESSAGE_FIELDS_OF_RECORD = ("diagnoses", "care_risk_events_30d", "cosigner")
NOTHING_SAVED = _l("Nothing has been saved.")


def _record_values(case: Assessment) -> dict:
    """What the tablet form starts with: a returned case keeps what was recorded before."""
    values = {
        "assessed_on": local_today().isoformat(),
        "fee": "",
        "diagnoses": "",
        "care_risk_events_30d": "0",
        "coma": False,
        "scores": {},
    }
    if case.item_scores:
        values.update(
            scores={code: str(score) for code, score in case.item_scores.items()},
            diagnoses=case.diagnoses or "",
            care_risk_events_30d=str(case.care_risk_events_30d),
            coma=case.coma,
            fee=yuan(case.fee_fen)[1:],
            assessed_on=case.assessed_on.isoformat() if case.assessed_on else "",
        )
    return values


def _posted_values(form) -> dict:
    return {
        "assessed_on": form.get("assessed_on", ""),
        "fee": form.get("fee", ""),
        "diagnoses": form.get("diagnoses", ""),
        "care_risk_events_30d": form.get("care_risk_events_30d", ""),
        "coma": bool(form.get("coma")),
        "cosigner_username": form.get("cosigner_username", ""),
        # the password itself is never sent back; the page says it must be typed again
        "password_not_kept": bool(form.get("cosigner_password")),
        "scores": {code: form.get(f"score-{code}", "") for code in instrument().items},
    }


def _instrument_for_page() -> dict:
    """The level bands and adjustment thresholds the page's live total uses (a guide only:
    the server scores again on submit)."""
    inst = instrument()
    return {
        "items": list(inst.items),
        "dimensions": {d.code: [item.code for item in d.items] for d in inst.dimensions},
        "levels": [
            {
                "code": level.code,
                "rank": level.rank,
                "label": label_of(level),
                "min": level.min_total,
                "max": level.max_total,
            }
            for level in inst.levels
        ],
        "careRiskThreshold": CARE_RISK_THRESHOLD,
        "text": {
            "answered": _("{n} of {total} items scored"),
            "incomplete": _("Score every item to see the level."),
            "adjustments": {code: str(label) for code, label in ADJUSTMENT_LABELS.items()},
            "fromTotal": _("From the total alone: {level}"),
        },
    }


def _render_record(case, recorder, *, status=200, values=None, problem=None):
    locale = current_locale()
    problem = problem or {"message": None, "fields": {}}
    values = values or _record_values(case)
    dimensions = [
        {
            "code": dimension.code,
            "label": label_of(dimension),
            "other": other_label_of(dimension),
            "max": dimension.max,
            "questions": [
                {
                    "code": item.code,
                    "label": label_of(item),
                    "other": other_label_of(item),
                    "min": item.min,
                    "max": item.max,
                    "options": meanings_for(item.code, locale, item.min),
                    "selected": str(values["scores"].get(item.code, "")),
                    "error": problem["fields"].get(item.code),
                }
                for item in dimension.items
            ],
        }
        for dimension in instrument().dimensions
    ]
    item_problems = [
        (item["code"], item["label"], item["error"])
        for dimension in dimensions
        for item in dimension["questions"]
        if item["error"]
    ]
    return render_template(
        "assessment/record.html",
        case=case,
        recorder=recorder,
        agency_active=case.agency is not None and case.agency.is_active_on(local_today()),
        dimensions=dimensions,
        values=values,
        problem=problem,
        item_problems=item_problems,
        page_data=_instrument_for_page(),
        nothing_saved=NOTHING_SAVED,
    ), status


def _cosigner_typed(form, errors: FormErrors) -> tuple[str, str]:
    """The second assessor's name and password as typed; both are needed."""
    username = form.get("cosigner_username", "").strip()
    password = form.get("cosigner_password", "")
    if not username or not password:
        errors.add("cosigner", _l("The second assessor enters their username and password."))
    return username, password


def _cosigner(username: str, password: str, errors: FormErrors) -> tuple[Assessor | None, bool]:
    """The second assessor, and whether their sign-in failed.

    They sign on the same tablet with their own name and password. It counts as a sign-in
    attempt: wrong passwords lock the name out, and the message never says whether the name
    exists. So it is asked last, only for a form that is otherwise valid: a form refused for
    a missing score must not cost the co-signer one of their guesses.
    """
    try:
        cosigning_user = authenticate(username, password)
    except LoginFailed as failure:
        errors.add("cosigner", failure.message)
        return None, True
    cosigner = assessor_for_user(cosigning_user)
    if cosigner is None:
        errors.add("cosigner", _l("This account is not registered as an assessor."))
    return cosigner, False


@bp.route("/cases/<int:case_id>/record", methods=["GET", "POST"])
@roles_required("assessor")
def record(case_id: int):
    recorder = assessor_for_user(current_user)
    if recorder is None:
        raise PermissionDenied(_l("Your account is not registered as an assessor."))
    case = agency_case(case_id, recorder.agency_id)
    if request.method == "GET":
        if case.status not in RECORDABLE:
            raise InvalidTransition(_l("This case is not waiting for an assessment visit."))
        return _render_record(case, recorder)

    form = request.form
    errors = FormErrors()
    items = {}
    for code in instrument().items:
        raw = form.get(f"score-{code}", "")
        if raw.strip():
            items[code] = whole_number_or_raw(raw)  # missing stays missing: the service says so
    assessed_on = parse_date(form.get("assessed_on"), "assessed_on", errors)
    fee_fen = parse_yuan(form.get("fee"), "fee_fen", errors)
    care_events = whole_number_or_raw(form.get("care_risk_events_30d"))
    diagnoses = split_codes(form.get("diagnoses"))
    # Every problem of the input at once: the unscored items beside the other fields' errors.
    for field, message in lifecycle.visit_problems(
        case, assessed_on=assessed_on, fee_fen=fee_fen
    ).items():
        errors.add(field, message)
    for field, message in input_problems(
        items,
        diagnoses=diagnoses,
        care_risk_events_30d=0 if care_events is None else care_events,
    ).items():
        errors.add(field, message)
    username, password = _cosigner_typed(form, errors)
    cosigner, sign_in_failed = None, False
    if not errors:  # the password is judged last, so a refused form spends no guess
        cosigner, sign_in_failed = _cosigner(username, password, errors)

    values = _posted_values(form)
    if errors:
        if not sign_in_failed:
            db.session.rollback()
        # else: keep the failed attempt's count; nothing else has changed in this request
        return _render_record(
            case, recorder, status=422, values=values, problem=input_problem(errors)
        )
    try:
        lifecycle.record(
            case,
            items=items,
            assessed_on=assessed_on,
            recorder=recorder,
            cosigner=cosigner,
            coma=bool(form.get("coma")),
            diagnoses=diagnoses,
            care_risk_events_30d=0 if care_events is None else care_events,
            fee_fen=fee_fen,
        )
    except DomainError as error:
        db.session.rollback()
        problem = problem_from(
            error,
            fields=set(instrument().items) | {"assessed_on", "fee_fen"},
            message_fields=MESSAGE_FIELDS_OF_RECORD,
        )
        return _render_record(case, recorder, status=422, values=values, problem=problem)
    flash(
        _(
            "The assessment of %(name)s has been recorded: total %(total)s, %(level)s. "
            "It now waits for the bureau's review.",
            name=case.resident.masked_name,
            total=case.total,
            level=level_label(case.level),
        ),
        "success",
    )
    return redirect(url_for(".worklist"))
