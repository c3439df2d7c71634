"""One data row at a time: a resident registered, or an assessment applied for, assigned,
scheduled and recorded, through the same services as the forms.

A row object is called with the row's number and its cells' text by column code, and answers
with an ``Outcome``: "created", "unchanged", or the problems by column code.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import date, datetime, time

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from assessment import lifecycle
from assessment.errors import AgencyNotActive, ConflictOfInterest, InvalidScores
from assessment.import_values import (
    RESIDENT_COLUMNS,
    Invalid,
    assessment_columns,
    code_text,
    name_key,
    parse_bool,
    parse_care_risk_events,
    parse_coordinate,
    parse_date,
    parse_fee_fen,
    parse_score,
    parse_type,
    scientific_id_problem,
)
from assessment.instrument import instrument
from assessment.models import Agency, Assessment, Assessor
from assessment.scoring import normalize_diagnoses, validate_items
from eldercare.accounts import User
from eldercare.db import db
from eldercare.errors import Conflict, DomainError, NotFound
from eldercare.register import register_resident, resident_id_error
from eldercare.residents import District, Resident
from eldercare.timeutil import SHANGHAI

Outcome = str | dict[str, str]  # "created", "unchanged", or column code -> reason
Readers = dict[str, Callable[[str], object]]  # column code -> parser of its cell
NOT_REGISTERED = _l("No resident with this ID number is registered.")
ALREADY_IMPORTED = _l("The agency already has a case with this number, with different details.")


class _Discard(Exception):
    """Raised inside a row's savepoint to undo a row that saved but has other problems."""


def _read_cells(v: dict[str, str], readers: Readers, problems: dict[str, str]) -> dict:
    """Each column's value by its reader; a cell that cannot be read becomes a problem."""
    values = {}
    for code, reader in readers.items():
        try:
            values[code] = reader(v.get(code, ""))
        except Invalid as bad:
            problems[code] = str(bad.reason)
    return values


def _registered(id_number: str) -> Resident | None:
    return db.session.scalar(sa.select(Resident).where(Resident.id_number_is(id_number)))


# --- residents --------------------------------------------------------------------------


class ResidentRows:
    columns = RESIDENT_COLUMNS

    def __init__(self, *, district_id: int | None, **_context):
        self.district_id = district_id  # district staff register only their own district
        self.districts: dict[str, District] = {}
        for district in db.session.scalars(sa.select(District)):
            for name in (district.code, district.name_zh, district.name_en):
                self.districts[name_key(name)] = district
            self.districts.setdefault(name_key(district.name_zh.rstrip("区县市")), district)
            self.districts.setdefault(
                name_key(re.sub(r"(?i)\s*district$", "", district.name_en)), district
            )
        self.seen: dict[str, int] = {}

    def _parse(self, v: dict[str, str], problems: dict[str, str]) -> dict:
        district = self.districts.get(name_key(v["district"])) if v["district"] else None
        if v["district"] and district is None:
            problems["district"] = str(
                _l("Unknown district; give its code such as 210102 or its name.")
            )
        elif district is not None and self.district_id not in (None, district.id):
            problems["district"] = str(_l("You may import residents of your own district only."))
            district = None
        readers = dict.fromkeys(("latitude", "longitude"), parse_coordinate)
        coordinates = _read_cells(v, readers, problems)
        if len(coordinates) < 2:  # one unreadable: do not let the other look like "only one"
            coordinates = {"latitude": None, "longitude": None}
        if problem := scientific_id_problem(v["id_number"]):
            problems["id_number"] = problem
        return {
            "id_number": code_text(v["id_number"]).upper(),
            "name": v["name"].strip(),
            "district": district,
            "street": v["street"].strip(),
            "address": v["address"].strip(),
            "phone": code_text(v.get("phone", "")) or None,
            **coordinates,
        }

    def __call__(self, number: int, v: dict[str, str]) -> Outcome:
        problems: dict[str, str] = {}
        fields = self._parse(v, problems)
        try:
            with db.session.begin_nested():
                register_resident(**fields)  # validates every field, then refuses a duplicate
                if problems:
                    raise _Discard()
        except _Discard:
            return problems
        except Conflict:  # a valid row whose ID number is registered already
            return problems or self._existing(number, fields)
        except DomainError as error:
            return {**error_problems(error, "id_number"), **problems}
        self.seen[fields["id_number"]] = number
        return "created"

    def _existing(self, number: int, fields: dict) -> Outcome:
        first = self.seen.setdefault(fields["id_number"], number)
        if first != number:
            return {"id_number": str(_l("The same ID number is in row %(row)s.", row=first))}
        if _same_resident(_registered(fields["id_number"]), fields):
            return "unchanged"
        return {"id_number": str(_l("Already registered with different details."))}


def _same_resident(resident: Resident, fields: dict) -> bool:
    compared = ("name", "street", "address", "phone", "latitude", "longitude")
    return resident.district_id == fields["district"].id and all(
        getattr(resident, name) == fields[name] for name in compared
    )


# --- assessments ------------------------------------------------------------------------

_ASSESSMENT_READERS: Readers = {
    "type": parse_type,
    "assessed_on": parse_date,
    "coma": parse_bool,
    "care_risk_events_30d": parse_care_risk_events,
    "fee_yuan": parse_fee_fen,
}


class AssessmentRows:
    def __init__(
        self,
        *,
        actor: User | None,
        district_id: int | None,
        agency_id: int | None,
        today: date,
    ):
        self.columns = assessment_columns()
        self.actor, self.today = actor, today
        self.district_id = district_id  # district staff see only their residents
        self.agency_id = agency_id  # an agency administrator imports only their agency's
        self.agencies = {a.licence_number: a for a in db.session.scalars(sa.select(Agency))}
        self.seen: dict[tuple[int, str], int] = {}

    def _resident(self, text: str, problems: dict) -> Resident | None:
        if problem := scientific_id_problem(text) or resident_id_error(code_text(text)):
            problems["id_number"] = problem
            return None
        resident = _registered(code_text(text).upper())
        # Out-of-district residents look exactly like missing ones, as on every other page.
        if resident is None or self.district_id not in (None, resident.district_id):
            problems["id_number"] = str(NOT_REGISTERED)
            return None
        return resident

    def _agency(self, text: str, problems: dict) -> Agency | None:
        agency = self.agencies.get(code_text(text))
        if agency is None:
            problems["agency_licence"] = str(_l("No assessment agency has this licence number."))
        elif self.agency_id not in (None, agency.id):
            problems["agency_licence"] = str(
                _l("You may import assessments of your own agency only.")
            )
            return None
        return agency

    def _assessor(self, text: str, agency: Agency | None, column: str, problems: dict):
        assessor = db.session.scalar(
            sa.select(Assessor).where(Assessor.certificate_number == code_text(text))
        )
        if assessor is None:
            problems[column] = str(_l("No assessor holds this certificate number."))
        elif agency is not None and assessor.agency_id != agency.id:
            # Checked here as well as in lifecycle.record, because the import schedules the
            # visit in the recorder's name and scheduling needs a member of the agency.
            problems[column] = str(_l("The assessor does not belong to the assigned agency."))
            return None
        return assessor

    def _parse(self, v: dict[str, str], problems: dict[str, str]) -> dict:
        agency = self._agency(v["agency_licence"], problems)
        ref = v["external_ref"].strip()
        if not ref or len(ref) > 60:
            problems["external_ref"] = str(
                _l("Enter the agency's case number (at most 60 characters).")
            )
        scores = {code: parse_score(v[code]) for code in instrument().items}
        items = {code: score for code, score in scores.items() if score is not None}
        try:
            items = validate_items(items)
        except InvalidScores as error:
            problems.update({code: str(reason) for code, reason in error.details.items()})
        diagnoses = ()
        try:
            codes = re.split(r"[\s,，、;；]+", v.get("diagnoses", ""))
            diagnoses = normalize_diagnoses([code for code in codes if code])
        except InvalidScores as error:
            problems["diagnoses"] = str(error.message)
        return {
            "resident": self._resident(v["id_number"], problems),
            "agency": agency,
            "external_ref": ref,
            "items": items,
            "diagnoses": diagnoses,
            "recorder": self._assessor(
                v["recorder_certificate"], agency, "recorder_certificate", problems
            ),
            "cosigner": self._assessor(
                v["cosigner_certificate"], agency, "cosigner_certificate", problems
            ),
            **_read_cells(v, _ASSESSMENT_READERS, problems),
        }

    def __call__(self, number: int, v: dict[str, str]) -> Outcome:
        problems: dict[str, str] = {}
        p = self._parse(v, problems)
        if problems:
            return problems
        key = (p["agency"].id, p["external_ref"])
        first = self.seen.setdefault(key, number)
        if first != number:
            return {"external_ref": str(_l("The same case number is in row %(row)s.", row=first))}
        existing = db.session.scalar(
            sa.select(Assessment).where(
                Assessment.agency_id == key[0], Assessment.external_ref == key[1]
            )
        )
        if existing is not None:
            if _same_assessment(existing, p):
                return "unchanged"
            return {"external_ref": str(ALREADY_IMPORTED)}
        try:
            with db.session.begin_nested():
                self._create(p)
        except DomainError as error:
            return error_problems(error, "id_number")
        except sa.exc.IntegrityError:  # another import of the same case committed meanwhile
            return {"external_ref": str(ALREADY_IMPORTED)}
        return "created"

    def _create(self, p: dict) -> None:
        day = p["assessed_on"]
        # The sheet has no visit time; the start of the visit day stands for it.
        start_of_day = datetime.combine(day, time(0), tzinfo=SHANGHAI)
        case = lifecycle.apply(
            p["resident"],
            type=p["type"],
            applied_by=self.actor,
            via="agency_import",
            today=day,
            applied_at=start_of_day,
        )
        lifecycle.assign(case, p["agency"], today=day)
        lifecycle.schedule(case, start_of_day, actor=p["recorder"].user, today=day)
        case.external_ref = p["external_ref"]
        lifecycle.record(
            case,
            items=p["items"],
            assessed_on=day,
            recorder=p["recorder"],
            cosigner=p["cosigner"],
            coma=p["coma"],
            diagnoses=p["diagnoses"],
            care_risk_events_30d=p["care_risk_events_30d"],
            fee_fen=p["fee_yuan"],
            today=self.today,
        )


def _same_assessment(case: Assessment, p: dict) -> bool:
    return (
        case.resident_id,
        case.type,
        case.assessed_on,
        case.item_scores,
        case.coma,
        case.diagnoses or "",
        case.care_risk_events_30d,
        case.assessor1_id,
        case.assessor2_id,
        case.fee_fen,
    ) == (
        p["resident"].id,
        p["type"],
        p["assessed_on"],
        p["items"],
        p["coma"],
        " ".join(p["diagnoses"]),
        p["care_risk_events_30d"],
        p["recorder"].id,
        p["cosigner"].id,
        p["fee_yuan"],
    )


# --- a service's error, as problems by column -------------------------------------------

# Keys of service errors' details, and the column each one points at.
_REASON_KEYS = {
    "recorder": "recorder_certificate",
    "cosigner": "cosigner_certificate",
    "fee_fen": "fee_yuan",
}
_CONTEXT_KEYS = {  # these carry data, not a reason
    "assessment_id": "id_number",
    "agency_id": "agency_licence",
    "last_served_on": "agency_licence",
    "disputed_assessment_id": "type",
}


def error_problems(error: DomainError, fallback: str) -> dict[str, str]:
    """A service's error as column -> reason: its specific message on the column it names,
    or, when it only has the generic message, each detail that is itself a reason."""
    columns = {c.code for c in (*RESIDENT_COLUMNS, *assessment_columns())}
    reasons = {
        _REASON_KEYS.get(key, key): str(value)
        for key, value in error.details.items()
        if key in columns or key in _REASON_KEYS
    }
    if error.message is type(error).default_message and reasons:
        return reasons
    named = [*reasons, *(_CONTEXT_KEYS[k] for k in error.details if k in _CONTEXT_KEYS)]
    if not named and isinstance(error, AgencyNotActive | ConflictOfInterest):
        named = ["agency_licence"]
    if not named and isinstance(error, NotFound):  # the only one on this path: policy_on(day)
        named = ["assessed_on"]
    column = named[0] if named else fallback
    return {column: str(error.message)}
