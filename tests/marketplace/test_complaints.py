"""Complaints about providers and their handling by the bureau (marketplace.complaints)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from eldercare.audit import AuditLog
from eldercare.errors import InvalidInput, PermissionDenied
from eldercare.notifications import Notification
from marketplace import complaints
from marketplace.errors import InvalidTransition
from marketplace.models import Complaint
from tests.marketplace.test_bookings import another_elder, request_booking


def _counts(session):
    return tuple(
        session.scalar(sa.select(sa.func.count()).select_from(model))
        for model in (Complaint, AuditLog, Notification)
    )


def _refused(session, error, call):
    before = _counts(session)
    with pytest.raises(error) as excinfo:
        call()
    assert _counts(session) == before, "a refused complaint step changed something"
    return excinfo.value


def _actions(session, complaint):
    return session.scalars(
        sa.select(AuditLog.action)
        .where(AuditLog.object_type == "complaints", AuditLog.object_id == str(complaint.id))
        .order_by(AuditLog.id)
    ).all()


def test_an_elder_complains_about_a_booking(market, db_session):
    booking = request_booking(market)
    complaint = complaints.file_complaint(
        market.station, by=market.elder_user, text="  来晚了两个小时  ", booking=booking
    )
    assert (complaint.status, complaint.text, complaint.booking_id) == (
        "received",
        "来晚了两个小时",
        booking.id,
    )
    assert _actions(db_session, complaint) == ["complaint.file"]


def test_a_family_agent_complains_without_a_booking(market):
    complaint = complaints.file_complaint(market.home, by=market.son, text="电话总是打不通")
    assert complaint.booking_id is None and complaint.filed_by_user_id == market.son.id


def test_refused_complaints_save_nothing(market, db_session):
    booking = request_booking(market)
    error = _refused(
        db_session,
        InvalidInput,
        lambda: complaints.file_complaint(
            market.home, by=market.elder_user, text="x", booking=booking
        ),
    )  # another provider's
    assert "booking_id" in error.details
    _, neighbour = another_elder(market)
    _refused(
        db_session,
        PermissionDenied,
        lambda: complaints.file_complaint(market.station, by=neighbour, text="x", booking=booking),
    )  # another elder's booking
    _refused(
        db_session,
        PermissionDenied,
        lambda: complaints.file_complaint(
            market.station, by=market.home_admin, text="a competitor's complaint"
        ),
    )
    error = _refused(
        db_session,
        InvalidInput,
        lambda: complaints.file_complaint(market.station, by=market.elder_user, text="   "),
    )
    assert "text" in error.details
    _refused(
        db_session,
        InvalidInput,
        lambda: complaints.file_complaint(market.station, by=market.elder_user, text="长" * 2001),
    )


def test_received_investigating_upheld_and_the_provider_is_told(market, db_session):
    complaint = complaints.file_complaint(market.station, by=market.elder_user, text="没来")
    _refused(
        db_session,
        InvalidTransition,
        lambda: complaints.uphold(complaint, by=market.officer, resolution="skipped investigating"),
    )
    _refused(
        db_session, PermissionDenied, lambda: complaints.investigate(complaint, by=market.approver)
    )
    shenhe_officer = market.factory.user(roles=["bureau_officer"], district=market.shenhe)
    _refused(
        db_session, PermissionDenied, lambda: complaints.investigate(complaint, by=shenhe_officer)
    )  # the station is in Heping

    complaints.investigate(complaint, by=market.officer)
    assert complaint.status == "investigating"
    _refused(
        db_session, InvalidTransition, lambda: complaints.investigate(complaint, by=market.officer)
    )
    error = _refused(
        db_session,
        InvalidInput,
        lambda: complaints.uphold(complaint, by=market.officer, resolution=" "),
    )
    assert "resolution" in error.details
    _refused(
        db_session,
        InvalidInput,
        lambda: complaints.close(complaint, by=market.officer, decision="maybe", resolution="x"),
    )

    complaints.uphold(complaint, by=market.officer, resolution="护理员未按约上门，责令整改")
    assert complaint.status == "upheld" and complaint.closed_at is not None
    assert complaint.handled_by_user_id == market.officer.id
    assert _actions(db_session, complaint) == [
        "complaint.file",
        "complaint.investigate",
        "complaint.uphold",
    ]
    message = db_session.scalar(
        sa.select(Notification).where(
            Notification.dedupe_key == f"complaint-upheld:{complaint.id}:{market.station_admin.id}"
        )
    )
    assert message is not None and "责令整改" in message.body
    _refused(
        db_session,
        InvalidTransition,
        lambda: complaints.dismiss(complaint, by=market.officer, resolution="changed my mind"),
    )


def test_a_dismissed_complaint_tells_the_provider_nothing(market, db_session):
    complaint = complaints.file_complaint(market.home, by=market.son, text="态度不好")
    heping_officer = market.factory.user(roles=["bureau_officer"], district=market.heping)
    complaints.investigate(complaint, by=heping_officer)
    complaints.dismiss(complaint, by=heping_officer, resolution="经核实，服务符合约定")
    assert complaint.status == "dismissed"
    assert not db_session.scalar(
        sa.select(Notification.id).where(Notification.dedupe_key.like("complaint-upheld:%"))
    )


# --------------------------------------------------------------------------- pages

EN = {"Accept-Language": "en"}


def _text(response) -> str:
    return response.get_data(as_text=True)


def test_an_elder_files_a_complaint_on_the_page(market, client, login, db_session):
    booking = request_booking(market)
    login(market.elder_user)
    url = f"/marketplace/complaints/new?provider_id={market.station.id}&booking_id={booking.id}"
    page = client.get(url, headers=EN)
    body = _text(page)
    assert page.status_code == 200 and market.station.name in body
    assert f'<option value="{booking.id}" selected>' in body
    assert 'name="csrf_token"' in body

    empty = client.post(
        "/marketplace/complaints/new",
        headers=EN,
        data={"provider_id": market.station.id, "booking_id": booking.id, "text": " "},
    )
    assert empty.status_code == 422 and 'id="text-error"' in _text(empty)
    assert db_session.scalar(sa.select(sa.func.count()).select_from(Complaint)) == 0

    response = client.post(
        "/marketplace/complaints/new",
        headers=EN,
        data={"provider_id": market.station.id, "booking_id": booking.id, "text": "没有按时来"},
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/marketplace/complaints"
    complaint = db_session.scalar(sa.select(Complaint))
    assert (complaint.booking_id, complaint.text) == (booking.id, "没有按时来")
    mine = _text(client.get("/marketplace/complaints", headers=EN))
    assert "没有按时来" in mine and "Received, waiting for the bureau" in mine


def test_complaint_pages_refuse_unknown_providers_and_other_roles(market, client, login):
    login(market.elder_user)
    assert client.get("/marketplace/complaints/new?provider_id=999999").status_code == 404
    assert client.get("/marketplace/complaints/new").status_code == 404
    assert client.get("/marketplace/bureau/complaints").status_code == 403
    client.post("/logout")
    login(market.station_admin)
    assert (
        client.get(f"/marketplace/complaints/new?provider_id={market.home.id}").status_code == 403
    )


def test_the_bureau_handles_a_complaint_on_its_queue(market, client, login, db_session):
    complaint = complaints.file_complaint(market.station, by=market.elder_user, text="没来")
    login(market.officer)
    page = _text(client.get("/marketplace/bureau/complaints", headers=EN))
    assert "没来" in page and f"/bureau/complaints/{complaint.id}/investigate" in page
    assert (
        client.post(
            f"/marketplace/bureau/complaints/{complaint.id}/investigate", headers=EN
        ).status_code
        == 302
    )
    url = f"/marketplace/bureau/complaints/{complaint.id}/close"
    refused = client.post(url, data={"decision": "upheld", "resolution": ""}, headers=EN)
    assert refused.status_code == 422
    assert f'id="resolution-{complaint.id}-error"' in _text(refused)
    db_session.refresh(complaint)
    assert complaint.status == "investigating"
    done = client.post(url, data={"decision": "upheld", "resolution": "属实，已约谈"}, headers=EN)
    assert done.status_code == 302
    db_session.refresh(complaint)
    assert (complaint.status, complaint.resolution) == ("upheld", "属实，已约谈")


def test_approvers_read_the_queue_and_other_districts_see_nothing(
    market, client, login, db_session
):
    complaint = complaints.file_complaint(market.station, by=market.elder_user, text="没来")
    login(market.approver)
    page = _text(client.get("/marketplace/bureau/complaints", headers=EN))
    assert "没来" in page and "/investigate" not in page
    assert (
        client.post(f"/marketplace/bureau/complaints/{complaint.id}/investigate").status_code == 403
    )
    client.post("/logout")
    shenhe_officer = market.factory.user(roles=["bureau_officer"], district=market.shenhe)
    login(shenhe_officer)
    assert "没来" not in _text(client.get("/marketplace/bureau/complaints"))
    assert (
        client.post(f"/marketplace/bureau/complaints/{complaint.id}/investigate").status_code == 404
    )
    db_session.refresh(complaint)
    assert complaint.status == "received"
