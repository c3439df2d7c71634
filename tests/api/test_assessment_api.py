"""The assessment operations of /api/v1: an agency's software and the city's systems, with
real tokens, against the real service functions."""

from __future__ import annotations

import threading
from datetime import date, datetime, time, timedelta
from time import sleep

import pytest
import sqlalchemy as sa
from openapi_spec_validator import validate

from assessment import lifecycle
from assessment.agencies import add_assessor, create_agency
from assessment.instrument import instrument
from assessment.models import AgencyAdmin, Assessment
from eldercare.accounts import User, UserRole
from eldercare.audit import AuditLog
from eldercare.db import db
from eldercare.residents import District, Resident, compose_resident_id
from eldercare.timeutil import SHANGHAI, local_today
from eldercare.tokens import issue_token
from tests.assessment import conftest as assessment_fixtures
from tests.assessment.helpers import items_with_total

# The assessment tests' fixtures, used here by name.
world = assessment_fixtures.world
take_through = assessment_fixtures.take_through

FULL_SCOPES = ["assessments:write", "read"]


class Api:
    """Calls /api/v1 with a token and a language."""

    def __init__(self, client):
        self.client = client

    def call(self, method, url, secret=None, *, lang="en", json=None):
        headers = {"Accept-Language": lang} if lang else {}
        if secret:
            headers["Authorization"] = f"Bearer {secret}"
        return self.client.open(url, method=method, headers=headers, json=json)

    def get(self, url, secret=None, **kwargs):
        return self.call("GET", url, secret, **kwargs)

    def post(self, url, secret=None, **kwargs):
        return self.call("POST", url, secret, **kwargs)


@pytest.fixture
def api(client):
    return Api(client)


def _settle(db_session):
    """Keep what the test built: an error response rolls back everything uncommitted."""
    db_session.commit()


@pytest.fixture
def agency_token(world, db_session):
    """A token of world.agency's administrator account (the agency's own software)."""

    def _issue(scopes=FULL_SCOPES, agency=None):
        user = world.factory.user(roles=["agency_admin"])
        db_session.add(AgencyAdmin(user_id=user.id, agency_id=(agency or world.agency).id))
        _token, secret = issue_token(user, "Agency software", list(scopes))
        _settle(db_session)
        return secret

    return _issue


@pytest.fixture
def bureau_token(world, db_session):
    def _issue(roles=("bureau_officer",), district=None, scopes=("read",)):
        user = world.factory.user(roles=list(roles), district=district)
        _token, secret = issue_token(user, "City data exchange", list(scopes))
        _settle(db_session)
        return secret

    return _issue


def _assigned(world, resident=None, agency=None):
    case = lifecycle.apply(
        resident or world.elder, type="first", applied_by=world.officer, via="bureau"
    )
    lifecycle.assign(case, agency or world.agency)
    return case


def _scheduled(world, resident=None):
    case = _assigned(world, resident)
    lifecycle.schedule(
        case, datetime.combine(world.today, time(9), tzinfo=SHANGHAI), actor=world.li.user
    )
    return case


def _another_elder(world, birth=date(1940, 1, 2), district=None):
    return world.factory.resident(district or world.heping, birth=birth, name="张桂兰")


def _result(total=50, **changes):
    body = {
        "assessed_on": local_today().isoformat(),
        "items": items_with_total(total),
        "coma": False,
        "diagnoses": ["F00"],
        "care_risk_events_30d": 0,
        "recorder_certificate": "C-001",
        "cosigner_certificate": "C-002",
        "fee_fen": 8000,
    }
    return body | changes


def _record_audits(db_session, case_id):
    return db_session.scalar(
        sa.select(sa.func.count())
        .select_from(AuditLog)
        .where(AuditLog.action == "assessment.record", AuditLog.object_id == str(case_id))
    )


# --- the OpenAPI document ---------------------------------------------------------------


def test_openapi_document_validates_and_describes_the_assessment_operations(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    validate(spec)
    paths = spec["paths"]
    for path in (
        "/api/v1/instrument",
        "/api/v1/assessments",
        "/api/v1/assessments/{assessment_id}",
        "/api/v1/assessments/{assessment_id}/schedule",
        "/api/v1/assessments/{assessment_id}/result",
        "/api/v1/eligibility-checks",
    ):
        assert path in paths, path
        for operation in paths[path].values():
            if isinstance(operation, dict) and "responses" in operation:
                assert operation["security"] == [{"bearerAuth": []}], path
    post = paths["/api/v1/assessments/{assessment_id}/result"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/AssessmentResult"
    }
    assert post["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ApiError"
    }
    body = spec["components"]["schemas"]["AssessmentResult"]
    assert body["properties"]["items"]["additionalProperties"] == {"type": "integer"}
    assert set(body["required"]) >= {"items", "recorder_certificate", "cosigner_certificate"}
    assert body["properties"]["coma"]["type"] == "boolean"


# --- reference data ---------------------------------------------------------------------


def test_the_instrument_lists_every_item_dimension_and_level(api, agency_token):
    response = api.get("/api/v1/instrument", agency_token(["read"]))
    assert response.status_code == 200
    body = response.get_json()
    assert [item["code"] for item in body["items"]] == list(instrument().items)
    assert len(body["items"]) == 26 and body["max_total"] == 90
    stairs = next(item for item in body["items"] if item["code"] == "stairs")
    assert stairs == {
        "code": "stairs", "dimension": "mobility", "zh": "上下楼梯", "en": "Stairs",
        "min": 0, "max": 3,
    }  # fmt: skip
    assert sum(d["max"] for d in body["dimensions"]) == 90
    assert [lv["code"] for lv in body["levels"]] == [
        "intact", "mild", "moderate", "severe", "complete",
    ]  # fmt: skip


# --- an agency's cases ------------------------------------------------------------------


def test_an_agency_lists_only_its_own_cases_with_paging(api, world, agency_token, db_session):
    mine = _assigned(world)
    theirs = _assigned(world, _another_elder(world), agency=world.other)
    later = _scheduled(world, _another_elder(world, birth=date(1938, 6, 6)))
    secret = agency_token()

    everything = api.get("/api/v1/assessments", secret).get_json()
    assert [case["id"] for case in everything["items"]] == [mine.id, later.id]
    assert everything["total"] == 2 and theirs.id not in {c["id"] for c in everything["items"]}

    scheduled = api.get("/api/v1/assessments?status=scheduled", secret).get_json()
    assert [case["id"] for case in scheduled["items"]] == [later.id]

    page = api.get("/api/v1/assessments?limit=1&offset=1", secret).get_json()
    assert page["total"] == 2 and [c["id"] for c in page["items"]] == [later.id]
    assert page["limit"] == 1 and page["offset"] == 1


@pytest.mark.parametrize(
    "query, field",
    [("limit=101", "limit"), ("limit=0", "limit"), ("offset=-1", "offset"), ("status=x", "status")],
)
def test_paging_and_filter_are_checked(api, agency_token, query, field):
    response = api.get(f"/api/v1/assessments?{query}", agency_token())
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "invalid_input" and field in error["details"]["query"]


def test_a_read_only_token_may_list_but_a_token_with_neither_scope_may_not(api, agency_token):
    assert api.get("/api/v1/assessments", agency_token(["read"])).status_code == 200
    response = api.get("/api/v1/assessments", agency_token(["vouchers:read"]))
    assert response.status_code == 403
    assert response.get_json()["error"]["details"] == {
        "missing_one_of": ["assessments:write", "read"]
    }


def test_an_account_outside_every_agency_is_refused(api, world, db_session):
    unlinked = world.factory.user(roles=["agency_admin"])  # no AgencyAdmin row
    _token, secret = issue_token(unlinked, "Stray", FULL_SCOPES)
    _settle(db_session)
    response = api.get("/api/v1/assessments", secret)
    assert response.status_code == 403
    assert "agency" in response.get_json()["error"]["message"]


def test_an_assessors_token_acts_for_the_assessors_agency(api, world, db_session):
    case = _assigned(world)
    _token, secret = issue_token(world.li.user, "Li's tablet", ["read"])
    _settle(db_session)
    listed = api.get("/api/v1/assessments", secret).get_json()
    assert [c["id"] for c in listed["items"]] == [case.id]


def test_a_case_of_the_agency_in_full_and_no_full_id_number(api, world, agency_token):
    case = _scheduled(world)
    secret = agency_token()
    response = api.get(f"/api/v1/assessments/{case.id}", secret)
    assert response.status_code == 200
    body = response.get_json()
    assert body["id"] == case.id and body["status"] == "scheduled"
    assert body["scheduled_for"].endswith("+08:00") and body["scheduled_for"][11:16] == "09:00"
    assert body["resident"]["masked_id_number"] == world.elder.masked_id_number
    assert body["resident"]["district"] == "210102"
    assert world.elder.id_number not in response.get_data(as_text=True)
    assert body["items"] is None and body["recorder_certificate"] is None


def test_the_elders_full_phone_only_while_the_case_is_open(api, world, take_through, agency_token):
    """The agency calls to arrange the visit; once the case is closed it keeps a masked
    phone only (issue 13 item 6)."""
    phone = "13812345678"
    open_elder = _another_elder(world)
    closed_elder = world.factory.resident(world.heping, birth=date(1941, 6, 1), phone=phone)
    open_elder.phone = phone
    open_case = _scheduled(world, open_elder)
    closed_case = take_through(closed_elder)  # approved
    secret = agency_token()
    got = api.get(f"/api/v1/assessments/{open_case.id}", secret).get_json()
    assert got["resident"]["phone"] == phone
    closed = api.get(f"/api/v1/assessments/{closed_case.id}", secret)
    assert closed.get_json()["resident"]["phone"] == "138****5678"
    assert phone not in closed.get_data(as_text=True)
    listed = api.get("/api/v1/assessments?per_page=100", secret).get_json()["items"]
    phones = {item["id"]: item["resident"]["phone"] for item in listed}
    assert phones[open_case.id] == phone and phones[closed_case.id] == "138****5678"


def test_another_agencys_case_looks_missing(api, world, agency_token):
    theirs = _assigned(world, agency=world.other)
    secret = agency_token()
    other = api.get(f"/api/v1/assessments/{theirs.id}", secret)
    missing = api.get(f"/api/v1/assessments/{theirs.id + 1000}", secret)
    assert other.status_code == missing.status_code == 404
    assert other.get_json() == missing.get_json()
    assert other.get_json()["error"]["code"] == "not_found"
    posted = api.post(f"/api/v1/assessments/{theirs.id}/result", secret, json=_result())
    assert posted.status_code == 404


# --- scheduling -------------------------------------------------------------------------


def test_the_agency_schedules_the_visit(api, world, agency_token, db_session):
    case = _assigned(world)
    secret = agency_token()
    when = datetime.combine(world.today + timedelta(days=2), time(9, 30), tzinfo=SHANGHAI)
    response = api.post(
        f"/api/v1/assessments/{case.id}/schedule",
        secret,
        json={"scheduled_for": when.isoformat()},
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "scheduled"
    stored = db_session.get(Assessment, case.id)
    assert stored.status == "scheduled" and stored.scheduled_for == when
    audit = db_session.scalar(
        sa.select(AuditLog).where(
            AuditLog.action == "assessment.schedule", AuditLog.object_id == str(case.id)
        )
    )
    assert audit.actor_label.startswith("token:")


@pytest.mark.parametrize(
    "value, detail_path",
    [
        ("2030-01-01T09:00:00", ("json", "scheduled_for")),  # no offset
        ("tomorrow", ("json", "scheduled_for")),
        ("2001-01-01T09:00:00+08:00", ("scheduled_for",)),  # in the past: the lifecycle says
    ],
)
def test_a_bad_visit_time_is_refused_and_changes_nothing(
    api, world, agency_token, db_session, value, detail_path
):
    case = _assigned(world)
    secret = agency_token()
    response = api.post(
        f"/api/v1/assessments/{case.id}/schedule", secret, json={"scheduled_for": value}
    )
    assert response.status_code == 422
    details = response.get_json()["error"]["details"]
    for key in detail_path:
        details = details[key]
    assert details
    assert db_session.get(Assessment, case.id).status == "assigned"


def test_a_recorded_case_cannot_be_rescheduled(api, world, take_through, agency_token):
    case = take_through(approve=False)
    response = api.post(
        f"/api/v1/assessments/{case.id}/schedule",
        agency_token(),
        json={"scheduled_for": "2030-01-01T09:00:00+08:00"},
    )
    assert response.status_code == 409
    error = response.get_json()["error"]
    assert error["code"] == "invalid_transition" and error["details"]["status"] == "recorded"


def test_scheduling_needs_the_write_scope(api, world, agency_token):
    case = _assigned(world)
    response = api.post(
        f"/api/v1/assessments/{case.id}/schedule",
        agency_token(["read"]),
        json={"scheduled_for": "2030-01-01T09:00:00+08:00"},
    )
    assert response.status_code == 403
    assert response.get_json()["error"]["details"] == {"missing": ["assessments:write"]}


# --- recording the result ---------------------------------------------------------------


def test_a_full_result_is_recorded_with_its_total_and_level(api, world, agency_token, db_session):
    case = _scheduled(world)
    secret = agency_token()
    response = api.post(
        f"/api/v1/assessments/{case.id}/result", secret, json=_result(50, external_ref="K-77")
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    # 50 is moderate; the dementia diagnosis raises it one level.
    assert body["status"] == "recorded" and body["total"] == 50
    assert body["base_level"] == "moderate" and body["level"] == "severe"
    assert body["adjustments"] == ["psychiatric_diagnosis"] and body["diagnoses"] == ["F00"]
    assert body["recorder_certificate"] == "C-001" and body["cosigner_certificate"] == "C-002"
    assert body["items"] == items_with_total(50) and body["external_ref"] == "K-77"
    assert body["refundable_fee_fen"] == 8000
    stored = db_session.get(Assessment, case.id)
    assert (stored.status, stored.total, stored.level) == ("recorded", 50, "severe")
    assert (stored.assessor1_id, stored.assessor2_id) == (world.li.id, world.zhao.id)
    assert stored.external_ref == "K-77"
    assert _record_audits(db_session, case.id) == 1


def test_the_same_submission_again_gives_the_same_answer_and_records_once(
    api, world, agency_token, db_session
):
    case = _scheduled(world)
    secret = agency_token()
    url = f"/api/v1/assessments/{case.id}/result"
    first = api.post(url, secret, json=_result(50))
    again = api.post(url, secret, json=_result(50))
    assert first.status_code == again.status_code == 200
    assert again.get_json() == first.get_json()
    assert _record_audits(db_session, case.id) == 1


def test_a_different_result_for_a_recorded_case_is_a_conflict(api, world, agency_token, db_session):
    case = _scheduled(world)
    secret = agency_token()
    url = f"/api/v1/assessments/{case.id}/result"
    items = items_with_total(49)
    zero = next(code for code, score in items.items() if score == 0)
    items[zero] = 1
    assert api.post(url, secret, json=_result(items=items)).status_code == 200
    changed = api.post(url, secret, json=_result(40))
    assert changed.status_code == 409
    assert changed.get_json()["error"]["code"] == "invalid_transition"
    # true where 1 was recorded is a different submission, not a retry of the same one.
    as_bool = api.post(url, secret, json=_result(items=items | {zero: True}))
    assert as_bool.status_code == 409
    stored = db_session.get(Assessment, case.id)
    assert stored.total == 50 and stored.item_scores[zero] == 1
    assert _record_audits(db_session, case.id) == 1


@pytest.mark.parametrize(
    "score, word",
    [("3", "whole number"), (True, "whole number"), (3.0, "whole number"), (9, "outside")],
)
def test_a_score_must_be_a_whole_number_in_range_as_sent(
    api, world, agency_token, db_session, score, word
):
    case = _scheduled(world)
    items = items_with_total(50) | {"eating": score}
    response = api.post(
        f"/api/v1/assessments/{case.id}/result", agency_token(), json=_result(items=items)
    )
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "invalid_scores"
    assert list(error["details"]) == ["eating"] and word in error["details"]["eating"]
    assert db_session.get(Assessment, case.id).status == "scheduled"
    assert _record_audits(db_session, case.id) == 0


def test_a_missing_item_is_named(api, world, agency_token, db_session):
    case = _scheduled(world)
    items = items_with_total(50)
    del items["social"]
    response = api.post(
        f"/api/v1/assessments/{case.id}/result", agency_token(), json=_result(items=items)
    )
    assert response.status_code == 422
    details = response.get_json()["error"]["details"]
    assert list(details) == ["social"] and "missing" in details["social"]
    assert db_session.get(Assessment, case.id).status == "scheduled"


@pytest.mark.parametrize(
    "change, field",
    [
        ({"coma": 1}, "coma"),
        ({"care_risk_events_30d": True}, "care_risk_events_30d"),
        ({"fee_fen": "8000"}, "fee_fen"),
        ({"assessed_on": "2026-02-30"}, "assessed_on"),
        ({"recorder_certificate": ""}, "recorder_certificate"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_other_fields_are_not_coerced_either(api, world, agency_token, change, field):
    case = _scheduled(world)
    response = api.post(
        f"/api/v1/assessments/{case.id}/result", agency_token(), json=_result(**change)
    )
    assert response.status_code == 422
    assert field in response.get_json()["error"]["details"]["json"]


def test_the_same_certificate_twice_is_refused(api, world, agency_token, db_session):
    case = _scheduled(world)
    response = api.post(
        f"/api/v1/assessments/{case.id}/result",
        agency_token(),
        json=_result(cosigner_certificate="C-001"),
    )
    assert response.status_code == 422
    assert "cosigner_certificate" in response.get_json()["error"]["details"]
    assert db_session.get(Assessment, case.id).status == "scheduled"


@pytest.mark.parametrize("certificate", ["C-003", "C-999"])  # another agency's; nobody's
def test_a_cosigner_outside_the_agency_is_refused_without_saying_whose(
    api, world, agency_token, db_session, certificate
):
    case = _scheduled(world)
    response = api.post(
        f"/api/v1/assessments/{case.id}/result",
        agency_token(),
        json=_result(cosigner_certificate=certificate),
    )
    assert response.status_code == 422
    details = response.get_json()["error"]["details"]
    assert details == {
        "cosigner_certificate": "No assessor of your agency holds this certificate number."
    }
    assert db_session.get(Assessment, case.id).status == "scheduled"


def test_an_expired_certificate_is_named_by_its_field(api, world, agency_token, db_session):
    lapsed_user = world.factory.user(roles=["assessor"])
    add_assessor(
        world.agency, lapsed_user, name="钱亮", certificate_number="C-010",
        valid_until=world.today - timedelta(days=1),
    )  # fmt: skip
    case = _scheduled(world)
    response = api.post(
        f"/api/v1/assessments/{case.id}/result",
        agency_token(),
        json=_result(cosigner_certificate="C-010"),
    )
    assert response.status_code == 403
    error = response.get_json()["error"]
    assert error["code"] == "assessor_not_qualified"
    assert error["details"]["cosigner_certificate"] == "钱亮"


def test_recording_needs_the_write_scope(api, world, agency_token, db_session):
    case = _scheduled(world)
    response = api.post(
        f"/api/v1/assessments/{case.id}/result", agency_token(["read"]), json=_result()
    )
    assert response.status_code == 403
    assert response.get_json()["error"]["details"] == {"missing": ["assessments:write"]}
    assert db_session.get(Assessment, case.id).status == "scheduled"


def test_no_token_is_a_401_before_the_body_is_looked_at(api, world):
    case = _scheduled(world)
    response = api.post(f"/api/v1/assessments/{case.id}/result", json={"nonsense": True})
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "authentication_required"


def test_an_external_reference_is_unique_in_the_agency(api, world, agency_token, db_session):
    first = _scheduled(world)
    second = _scheduled(world, _another_elder(world))
    secret = agency_token()
    ok = api.post(
        f"/api/v1/assessments/{first.id}/result", secret, json=_result(external_ref="K-1")
    )
    assert ok.status_code == 200
    clash = api.post(
        f"/api/v1/assessments/{second.id}/result", secret, json=_result(external_ref="K-1")
    )
    assert clash.status_code == 409
    assert clash.get_json()["error"]["details"] == {
        "external_ref": "K-1",
        "assessment_id": first.id,
    }
    assert db_session.get(Assessment, second.id).status == "scheduled"


# --- eligibility ------------------------------------------------------------------------


def _eligibility(api, secret, id_number, on=None, **kwargs):
    body = {"id_number": id_number} | ({"on": on} if on else {})
    return api.post("/api/v1/eligibility-checks", secret, json=body, **kwargs)


def test_an_approved_elder_is_eligible_with_the_level(api, world, take_through, bureau_token):
    case = take_through(total=40)  # severe
    response = _eligibility(api, bureau_token(), world.elder.id_number)
    assert response.status_code == 200
    assert response.get_json() == {
        "on": world.today.isoformat(),
        "eligible": True,
        "level": "severe",
        "reasons": [],
        "holds_until": case.valid_until.isoformat(),
        "assessment_id": case.id,
    }


def test_eligibility_on_a_given_day(api, world, take_through, bureau_token):
    case = take_through(total=40)
    secret = bureau_token(roles=["admin"])
    after = case.valid_until + timedelta(days=1)
    body = _eligibility(api, secret, world.elder.id_number, on=after.isoformat()).get_json()
    assert body["eligible"] is False and body["on"] == after.isoformat()
    assert [r["code"] for r in body["reasons"]] == ["no_valid_assessment"]


def test_an_unknown_person_is_not_registered(api, world, bureau_token):
    unknown = compose_resident_id("210102", date(1950, 1, 1), 999)
    secret = bureau_token()
    english = _eligibility(api, secret, unknown).get_json()
    assert english["eligible"] is False and english["assessment_id"] is None
    assert english["reasons"] == [
        {"code": "not_registered", "message": "The person is not in the resident register."}
    ]


def test_a_malformed_id_number_is_a_422_with_the_reason(api, world, bureau_token):
    good = world.elder.id_number
    typo = good[:17] + ("0" if good[17] != "0" else "1")
    response = _eligibility(api, bureau_token(), typo)
    assert response.status_code == 422
    assert response.get_json()["error"]["details"] == {
        "id_number": "The last character does not match the others; "
        "please check for a typing mistake."
    }
    chinese = _eligibility(api, bureau_token(), typo, lang="zh-CN")
    assert chinese.get_json()["error"]["details"] == {
        "id_number": "最后一位校验码与前面的数字不符，请检查是否输错。"
    }
    short = _eligibility(api, bureau_token(), "12345")
    assert short.status_code == 422
    # The shape is the document's (a pattern): the schema refuses it, naming the field.
    assert "18 characters" in short.get_json()["error"]["details"]["json"]["id_number"][0]


def test_a_malformed_date_is_a_422(api, world, bureau_token):
    response = _eligibility(api, bureau_token(), world.elder.id_number, on="2026-02-30")
    assert response.status_code == 422
    assert "on" in response.get_json()["error"]["details"]["json"]


def test_only_bureau_accounts_may_ask(api, world, agency_token, bureau_token):
    for secret in (agency_token(["read"]), bureau_token(roles=["auditor"])):
        response = _eligibility(api, secret, world.elder.id_number)
        assert response.status_code == 403
        assert response.get_json()["error"]["code"] == "forbidden"
    write_only = bureau_token(scopes=["assessments:write"])
    response = _eligibility(api, write_only, world.elder.id_number)
    assert response.status_code == 403
    assert response.get_json()["error"]["details"] == {"missing": ["read"]}


def test_district_staff_see_only_their_district(api, world, take_through, bureau_token):
    take_through(total=40)
    shenhe_elder = _another_elder(world, district=world.shenhe)
    unknown = compose_resident_id("210102", date(1950, 1, 1), 999)
    secret = bureau_token(district=world.heping)
    assert _eligibility(api, secret, world.elder.id_number).get_json()["eligible"] is True
    other = _eligibility(api, secret, shenhe_elder.id_number)
    missing = _eligibility(api, secret, unknown)
    # Someone registered in another district and someone not registered at all look alike.
    assert other.status_code == missing.status_code == 404
    assert other.get_json() == missing.get_json()
    city_wide = _eligibility(api, bureau_token(), shenhe_elder.id_number)
    assert city_wide.status_code == 200


# --- two deliveries at once (PostgreSQL) ------------------------------------------------


def _committed_case(app):
    """A scheduled case and two agency tokens, committed (each request commits for real)."""
    year = local_today() + timedelta(days=365)
    with app.app_context():
        district = District(code="219901", name_zh="测试区", name_en="Test District")
        db.session.add(district)
        db.session.flush()
        resident = Resident(
            id_number=compose_resident_id("219901", date(1944, 1, 1), 101),
            name="周玉梅",
            birth_date=date(1944, 1, 1),
            district_id=district.id,
            street="测试街道",
            address="测试路 1 号",
        )
        users = []
        for role in ("agency_admin", "assessor", "assessor", "bureau_officer"):
            user = User(username=f"{role}-{len(users)}", display_name=role)
            user.set_password("not-used-here-42")
            user.role_rows = [UserRole(role=role)]
            users.append(user)
        db.session.add_all([resident, *users])
        db.session.flush()
        admin, first, second, officer = users
        agency = create_agency(name="并发评估", licence_number="PG-901", certified_until=year)
        db.session.add(AgencyAdmin(user_id=admin.id, agency_id=agency.id))
        recorder = add_assessor(
            agency, first, name="甲", certificate_number="C-901", valid_until=year
        )
        add_assessor(agency, second, name="乙", certificate_number="C-902", valid_until=year)
        case = lifecycle.apply(resident, type="first", applied_by=officer, via="bureau")
        lifecycle.assign(case, agency)
        lifecycle.schedule(
            case,
            datetime.combine(local_today(), time(9), tzinfo=SHANGHAI),
            actor=recorder.user,
        )
        # Two tokens: one token's own row (last_used_at) would serialise the requests anyway.
        secrets = [issue_token(admin, f"Worker {n}", FULL_SCOPES)[1] for n in (1, 2)]
        db.session.commit()
        case_id = case.id
        db.session.remove()
    body = _result(recorder_certificate="C-901", cosigner_certificate="C-902")
    return case_id, secrets, body


@pytest.mark.postgres
def test_two_deliveries_at_once_record_once(private_app):
    """Both wait on the case's row lock; whichever comes second answers as a retry."""
    app = private_app
    case_id, secrets, body = _committed_case(app)
    answers = []

    def deliver(secret):
        response = app.test_client().post(
            f"/api/v1/assessments/{case_id}/result",
            json=body,
            headers={"Authorization": f"Bearer {secret}", "Accept-Language": "en"},
        )
        answers.append((response.status_code, response.get_json()))

    with app.app_context():
        engine = db.engine
    with engine.connect() as holder:
        # Hold the row so that both deliveries are in flight before either can record.
        holder.execute(sa.select(Assessment.id).where(Assessment.id == case_id).with_for_update())
        threads = [threading.Thread(target=deliver, args=(secret,)) for secret in secrets]
        for thread in threads:
            thread.start()
        sleep(0.5)
        holder.rollback()
    for thread in threads:
        thread.join(timeout=30)

    assert [status for status, _ in answers] == [200, 200], answers
    assert answers[0][1] == answers[1][1] and answers[0][1]["status"] == "recorded"
    with app.app_context():
        assert _record_audits(db.session, case_id) == 1
        db.session.remove()


# --- the bureau's operations (issue 10: items 7, 8, 11, 13) ------------------------------

BUREAU_PATHS = {
    "/api/v1/residents/move-out": ("post",),
    "/api/v1/eligibility-policies": ("get", "post"),
    "/api/v1/assessment-fee-refunds": ("get",),
    "/api/v1/assessment-reviews": ("get", "post"),
}


def test_every_bureau_operation_is_documented_with_an_example(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    validate(spec)
    for path, methods in BUREAU_PATHS.items():
        for method in methods:
            operation = spec["paths"][path][method]
            assert operation["security"] == [{"bearerAuth": []}], path
            answer = next(c for s, c in operation["responses"].items() if s.startswith("2"))
            assert "example" in answer["content"]["application/json"], (path, method)
            if method == "post":
                body = operation["requestBody"]["content"]["application/json"]
                assert "example" in body, (path, method)


def _problem_fields(response) -> dict:
    """The fields an error names: a service's details, or the schema's (under "json")."""
    details = response.get_json()["error"]["details"]
    return details.get("json", details)


def _write_token(bureau_token, roles=("bureau_officer",), district=None):
    return bureau_token(roles=roles, district=district, scopes=("read", "bureau:write"))


def test_the_bureau_records_a_move_through_the_api(
    api, world, take_through, bureau_token, db_session
):
    take_through(total=50)
    secret = _write_token(bureau_token)
    moved = world.today + timedelta(days=20)
    body = {"id_number": world.elder.id_number, "moved_out_on": moved.isoformat()}
    response = api.post("/api/v1/residents/move-out", secret, json=body)
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    assert answer["moved_out_on"] == moved.isoformat()
    assert answer["eligible_until"] == (moved - timedelta(days=1)).isoformat()
    assert (
        answer["vouchers_stop_from"]
        == date(moved.year + (moved.month == 12), moved.month % 12 + 1, 1).isoformat()
    )
    assert world.elder.id_number not in response.get_data(as_text=True)
    again = api.post("/api/v1/residents/move-out", secret, json=body, lang="zh-CN")
    assert again.status_code == 409
    assert again.get_json()["error"]["message"] == f"已登记于 {moved.isoformat()} 迁出本市。"
    assert (
        db_session.scalar(
            sa.select(sa.func.count())
            .select_from(AuditLog)
            .where(AuditLog.action == "resident.move_out")
        )
        == 1
    )


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"moved_out_on": "2026-13-01"}, 422, "moved_out_on"),
        ({"moved_out_on": "1900-01-01"}, 422, "moved_out_on"),
        ({"id_number": "210102194403120020"}, 422, "id_number"),
        ({"moved_out_on": None}, 422, "moved_out_on"),
    ],
)
def test_a_bad_move_is_refused_with_the_field_and_changes_nothing(
    api, world, bureau_token, db_session, body, status, field
):
    secret = _write_token(bureau_token)
    full = {"id_number": world.elder.id_number, "moved_out_on": world.today.isoformat()} | body
    response = api.post("/api/v1/residents/move-out", secret, json=full)
    assert response.status_code == status
    assert field in _problem_fields(response)
    db_session.refresh(world.elder)
    assert world.elder.moved_out_on is None


def test_moves_need_the_write_scope_an_officer_and_the_district(
    api, world, bureau_token, db_session
):
    body = {"id_number": world.elder.id_number, "moved_out_on": world.today.isoformat()}
    read_only = bureau_token()
    assert api.post("/api/v1/residents/move-out", read_only, json=body).status_code == 403
    approver = _write_token(bureau_token, roles=("bureau_approver",))
    assert api.post("/api/v1/residents/move-out", approver, json=body).status_code == 403
    elsewhere = _write_token(bureau_token, district=world.shenhe)
    assert api.post("/api/v1/residents/move-out", elsewhere, json=body).status_code == 404
    db_session.refresh(world.elder)
    assert world.elder.moved_out_on is None


def _policy_body(day, **changes):
    return {
        "effective_from": day.isoformat(),
        "min_age": 60,
        "eligible_levels": ["moderate", "severe", "complete"],
        "assessment_validity_months": 12,
        "fee_refund_cap_fen": 12000,
        "conflict_lookback_months": 12,
        "expiry_reminder_days": 30,
        "note": "沈民发〔2026〕12号",
    } | changes


def test_the_city_approver_adds_a_policy_version_through_the_api(
    api, world, bureau_token, db_session
):
    secret = _write_token(bureau_token, roles=("bureau_approver",))
    start = world.today + timedelta(days=15)
    response = api.post("/api/v1/eligibility-policies", secret, json=_policy_body(start))
    assert response.status_code == 201, response.get_json()
    versions = api.get("/api/v1/eligibility-policies", secret).get_json()
    assert versions[0]["effective_from"] == start.isoformat()
    assert versions[0]["effective_to"] is None
    assert versions[1]["effective_to"] == start.isoformat()

    overlap = api.post(
        "/api/v1/eligibility-policies", secret, json=_policy_body(start - timedelta(days=1))
    )
    assert overlap.status_code == 409
    for bad, field in (
        ({"min_age": "60"}, "min_age"),
        ({"min_age": 7}, "min_age"),
        ({"effective_from": world.today.isoformat()}, "effective_from"),
        ({"eligible_levels": ["intact"]}, "eligible_levels"),
        ({"fee_refund_cap_fen": True}, "fee_refund_cap_fen"),
    ):
        response = api.post(
            "/api/v1/eligibility-policies",
            secret,
            json=_policy_body(start + timedelta(days=40)) | bad,
        )
        assert response.status_code == 422 and field in _problem_fields(response)
    district = _write_token(bureau_token, roles=("bureau_approver",), district=world.heping)
    refused = api.post(
        "/api/v1/eligibility-policies", district, json=_policy_body(start + timedelta(days=40))
    )
    assert refused.status_code == 403
    assert len(api.get("/api/v1/eligibility-policies", secret).get_json()) == len(versions)


def test_fee_refunds_are_listed_paged_filtered_and_district_scoped(
    api, world, take_through, bureau_token
):
    take_through(total=50)
    shenhe_elder = _another_elder(world, district=world.shenhe)
    take_through(shenhe_elder, total=30)
    city = bureau_token()
    month = world.today.strftime("%Y-%m")
    page = api.get(f"/api/v1/assessment-fee-refunds?month={month}&limit=1", city).get_json()
    assert (page["total"], page["total_amount_fen"], len(page["items"])) == (2, 16000, 1)
    second = api.get(f"/api/v1/assessment-fee-refunds?month={month}&offset=1", city).get_json()
    assert {page["items"][0]["id"], second["items"][0]["id"]} == {
        i["id"] for i in api.get("/api/v1/assessment-fee-refunds", city).get_json()["items"]
    }
    heping = api.get("/api/v1/assessment-fee-refunds?district=210102", city).get_json()
    assert [i["district"] for i in heping["items"]] == ["210102"]
    assert heping["items"][0]["amount_fen"] == 8000
    district_staff = bureau_token(district=world.shenhe)
    scoped = api.get("/api/v1/assessment-fee-refunds", district_staff).get_json()
    assert [i["district"] for i in scoped["items"]] == ["210103"]
    assert (
        api.get("/api/v1/assessment-fee-refunds?district=210102", district_staff).status_code == 404
    )
    bad = api.get("/api/v1/assessment-fee-refunds?month=July", city, lang="zh-CN")
    assert bad.status_code == 422
    assert bad.get_json()["error"]["details"]["query"]["month"] == [
        "请按 YYYY-MM 格式填写月份，例如 2026-11。"
    ]


def test_bulk_review_through_the_api_lists_checks_and_decides_each_case(
    api, world, take_through, bureau_token, db_session
):
    cases = [take_through(_another_elder(world, birth=date(1939 + n, 1, 2)), approve=False)
             for n in range(3)]  # fmt: skip
    # A stored total that does not follow from the items (a database edit): refused.
    cases[2].total = 12
    db_session.flush()
    secret = _write_token(bureau_token, roles=("bureau_approver",))
    listed = api.get("/api/v1/assessment-reviews", secret).get_json()
    by_id = {item["id"]: item for item in listed["items"]}
    assert by_id[cases[0].id]["passes"] is True
    failed = {c["code"] for c in by_id[cases[2].id]["checks"] if not c["passed"]}
    assert failed == {"scores"}

    ids = [c.id for c in cases] + [cases[0].id, 999_999]
    answer = api.post(
        "/api/v1/assessment-reviews", secret, json={"assessment_ids": ids, "decision": "approve"}
    )
    assert answer.status_code == 200, answer.get_json()
    outcomes = {o["assessment_id"]: o for o in answer.get_json()["outcomes"]}
    assert [outcomes[c.id]["outcome"] for c in cases] == ["approved", "approved", "refused"]
    assert outcomes[cases[2].id]["code"] == "scores"
    assert outcomes[999_999]["code"] == "not_found"
    again = api.post(
        "/api/v1/assessment-reviews",
        secret,
        json={"assessment_ids": [cases[0].id], "decision": "approve"},
    ).get_json()
    assert again["outcomes"][0]["code"] == "invalid_transition"
    for bad in ({"assessment_ids": [], "decision": "approve"},
                {"assessment_ids": ["1"], "decision": "approve"},
                {"assessment_ids": [cases[2].id], "decision": "return"}):  # fmt: skip
        assert api.post("/api/v1/assessment-reviews", secret, json=bad).status_code == 422
    officer = _write_token(bureau_token)
    assert api.post(
        "/api/v1/assessment-reviews", officer,
        json={"assessment_ids": [cases[2].id], "decision": "approve"},
    ).status_code == 403  # fmt: skip


# --- two approvers deciding the same cases at once (PostgreSQL) --------------------------


def _committed_recorded_cases(app, count=6):
    """Recorded cases and two city approvers' tokens, committed."""
    year = local_today() + timedelta(days=365)
    today = local_today()
    with app.app_context():
        district = District(code="219902", name_zh="并发区", name_en="Race District")
        db.session.add(district)
        db.session.flush()
        users = []
        for role in ("assessor", "assessor", "bureau_officer", "bureau_approver",
                     "bureau_approver"):  # fmt: skip
            user = User(username=f"{role}-{len(users)}", display_name=role)
            user.set_password("not-used-here-42")
            user.role_rows = [UserRole(role=role)]
            users.append(user)
        db.session.add_all(users)
        db.session.flush()
        first, second, officer, *approvers = users
        agency = create_agency(name="并发评估二", licence_number="PG-902", certified_until=year)
        recorder = add_assessor(agency, first, name="甲", certificate_number="C-911",
                                valid_until=year)  # fmt: skip
        cosigner = add_assessor(agency, second, name="乙", certificate_number="C-912",
                                valid_until=year)  # fmt: skip
        ids = []
        for n in range(count):
            resident = Resident(
                id_number=compose_resident_id("219902", date(1940, 1, 1 + n), 101 + n),
                name=f"老人{n}", birth_date=date(1940, 1, 1 + n), district_id=district.id,
                street="测试街道", address="测试路 1 号",
            )  # fmt: skip
            db.session.add(resident)
            db.session.flush()
            case = lifecycle.apply(resident, type="first", applied_by=officer, via="bureau")
            lifecycle.assign(case, agency)
            lifecycle.schedule(case, datetime.combine(today, time(9), tzinfo=SHANGHAI),
                               actor=recorder.user)  # fmt: skip
            lifecycle.record(case, items=items_with_total(50), assessed_on=today,
                             recorder=recorder, cosigner=cosigner, fee_fen=8000)  # fmt: skip
            ids.append(case.id)
        secrets = [issue_token(a, "Bureau system", ["read", "bureau:write"])[1] for a in approvers]
        db.session.commit()
        db.session.remove()
    return ids, secrets


@pytest.mark.postgres
def test_two_approvers_deciding_the_same_cases_at_once_approve_each_once(private_app):
    from assessment.models import EligibilityEvent, FeeRefund

    app = private_app
    ids, secrets = _committed_recorded_cases(app)
    answers = []
    # The second approver's selection overlaps the first's and is in another order.
    selections = [ids, list(reversed(ids[2:]))]

    def decide(secret, selection):
        response = app.test_client().post(
            "/api/v1/assessment-reviews",
            json={"assessment_ids": selection, "decision": "approve"},
            headers={"Authorization": f"Bearer {secret}", "Accept-Language": "en"},
        )
        answers.append((response.status_code, response.get_json()))

    with app.app_context():
        engine = db.engine
    with engine.connect() as holder:
        # Hold the first shared case so that both decisions are in flight together.
        holder.execute(sa.select(Assessment.id).where(Assessment.id == ids[2]).with_for_update())
        pairs = zip(secrets, selections, strict=True)
        threads = [threading.Thread(target=decide, args=pair) for pair in pairs]
        for thread in threads:
            thread.start()
        sleep(0.5)
        holder.rollback()
    for thread in threads:
        thread.join(timeout=60)

    assert [status for status, _ in answers] == [200, 200], answers
    approved = [o["assessment_id"] for _, body in answers for o in body["outcomes"]
                if o["outcome"] == "approved"]  # fmt: skip
    assert sorted(approved) == sorted(ids)  # every case once, by one approver or the other
    with app.app_context():
        for model, column in ((EligibilityEvent, EligibilityEvent.assessment_id),
                              (FeeRefund, FeeRefund.assessment_id)):  # fmt: skip
            counts = db.session.execute(
                sa.select(column, sa.func.count()).where(column.in_(ids)).group_by(column)
            ).all()
            assert sorted(counts) == [(i, 1) for i in sorted(ids)], model
        audits = db.session.execute(
            sa.select(AuditLog.object_id, sa.func.count())
            .where(AuditLog.action == "assessment.approve")
            .group_by(AuditLog.object_id)
        ).all()
        assert sorted(audits) == sorted((str(i), 1) for i in ids)
        db.session.remove()
