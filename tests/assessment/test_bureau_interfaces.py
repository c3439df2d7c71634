"""The bureau's pages of issue 10: a move out of the city (item 7), eligibility policy
versions (item 8), assessment-fee refunds (item 11), one decision for many recorded cases
(item 13)."""

from __future__ import annotations

import html
from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from assessment.conflicts import register_service_history
from assessment.eligibility import eligibility_on
from assessment.models import Assessment, EligibilityEvent, EligibilityPolicy, FeeRefund
from eldercare.audit import AuditLog

EN = {"Accept-Language": "en"}
ZH = {"Accept-Language": "zh-CN"}


def _text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def _audits(db_session, action: str, object_id=None) -> int:
    statement = sa.select(sa.func.count()).select_from(AuditLog).where(AuditLog.action == action)
    if object_id is not None:
        statement = statement.where(AuditLog.object_id == str(object_id))
    return db_session.scalar(statement)


def _events(db_session, resident_id: int, kind: str) -> list[EligibilityEvent]:
    return db_session.scalars(
        sa.select(EligibilityEvent).where(
            EligibilityEvent.resident_id == resident_id, EligibilityEvent.kind == kind
        )
    ).all()


# --------------------------------------------------------------------------- item 7: moving out


def test_the_officer_records_a_move_in_the_future_and_vouchers_stop_after_it(
    client, login, world, take_through, db_session
):
    take_through(total=50)
    login(world.officer)
    moved = world.today + timedelta(days=40)
    response = client.post(
        f"/assessment/residents/{world.elder.id}/move-out",
        data={"moved_out_on": moved.isoformat(), "confirm": "1"},
        headers=EN,
    )
    assert response.status_code == 302
    db_session.refresh(world.elder)
    assert world.elder.moved_out_on == moved
    (event,) = _events(db_session, world.elder.id, "moved_out")
    assert event.effective_on == moved
    assert _audits(db_session, "resident.move_out", world.elder.id) == 1
    assert eligibility_on(world.elder.id, moved - timedelta(days=1)).eligible
    assert eligibility_on(world.elder.id, moved).reason_codes == ["not_resident"]
    page = _text(client.get(f"/assessment/residents/{world.elder.id}", headers=EN))
    assert moved.isoformat() in page and "Record a move out of the city" not in page


@pytest.mark.parametrize(
    ("value", "headers", "message"),
    [
        ("", EN, "Enter a date."),
        ("15/01/2026", EN, "Enter a date as year-month-day, for example 2025-07-01."),
        ("1900-01-01", EN, "The date of the move is before the person's birth."),
        ("2100-01-01", EN, "A move can be recorded at most a year ahead."),
        ("1900-01-01", ZH, "迁出日期早于本人出生日期。"),
        ("2100-01-01", ZH, "迁出日期最多只能提前一年登记。"),
    ],
)
def test_a_bad_move_date_is_refused_in_the_readers_language_and_changes_nothing(
    client, login, world, db_session, value, headers, message
):
    login(world.officer)
    before = _audits(db_session, "resident.move_out")
    response = client.post(
        f"/assessment/residents/{world.elder.id}/move-out",
        data={"moved_out_on": value},
        headers=headers,
    )
    assert response.status_code == 422
    assert message in _text(response)
    db_session.refresh(world.elder)
    assert world.elder.moved_out_on is None
    assert _audits(db_session, "resident.move_out") == before
    assert _events(db_session, world.elder.id, "moved_out") == []


def test_a_second_move_is_refused_and_other_districts_look_missing(
    client, login, world, db_session
):
    login(world.officer)
    first = client.post(
        f"/assessment/residents/{world.elder.id}/move-out",
        data={"moved_out_on": world.today.isoformat(), "confirm": "1"},
    )
    assert first.status_code == 302
    again = client.post(
        f"/assessment/residents/{world.elder.id}/move-out",
        data={"moved_out_on": (world.today + timedelta(days=3)).isoformat()},
        headers=EN,
    )
    assert again.status_code == 422
    assert f"A move out of the city on {world.today.isoformat()} is already recorded." in _text(
        again
    )
    assert len(_events(db_session, world.elder.id, "moved_out")) == 1

    shenhe_officer = world.factory.user(roles=["bureau_officer"], district=world.shenhe)
    other = world.factory.resident(world.heping, birth=date(1941, 2, 3))
    login(shenhe_officer)
    response = client.post(
        f"/assessment/residents/{other.id}/move-out",
        data={"moved_out_on": world.today.isoformat()},
    )
    assert response.status_code == 404
    db_session.refresh(other)
    assert other.moved_out_on is None


# --------------------------------------------------------------------------- item 8: policy


def _policy_form(day: date, **changes) -> dict:
    return {
        "effective_from": day.isoformat(),
        "min_age": "60",
        "eligible_levels": ["moderate", "severe", "complete"],
        "assessment_validity_months": "12",
        "fee_refund_cap": "120",
        "conflict_lookback_months": "12",
        "expiry_reminder_days": "30",
        "note": "沈民发〔2026〕12号",
    } | changes


def _versions(db_session) -> list[EligibilityPolicy]:
    return db_session.scalars(
        sa.select(EligibilityPolicy).order_by(EligibilityPolicy.effective_from)
    ).all()


def test_the_city_approver_adds_a_dated_version_and_the_previous_one_ends_there(
    client, login, world, take_through, db_session
):
    take_through(total=50)  # moderate
    login(world.approver)
    start = world.today + timedelta(days=10)
    response = client.post(
        "/assessment/policies",
        data=_policy_form(start, eligible_levels=["severe", "complete"], confirm="1"),
        headers=EN,
    )
    assert response.status_code == 302, _text(response)
    *_, previous, added = _versions(db_session)
    assert previous.effective_to == start and added.effective_to is None
    assert (added.effective_from, added.eligible_levels, added.fee_refund_cap_fen) == (
        start,
        "severe complete",
        12_000,
    )
    assert added.created_by_user_id == world.approver.id
    assert _audits(db_session, "eligibility_policy.add", added.id) == 1
    # The rule changes on its date, not before.
    assert eligibility_on(world.elder.id, start - timedelta(days=1)).eligible
    assert eligibility_on(world.elder.id, start).reason_codes == ["level_below_threshold"]
    page = _text(client.get("/assessment/policies", headers=EN))
    assert f"From {start.isoformat()}" in page and "沈民发〔2026〕12号" in page


@pytest.mark.parametrize(
    ("change", "headers", "field_message"),
    [
        ({"effective_from": "today"}, EN, "A new rule starts tomorrow at the earliest."),
        ({"effective_from": "today"}, ZH, "新规则最早从明天起生效。"),
        ({"effective_from": "2026-02-30"}, EN, "Enter a date as year-month-day"),
        ({"min_age": "sixty"}, EN, "Enter the minimum age in whole years."),
        ({"min_age": "6"}, EN, "The minimum age must be 50 to 100."),
        ({"eligible_levels": []}, EN, "Choose the assessed levels that qualify."),
        ({"eligible_levels": ["intact"]}, ZH, "请选择符合条件的评估等级。"),
        ({"fee_refund_cap": "-5"}, EN, "Enter the amount in yuan"),
        ({"assessment_validity_months": "0"}, EN, "An assessment stays valid 1 to 60 months."),
        ({"note": "  "}, EN, "Name the document that sets this rule."),
    ],
)
def test_a_bad_version_is_refused_with_the_reason_and_changes_nothing(
    client, login, world, db_session, change, headers, field_message
):
    login(world.approver)
    before = [(p.id, p.effective_to) for p in _versions(db_session)]
    form = _policy_form(world.today + timedelta(days=10), **change)
    if form["effective_from"] == "today":
        form["effective_from"] = world.today.isoformat()
    response = client.post("/assessment/policies", data=form, headers=headers)
    assert response.status_code == 422
    assert field_message in _text(response)
    db_session.expire_all()
    assert [(p.id, p.effective_to) for p in _versions(db_session)] == before


def test_an_overlapping_version_is_refused_and_only_the_city_may_add(
    client, login, world, db_session
):
    login(world.approver)
    later = world.today + timedelta(days=30)
    added = client.post("/assessment/policies", data=_policy_form(later, confirm="1"))
    assert added.status_code == 302
    count = len(_versions(db_session))
    earlier = client.post(
        "/assessment/policies", data=_policy_form(later - timedelta(days=5)), headers=EN
    )
    assert earlier.status_code == 422
    assert f"A version starting on {later.isoformat()} already exists" in _text(earlier)
    same = client.post("/assessment/policies", data=_policy_form(later), headers=ZH)
    assert same.status_code == 422
    assert len(_versions(db_session)) == count

    district_approver = world.factory.user(roles=["bureau_approver"], district=world.heping)
    login(district_approver)
    page = _text(client.get("/assessment/policies", headers=EN))
    assert "Add a version" not in page
    refused = client.post(
        "/assessment/policies", data=_policy_form(later + timedelta(days=30)), headers=EN
    )
    assert refused.status_code == 403
    assert len(_versions(db_session)) == count


# --------------------------------------------------------------------------- item 11: refunds


def test_approval_records_the_refund_owed_and_the_bureau_lists_it_by_month_and_district(
    client, login, world, take_through, db_session
):
    moderate = take_through(total=50)  # fee 80 yuan, refundable in full
    mild = take_through(world.factory.resident(world.heping, birth=date(1940, 1, 1)), total=80)
    shenhe_elder = world.factory.resident(world.shenhe, birth=date(1939, 5, 6))
    severe = take_through(shenhe_elder, total=30)
    refunds = {r.assessment_id: r for r in db_session.scalars(sa.select(FeeRefund))}
    assert mild.id not in refunds  # nothing owed below moderate
    assert refunds[moderate.id].amount_fen == 8000
    assert refunds[moderate.id].resident_id == world.elder.id
    assert refunds[moderate.id].district_id == world.heping.id
    assert (refunds[severe.id].owed_on, refunds[severe.id].status) == (world.today, "owed")

    login(world.approver)
    month = world.today.strftime("%Y-%m")
    page = _text(client.get(f"/assessment/fee-refunds?month={month}", headers=EN))
    assert "2 refunds, ¥160.00 in all." in page
    assert world.elder.masked_id_number in page and shenhe_elder.masked_id_number in page
    only_heping = _text(
        client.get(f"/assessment/fee-refunds?month={month}&district=210102", headers=EN)
    )
    assert world.elder.masked_id_number in only_heping
    assert shenhe_elder.masked_id_number not in only_heping
    other_month = _text(client.get("/assessment/fee-refunds?month=2020-01", headers=EN))
    assert "No refunds match." in other_month

    district_officer = world.factory.user(roles=["bureau_officer"], district=world.shenhe)
    login(district_officer)
    scoped = _text(client.get("/assessment/fee-refunds", headers=EN))
    assert shenhe_elder.masked_id_number in scoped
    assert world.elder.masked_id_number not in scoped

    bad = client.get("/assessment/fee-refunds?month=2025-13", headers=EN)
    assert bad.status_code == 422
    assert "Enter the month as year-month, for example 2025-07." in _text(bad)
    bad_zh = client.get("/assessment/fee-refunds?district=999999", headers=ZH)
    assert bad_zh.status_code == 422 and "没有与此区划代码对应的区。" in _text(bad_zh)


# --------------------------------------------------------------------------- item 13: bulk


@pytest.fixture
def recorded(world, take_through):
    """Three recorded cases of three elders, waiting for review."""
    elders = [
        world.factory.resident(world.heping, birth=date(1938 + n, 2, 3), name=f"老人{n}")
        for n in range(3)
    ]
    return [take_through(elder, total=50, approve=False) for elder in elders]


def test_the_bulk_list_shows_the_checks_and_one_decision_approves_the_passing_cases(
    app, client, login, world, recorded, db_session, monkeypatch
):
    conflicted = recorded[1]
    served_on = world.today - timedelta(days=30)
    monkeypatch.setitem(app.extensions, "assessment.service_history_sources", [])
    register_service_history(
        app, lambda code, rid, since: served_on if rid == conflicted.resident_id else None
    )
    login(world.approver)
    page = _text(client.get("/assessment/queue/bulk", headers=EN))
    for case in recorded:
        assert f'id="case-{case.id}"' in page
    assert f'id="case-{conflicted.id}" data-passes="no"' in page
    assert "This agency served the elder in the last 12 months" in page

    response = client.post(
        "/assessment/queue/bulk",
        data={"case_id": [str(c.id) for c in recorded], "decision": "approve"},
        headers=EN,
    )
    assert response.status_code == 200
    text = _text(response)
    assert f'data-case="{conflicted.id}" data-outcome="refused"' in text
    db_session.expire_all()
    statuses = [db_session.get(Assessment, c.id).status for c in recorded]
    assert statuses == ["approved", "recorded", "approved"]
    for case in (recorded[0], recorded[2]):
        assert _audits(db_session, "assessment.approve", case.id) == 1
    assert _audits(db_session, "assessment.approve", conflicted.id) == 0
    assert (
        db_session.scalar(sa.select(FeeRefund.id).where(FeeRefund.assessment_id == conflicted.id))
        is None
    )


def test_a_bulk_return_needs_a_reason_and_bad_selections_change_nothing(
    client, login, world, recorded, db_session
):
    login(world.approver)
    ids = [str(c.id) for c in recorded]
    for data, message in (
        ({"case_id": ids, "decision": "return"}, "Say what the agency must correct."),
        ({"case_id": ids, "decision": "burn"}, "Choose approve or return."),
        ({"decision": "approve"}, "Select between 1 and 200 cases."),
        ({"case_id": ["x1"], "decision": "approve"}, "Select between 1 and 200 cases."),
    ):
        response = client.post("/assessment/queue/bulk", data=data, headers=EN)
        assert response.status_code == 422 and message in _text(response), message
    zh = client.post("/assessment/queue/bulk", data={"decision": "approve"}, headers=ZH)
    assert zh.status_code == 422 and "请选择 1 到 200 个案件。" in _text(zh)
    db_session.expire_all()
    assert {db_session.get(Assessment, c.id).status for c in recorded} == {"recorded"}

    returned = client.post(
        "/assessment/queue/bulk",
        data={"case_id": ids[:2], "decision": "return", "reason": "签名页缺失"},
    )
    assert returned.status_code == 200
    db_session.expire_all()
    assert [db_session.get(Assessment, c.id).status for c in recorded] == [
        "returned",
        "returned",
        "recorded",
    ]


def test_a_district_approver_decides_only_their_district(
    client, login, world, take_through, recorded, db_session
):
    shenhe_case = take_through(
        world.factory.resident(world.shenhe, birth=date(1940, 4, 4)), approve=False
    )
    approver = world.factory.user(roles=["bureau_approver"], district=world.shenhe)
    login(approver)
    page = _text(client.get("/assessment/queue/bulk", headers=EN))
    assert f'id="case-{shenhe_case.id}"' in page and f'id="case-{recorded[0].id}"' not in page
    response = client.post(
        "/assessment/queue/bulk",
        data={"case_id": [str(shenhe_case.id), str(recorded[0].id)], "decision": "approve"},
        headers=EN,
    )
    assert f'data-case="{recorded[0].id}" data-outcome="refused"' in _text(response)
    db_session.expire_all()
    assert db_session.get(Assessment, shenhe_case.id).status == "approved"
    assert db_session.get(Assessment, recorded[0].id).status == "recorded"
