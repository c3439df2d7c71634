"""The assessment pages through the Flask test client: assessors, the bureau, elders.

Data a test builds after its first request is committed (``db_session.commit()``) before the
next one, because a page that refuses a form rolls back everything not yet committed.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta

import sqlalchemy as sa

from assessment import lifecycle
from assessment.agencies import set_agency_status
from assessment.eligibility import add_exclusion, eligibility_on
from assessment.instrument import instrument
from assessment.models import Assessment, Exclusion
from assessment.score_meanings import SCORE_MEANINGS
from eldercare.accounts import FamilyLink, LoginThrottle
from eldercare.audit import AuditLog
from eldercare.timeutil import SHANGHAI, format_local
from tests.assessment.helpers import items_with_total
from tests.conftest import PASSWORD

EN = {"Accept-Language": "en"}
TOKEN = re.compile(r'name="csrf_token"[^>]*?value="([^"]+)"')


def _scheduled(world, resident=None, agency=None, actor=None):
    case = lifecycle.apply(
        resident or world.elder, type="first", applied_by=world.officer, via="bureau"
    )
    lifecycle.assign(case, agency or world.agency)
    lifecycle.schedule(
        case,
        datetime.combine(world.today, time(15), tzinfo=SHANGHAI),
        actor=(actor or world.li).user,
    )
    return case


def _form(world, *, total=50, cosigner="assessor1", password=PASSWORD, items=None, **extra):
    data = {
        f"score-{code}": str(score) for code, score in (items or items_with_total(total)).items()
    }
    data.update(
        assessed_on=world.today.isoformat(),
        fee="80.00",
        diagnoses="",
        care_risk_events_30d="0",
        cosigner_username=cosigner,
        cosigner_password=password,
    )
    data.update(extra)
    return data


def _text(response) -> str:
    return response.get_data(as_text=True)


def _audit_actions(db_session, action: str) -> int:
    return db_session.scalar(
        sa.select(sa.func.count()).select_from(AuditLog).where(AuditLog.action == action)
    )


# --------------------------------------------------------------------------- the tablet form


def test_tablet_form_has_26_items_in_4_groups_with_both_languages(client, login, world):
    case = _scheduled(world)
    login(world.li.user)
    response = client.get(f"/assessment/cases/{case.id}/record", headers=EN)
    assert response.status_code == 200
    page = _text(response)
    assert len(re.findall(r'<fieldset class="score-item', page)) == 26
    assert len(re.findall(r'<h2 id="dim-', page)) == 4
    radios = sum(item.max - item.min + 1 for item in instrument().items.values())
    assert len(re.findall(r'type="radio"', page)) == radios
    # English first, the Chinese name beside it, and what the scores mean.
    assert "Eating" in page and "进食" in page
    assert "Stairs" in page and "Independent (10-15 steps)" in page
    assert "Stupor or coma" in page and "Alert" in page
    assert 'name="csrf_token"' in page
    assert 'id="instrument-data"' in page and "/assessment/static/live_total.js" in page
    with client.get("/assessment/static/live_total.js") as script:
        assert script.status_code == 200 and b"careRiskThreshold" in script.data


def test_tablet_form_in_chinese_shows_chinese_first(client, login, world):
    case = _scheduled(world)
    login(world.li.user)
    page = _text(client.get(f"/assessment/cases/{case.id}/record"))
    assert re.search(r"进食\s*<span class=\"other-lang\" lang=\"en\">Eating</span>", page)
    assert "独立进食，没有呛咳" in page


def test_a_valid_submission_with_the_second_assessor_records_the_case(
    client, login, world, db_session
):
    case = _scheduled(world)
    login(world.li.user)
    response = client.post(
        f"/assessment/cases/{case.id}/record",
        data=_form(world, total=50, fee="80.50", diagnoses="f03.1"),
        headers=EN,
    )
    assert response.status_code == 302, _text(response)
    assert response.headers["Location"] == "/assessment/work"
    db_session.refresh(case)
    assert case.status == "recorded"
    assert case.total == 50 and case.base_level == "moderate"
    assert case.level == "severe" and case.adjustment_codes == ["psychiatric_diagnosis"]
    assert (case.assessor1_id, case.assessor2_id) == (world.li.id, world.zhao.id)
    assert case.fee_fen == 8050 and case.refundable_fee_fen == 8050
    assert case.diagnoses == "F03.1"
    page = _text(client.get("/assessment/work", headers=EN))
    assert "has been recorded: total 50" in page


def test_the_same_assessor_cannot_cosign(client, login, world, db_session):
    case = _scheduled(world)
    login(world.li.user)
    response = client.post(
        f"/assessment/cases/{case.id}/record",
        data=_form(world, cosigner="assessor0"),
        headers=EN,
    )
    assert response.status_code == 422
    page = _text(response)
    assert "Two different assessors must sign the assessment." in page
    assert 'id="cosigner-error"' in page
    db_session.refresh(case)
    assert case.status == "scheduled" and case.total is None
    assert _audit_actions(db_session, "assessment.record") == 0


def test_a_wrong_cosigner_password_saves_nothing_and_counts_as_a_failed_sign_in(
    client, login, world, db_session
):
    case = _scheduled(world)
    login(world.li.user)
    wrong = client.post(
        f"/assessment/cases/{case.id}/record",
        data=_form(world, password="not-the-password"),
        headers=EN,
    )
    assert wrong.status_code == 422
    assert "The username or password is not correct." in _text(wrong)
    assert "not-the-password" not in _text(wrong)  # a password is never sent back
    db_session.refresh(case)
    assert case.status == "scheduled" and case.total is None
    assert (
        db_session.scalar(
            sa.select(LoginThrottle.failures).where(
                LoginThrottle.username_key == "assessor1", LoginThrottle.client_key == "127.0.0.1"
            )
        )
        == 1
    )

    # An unknown name gets exactly the same answer: nothing tells which names exist.
    unknown = client.post(
        f"/assessment/cases/{case.id}/record",
        data=_form(world, cosigner="nobody.here", password="not-the-password"),
        headers=EN,
    )
    assert unknown.status_code == 422
    assert re.search(r'id="cosigner-error"[^>]*>([^<]*)<', _text(unknown)).group(1) == (
        re.search(r'id="cosigner-error"[^>]*>([^<]*)<', _text(wrong)).group(1)
    )


def test_the_cosigner_is_locked_out_after_too_many_wrong_passwords(
    client, login, world, db_session, app
):
    case = _scheduled(world)
    login(world.li.user)
    for _attempt in range(app.config["LOGIN_MAX_FAILURES"]):
        client.post(
            f"/assessment/cases/{case.id}/record",
            data=_form(world, password="not-the-password"),
            headers=EN,
        )
    locked = client.post(f"/assessment/cases/{case.id}/record", data=_form(world), headers=EN)
    assert locked.status_code == 422
    assert "Too many failed attempts" in _text(locked)
    db_session.refresh(case)
    assert case.status == "scheduled"


def test_a_score_out_of_range_is_named_and_what_was_entered_is_kept(
    client, login, world, db_session
):
    case = _scheduled(world)
    login(world.li.user)
    data = _form(world, items=items_with_total(50) | {"eating": 5}, diagnoses="F00")
    data["cosigner_username"] = "assessor1"
    response = client.post(f"/assessment/cases/{case.id}/record", data=data, headers=EN)
    assert response.status_code == 422
    page = _text(response)
    assert re.search(
        r'id="score-eating-error" role="alert">5 is outside the allowed range 0 to 4<', page
    )
    assert '<a href="#item-eating">Eating</a>: 5 is outside the allowed range 0 to 4' in page
    assert len(re.findall(r"\schecked>", page)) == 25  # every other score is still chosen
    assert 'value="F00"' in page and 'value="assessor1"' in page
    db_session.refresh(case)
    assert case.status == "scheduled" and case.total is None


def test_missing_items_and_bad_fields_are_shown_next_to_them(client, login, world, db_session):
    case = _scheduled(world)
    login(world.li.user)
    data = _form(world)
    del data["score-stairs"]
    response = client.post(f"/assessment/cases/{case.id}/record", data=data, headers=EN)
    assert response.status_code == 422
    assert re.search(
        r'id="score-stairs-error" role="alert">missing; give a score from 0 to 3<', _text(response)
    )

    for field, value, message in [
        ("fee", "80.555", "at most two decimals"),
        ("fee", "eighty", "at most two decimals"),
        ("fee", "", "Enter the amount in yuan"),
        ("fee", "2000", "The fee must be between 0 and 1,000 yuan."),
        ("assessed_on", "2025-13-01", "Enter a date as year-month-day"),
        ("assessed_on", (world.today + timedelta(days=1)).isoformat(), "cannot be in the future"),
        ("care_risk_events_30d", "many", "care-risk events must be a whole number"),
        ("diagnoses", "dementia", "ICD-10 code"),
    ]:
        response = client.post(
            f"/assessment/cases/{case.id}/record", data=_form(world, **{field: value}), headers=EN
        )
        assert response.status_code == 422, (field, value)
        assert message in _text(response), (field, value)
    db_session.refresh(case)
    assert case.status == "scheduled" and case.total is None


def test_an_assessor_of_another_agency_cannot_open_or_record(client, login, world, db_session):
    case = _scheduled(world)
    login(world.wu.user)
    assert client.get(f"/assessment/cases/{case.id}/record").status_code == 404
    response = client.post(
        f"/assessment/cases/{case.id}/record", data=_form(world, cosigner="assessor1")
    )
    assert response.status_code == 404
    db_session.refresh(case)
    assert case.status == "scheduled"
    assert "周" not in _text(client.get("/assessment/work"))


def test_a_suspended_agencys_assessor_cannot_record(client, login, world, db_session):
    case = _scheduled(world)
    set_agency_status(world.agency, "suspended", "complaint under investigation")
    login(world.li.user)
    page = _text(client.get(f"/assessment/cases/{case.id}/record", headers=EN))
    assert "certification is not active" in page
    response = client.post(f"/assessment/cases/{case.id}/record", data=_form(world), headers=EN)
    assert response.status_code == 422
    assert "The assessment agency is not certified and active." in _text(response)
    db_session.refresh(case)
    assert case.status == "scheduled" and case.total is None


def test_only_assessors_reach_the_form_and_only_for_open_visits(client, login, world, factory):
    case = _scheduled(world)
    login(factory.user("someone", roles=["elder"]))
    assert client.get(f"/assessment/cases/{case.id}/record").status_code == 403
    recorded = _scheduled(world, resident=factory.resident(world.heping))
    lifecycle.record(
        recorded,
        items=items_with_total(50),
        assessed_on=world.today,
        recorder=world.li,
        cosigner=world.zhao,
    )
    login(world.li.user)
    assert client.get(f"/assessment/cases/{recorded.id}/record").status_code == 409
    assert client.get("/assessment/cases/999999/record").status_code == 404


def test_a_returned_case_shows_the_reason_and_the_earlier_scores(
    client, login, world, take_through
):
    case = take_through(total=50, approve=False)
    lifecycle.return_for_correction(case, reviewer=world.approver, reason="bathing looks wrong")
    login(world.li.user)
    worklist = _text(client.get("/assessment/work", headers=EN))
    assert "bathing looks wrong" in worklist and f"/assessment/cases/{case.id}/record" in worklist
    page = _text(client.get(f"/assessment/cases/{case.id}/record", headers=EN))
    assert "bathing looks wrong" in page
    assert len(re.findall(r"\schecked>", page)) == 26
    response = client.post(f"/assessment/cases/{case.id}/record", data=_form(world, total=40))
    assert response.status_code == 302
    assert case.status == "recorded" and case.total == 40


def test_tablet_form_keeps_csrf_protection(csrf_client, world, db_session):
    case = _scheduled(world)
    token = TOKEN.search(_text(csrf_client.get("/login")))
    signed_in = csrf_client.post(
        "/login",
        data={"username": "assessor0", "password": PASSWORD, "csrf_token": token.group(1)},
    )
    assert signed_in.status_code == 302
    url = f"/assessment/cases/{case.id}/record"
    assert csrf_client.post(url, data=_form(world)).status_code == 400
    token = TOKEN.search(_text(csrf_client.get(url)))
    response = csrf_client.post(url, data=_form(world) | {"csrf_token": token.group(1)})
    assert response.status_code == 302
    db_session.refresh(case)
    assert case.status == "recorded"


# --------------------------------------------------------------------------- the worklist


def test_worklist_shows_own_agency_cases_masked_with_local_times(client, login, world, factory):
    mine = _scheduled(world)
    theirs = _scheduled(
        world,
        resident=factory.resident(world.shenhe, name="陈建国"),
        agency=world.other,
        actor=world.wu,
    )
    login(world.li.user)
    page = _text(client.get("/assessment/work", headers=EN))
    assert f'id="case-{mine.id}"' in page and f'id="case-{theirs.id}"' not in page
    assert world.elder.masked_name in page and world.elder.name not in page
    assert format_local(mine.scheduled_for) in page  # 15:00 in Shanghai
    assert f"{world.today.isoformat()} 15:00" in page


def test_the_agency_schedules_a_visit_in_shanghai_time(client, login, world, db_session):
    case = lifecycle.apply(world.elder, type="first", applied_by=world.officer, via="bureau")
    lifecycle.assign(case, world.agency)
    login(world.li.user)
    day = world.today + timedelta(days=2)
    url = f"/assessment/cases/{case.id}/schedule"
    response = client.post(url, data={"date": day.isoformat(), "time": "09:30"})
    assert response.status_code == 302
    db_session.refresh(case)
    assert case.status == "scheduled"
    assert case.scheduled_for == datetime.combine(day, time(9, 30), tzinfo=SHANGHAI)

    past = client.post(
        url,
        data={"date": (world.today - timedelta(days=3)).isoformat(), "time": "09:30"},
        headers=EN,
    )
    assert past.status_code == 422 and "The visit cannot be in the past." in _text(past)
    garbled = client.post(url, data={"date": "soon", "time": ""}, headers=EN)
    assert garbled.status_code == 422 and "Enter a time such as 09:30." in _text(garbled)
    db_session.refresh(case)
    assert case.scheduled_for == datetime.combine(day, time(9, 30), tzinfo=SHANGHAI)


def test_another_agency_cannot_schedule(client, login, world, db_session):
    case = lifecycle.apply(world.elder, type="first", applied_by=world.officer, via="bureau")
    lifecycle.assign(case, world.agency)
    login(world.wu.user)
    response = client.post(
        f"/assessment/cases/{case.id}/schedule",
        data={"date": world.today.isoformat(), "time": "23:59"},
    )
    assert response.status_code == 404
    db_session.refresh(case)
    assert case.status == "assigned"


# --------------------------------------------------------------------------- bureau


def test_the_approver_approves_from_the_review_queue(client, login, world, take_through):
    case = take_through(total=50, approve=False)
    assert not eligibility_on(world.elder, world.today).eligible
    login(world.approver)
    page = _text(client.get("/assessment/queue/review", headers=EN))
    assert f'id="case-{case.id}"' in page
    for shown in ("Moderate impairment", "赵敏", "李芳", "¥80.00", "50 / 90", "Self-care"):
        assert shown in page, shown
    response = client.post(f"/assessment/cases/{case.id}/approve")
    assert response.status_code == 302
    assert case.status == "approved"
    result = eligibility_on(world.elder, world.today)
    assert result.eligible and result.level == "moderate"
    assert f'id="case-{case.id}"' not in _text(client.get("/assessment/queue/review"))


def test_a_district_approver_sees_only_their_district(
    client, login, world, take_through, factory, db_session
):
    heping_case = take_through(total=50, approve=False)
    shenhe_elder = factory.resident(world.shenhe, name="陈建国")
    shenhe_case = take_through(shenhe_elder, total=40, approve=False)
    login(factory.user("shenhe.approver", roles=["bureau_approver"], district=world.shenhe))
    page = _text(client.get("/assessment/queue/review"))
    assert f'id="case-{shenhe_case.id}"' in page
    assert f'id="case-{heping_case.id}"' not in page and world.elder.name not in page
    assert client.post(f"/assessment/cases/{heping_case.id}/approve").status_code == 404
    assert client.get(f"/assessment/residents/{world.elder.id}").status_code == 404
    db_session.refresh(heping_case)
    assert heping_case.status == "recorded"


def test_returning_a_case_needs_a_reason(client, login, world, take_through, db_session):
    case = take_through(total=50, approve=False)
    login(world.approver)
    response = client.post(f"/assessment/cases/{case.id}/return", data={"reason": "  "}, headers=EN)
    assert response.status_code == 422
    assert "Say what the agency must correct." in _text(response)
    db_session.refresh(case)
    assert case.status == "recorded"
    response = client.post(
        f"/assessment/cases/{case.id}/return", data={"reason": "bathing score unclear"}
    )
    assert response.status_code == 302
    db_session.refresh(case)
    assert case.status == "returned" and case.review_note == "bathing score unclear"


def test_only_approvers_review(client, login, world, take_through):
    case = take_through(total=50, approve=False)
    login(world.officer)
    assert client.get("/assessment/queue/review").status_code == 403
    assert client.post(f"/assessment/cases/{case.id}/approve").status_code == 403
    assert case.status == "recorded"


def test_an_officer_applies_on_an_elders_behalf(client, login, world, db_session):
    login(world.officer)
    found = client.post(
        "/assessment/apply/find", data={"id_number": world.elder.id_number}, headers=EN
    )
    assert found.headers["Location"] == f"/assessment/apply?resident_id={world.elder.id}"
    page = client.get(found.headers["Location"], headers=EN)
    assert page.status_code == 200 and world.elder.name in _text(page)
    missing = client.post(
        "/assessment/apply/find", data={"id_number": "110101190001011234"}, headers=EN
    )
    assert missing.status_code == 404
    response = client.post(
        "/assessment/apply",
        data={"resident_id": world.elder.id, "type": "first", "note": "came to the office"},
    )
    assert response.status_code == 302
    case = db_session.scalar(sa.select(Assessment).where(Assessment.resident_id == world.elder.id))
    assert (case.status, case.applied_via, case.application_note) == (
        "applied",
        "bureau",
        "came to the office",
    )
    again = client.post(
        "/assessment/apply", data={"resident_id": world.elder.id, "type": "first"}, headers=EN
    )
    assert again.status_code == 422 and "already in progress" in _text(again)


def test_a_reassessment_must_name_the_disputed_result(client, login, world, take_through):
    login(world.officer)
    response = client.post(
        "/assessment/apply",
        data={"resident_id": world.elder.id, "type": "reassessment"},
        headers=EN,
    )
    assert response.status_code == 422
    assert "must name the approved result the elder disputes" in _text(response)


def test_the_officer_assigns_from_the_queue_to_an_active_agency(
    client, login, world, db_session, factory
):
    case = lifecycle.apply(world.elder, type="first", applied_by=world.officer, via="bureau")
    set_agency_status(world.other, "suspended", "late reports")
    login(world.officer)
    page = _text(client.get("/assessment/queue/assign", headers=EN))
    assert f'id="case-{case.id}"' in page
    assert f'<option value="{world.agency.id}"' in page
    assert f'<option value="{world.other.id}"' not in page  # suspended: not offered
    refused = client.post(f"/assessment/cases/{case.id}/assign", data={"agency_id": world.other.id})
    assert refused.status_code == 422
    db_session.refresh(case)
    assert case.status == "applied"
    response = client.post(
        f"/assessment/cases/{case.id}/assign", data={"agency_id": world.agency.id}
    )
    assert response.status_code == 302
    db_session.refresh(case)
    assert case.status == "assigned" and case.agency_id == world.agency.id


def test_cancelling_an_application_needs_a_reason(client, login, world, db_session):
    case = lifecycle.apply(world.elder, type="first", applied_by=world.officer, via="bureau")
    login(world.officer)
    assert (
        client.post(f"/assessment/cases/{case.id}/cancel", data={"reason": ""}).status_code == 422
    )
    db_session.refresh(case)
    assert case.status == "applied"
    response = client.post(
        f"/assessment/cases/{case.id}/cancel", data={"reason": "duplicate", "confirm": "1"}
    )
    assert response.status_code == 302
    db_session.refresh(case)
    assert case.status == "cancelled"


def test_the_approver_suspends_and_reinstates_an_agency_with_a_reason(
    client, login, world, db_session
):
    login(world.approver)
    url = f"/assessment/agencies/{world.agency.id}/status"
    no_reason = client.post(url, data={"status": "suspended", "reason": ""}, headers=EN)
    assert no_reason.status_code == 422
    assert "Give the reason for this decision." in _text(no_reason)
    db_session.refresh(world.agency)
    assert world.agency.status == "active"
    decision = {"status": "suspended", "reason": "complaint", "confirm": "1"}
    suspended = client.post(url, data=decision)
    assert suspended.status_code == 302
    db_session.refresh(world.agency)
    assert world.agency.status == "suspended"
    page = _text(client.get("/assessment/agencies", headers=EN))
    assert "complaint" in page and "Reinstate" in page
    assert client.post(url, data={"status": "active", "reason": "cleared"}).status_code == 302
    db_session.refresh(world.agency)
    assert world.agency.status == "active"

    login(world.officer)
    assert client.post(url, data={"status": "revoked", "reason": "x"}).status_code == 403
    assert client.get("/assessment/agencies").status_code == 200


def test_the_eligibility_page_explains_and_takes_death_and_exclusions(
    client, login, world, take_through, db_session
):
    case = take_through(total=50)
    login(world.officer)
    page = _text(client.get(f"/assessment/residents/{world.elder.id}", headers=EN))
    assert "Eligible for the voucher" in page and "Moderate impairment" in page
    assert case.valid_until.isoformat() in page

    start = world.today - timedelta(days=1)
    response = client.post(
        f"/assessment/residents/{world.elder.id}/exclusions",
        data={
            "kind": "extremely_poor_support",
            "start_date": start.isoformat(),
            "source": "X1",
            "confirm": "1",
        },
    )
    assert response.status_code == 302
    page = _text(client.get(f"/assessment/residents/{world.elder.id}", headers=EN))
    assert "Not eligible for the voucher" in page
    assert "The person receives support for extremely poor persons." in page

    exclusion = db_session.scalar(
        sa.select(Exclusion).where(Exclusion.resident_id == world.elder.id)
    )
    bad_end = client.post(
        f"/assessment/residents/{world.elder.id}/exclusions/{exclusion.id}/end",
        data={"end_date": (start - timedelta(days=5)).isoformat()},
        headers=EN,
    )
    assert bad_end.status_code == 422 and "The end is before the start." in _text(bad_end)
    ended = client.post(
        f"/assessment/residents/{world.elder.id}/exclusions/{exclusion.id}/end",
        data={"end_date": start.isoformat()},
    )
    assert ended.status_code == 302
    assert eligibility_on(world.elder, world.today).eligible

    future = client.post(
        f"/assessment/residents/{world.elder.id}/death",
        data={"date_of_death": (world.today + timedelta(days=1)).isoformat()},
        headers=EN,
    )
    assert future.status_code == 422 and "cannot be in the future" in _text(future)
    died = client.post(
        f"/assessment/residents/{world.elder.id}/death",
        data={"date_of_death": world.today.isoformat(), "confirm": "1"},
    )
    assert died.status_code == 302
    page = _text(client.get(f"/assessment/residents/{world.elder.id}", headers=EN))
    assert "The register records the person as deceased." in page


def test_an_approver_reads_the_eligibility_page_but_cannot_change_it(client, login, world):
    login(world.approver)
    page = _text(client.get(f"/assessment/residents/{world.elder.id}", headers=EN))
    assert "There is no valid ability assessment." in page
    assert "Record a death" not in page
    response = client.post(
        f"/assessment/residents/{world.elder.id}/death",
        data={"date_of_death": world.today.isoformat()},
    )
    assert response.status_code == 403


def test_find_a_resident_by_id_number(client, login, world):
    login(world.officer)
    number = world.elder.id_number.lower()
    found = client.post("/assessment/residents/find", data={"id_number": number})
    assert found.status_code == 302
    assert found.headers["Location"] == f"/assessment/residents/{world.elder.id}"
    assert client.post("/assessment/residents/find", data={"id_number": "123"}).status_code == 404


# --------------------------------------------------------------------------- elders, families


def test_the_elder_sees_level_and_valid_until(client, login, world, take_through, factory):
    case = take_through(total=50)
    elder = factory.user("wang", roles=["elder"], resident=world.elder)
    login(elder)
    page = _text(client.get("/assessment/my", headers=EN))
    assert "Moderate impairment" in page
    assert case.valid_until.isoformat() in page
    due = case.valid_until - timedelta(days=30)
    assert f"You can apply from {due.isoformat()}" in page
    assert "You can receive the eldercare voucher." in page
    assert "Apply for the next assessment" not in page  # not due yet


def test_the_elders_page_shows_the_instruments_chinese_level_in_big_type(
    client, login, world, take_through, factory
):
    take_through(total=30)
    login(factory.user("wang", roles=["elder"], resident=world.elder))
    page = _text(client.get("/assessment/my"))
    assert re.search(r'class="level-big"[^>]*>能力重度受损（重度失能）<', page)


def test_a_family_agent_sees_the_linked_elder_and_can_ask_for_a_reassessment(
    client, login, world, take_through, factory, db_session
):
    case = take_through(total=70)  # mild: not eligible
    agent = factory.user("zhang", roles=["family_agent"])
    stranger = factory.resident(world.heping, name="路人甲")
    db_session.add(
        FamilyLink(
            agent_user_id=agent.id,
            resident_id=world.elder.id,
            relationship="child",
            consent_date=date(2025, 6, 20),
        )
    )
    db_session.flush()
    login(agent)
    page = _text(client.get("/assessment/my", headers=EN))
    assert world.elder.name in page and "Mild impairment" in page
    assert "The assessed level is below the level the programme covers." in page
    assert stranger.name not in page

    response = client.post(
        f"/assessment/my/{world.elder.id}/apply",
        data={"type": "reassessment", "disputed_assessment_id": case.id},
    )
    assert response.status_code == 302
    opened = db_session.scalar(
        sa.select(Assessment).where(
            Assessment.resident_id == world.elder.id, Assessment.status == "applied"
        )
    )
    assert (opened.type, opened.applied_via, opened.disputed_assessment_id) == (
        "reassessment",
        "family_agent",
        case.id,
    )
    assert "An assessment is in progress" in _text(client.get("/assessment/my", headers=EN))
    assert (
        client.post(f"/assessment/my/{stranger.id}/apply", data={"type": "first"}).status_code
        == 404
    )


def test_an_elder_without_an_assessment_applies_for_one(client, login, world, factory, db_session):
    elder = factory.user("wang", roles=["elder"], resident=world.elder)
    login(elder)
    page = _text(client.get("/assessment/my", headers=EN))
    assert "Not assessed yet" in page and "Apply for an assessment" in page
    response = client.post(f"/assessment/my/{world.elder.id}/apply", data={"type": "first"})
    assert response.status_code == 302
    case = db_session.scalar(sa.select(Assessment).where(Assessment.resident_id == world.elder.id))
    assert (case.type, case.applied_via, case.applied_by_user_id) == ("first", "self", elder.id)
    again = client.post(
        f"/assessment/my/{world.elder.id}/apply", data={"type": "first"}, headers=EN
    )
    assert again.status_code == 422 and "already in progress" in _text(again)


def test_pages_need_the_right_role(client, login, world, factory):
    assert client.get("/assessment/my").status_code == 302  # signed out: to the login page
    login(factory.user("wang", roles=["elder"], resident=world.elder))
    assert client.get("/assessment/work").status_code == 403
    assert client.get("/assessment/queue/assign").status_code == 403
    assert client.get(f"/assessment/residents/{world.elder.id}").status_code == 403
    assert client.get("/assessment/").status_code == 200


# --------------------------------------------------------------------------- pieces


def test_every_item_has_one_meaning_per_score():
    for code, item in instrument().items.items():
        meanings = SCORE_MEANINGS[code]
        assert len(meanings) == item.max - item.min + 1, code
        assert all(m.zh and m.en for m in meanings), code
    assert set(SCORE_MEANINGS) == set(instrument().items)


def test_an_exclusion_of_another_resident_cannot_be_ended_here(client, login, world, factory):
    other = factory.resident(world.heping)
    exclusion = add_exclusion(other, "basic_upgrade_project", world.today)
    login(world.officer)
    response = client.post(
        f"/assessment/residents/{world.elder.id}/exclusions/{exclusion.id}/end",
        data={"end_date": world.today.isoformat()},
    )
    assert response.status_code == 404
