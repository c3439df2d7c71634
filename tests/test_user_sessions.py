"""Sign-in sessions end server-side (issue 13, item 3): a copied session cookie stops working
once its owner signs out, and a password change ends every other session of the account."""

from datetime import timedelta

import sqlalchemy as sa

from eldercare import user_sessions
from eldercare.audit import AuditLog
from eldercare.tokens import issue_token
from eldercare.user_sessions import UserSession
from tests.conftest import PASSWORD

EN = {"Accept-Language": "en"}
NEW_PASSWORD = "a-new-password-2026"


def _sign_in(client, user, password=PASSWORD):
    response = client.post(
        "/login", data={"username": user.username, "password": password}, headers=EN
    )
    return response.status_code == 302


def _copy_cookie(source, target):
    target.set_cookie("session", source.get_cookie("session").value)


def test_a_copied_cookie_stops_working_when_its_owner_signs_out(app, client, factory, db_session):
    auditor = factory.user("auditor1", roles=["auditor"])
    assert _sign_in(client, auditor)
    thief = app.test_client()
    _copy_cookie(client, thief)
    assert thief.get("/audit/").status_code == 200  # the copy works while the session lives

    client.post("/logout")

    page = thief.get("/audit/", headers=EN)
    assert page.status_code == 302 and page.headers["Location"].startswith("/login")
    api = thief.get("/audit/", headers=EN | {"Accept": "application/json"})
    assert api.status_code == 401
    assert api.get_json()["error"]["code"] == "authentication_required"
    ended = db_session.scalars(sa.select(UserSession).where(UserSession.user_id == auditor.id))
    assert [row.revoked_at is not None for row in ended] == [True]
    assert (
        db_session.scalar(
            sa.select(sa.func.count())
            .select_from(AuditLog)
            .where(AuditLog.action == "logout", AuditLog.actor_user_id == auditor.id)
        )
        == 1
    )


def test_a_cookie_naming_the_account_instead_of_a_session_signs_nobody_in(client, factory):
    """Cookies from before sessions were kept (they carried the account id) are refused."""
    auditor = factory.user("auditor1", roles=["auditor"])
    with client.session_transaction() as session:
        session["_user_id"] = str(auditor.id)
        session["_fresh"] = True
    assert client.get("/audit/").status_code == 302


def test_a_session_left_unused_ends(app, client, factory, monkeypatch):
    auditor = factory.user("auditor1", roles=["auditor"])
    assert _sign_in(client, auditor)
    idle = timedelta(minutes=app.config["SESSION_IDLE_MINUTES"])
    start = user_sessions.now_utc()
    monkeypatch.setattr(user_sessions, "now_utc", lambda: start + idle - timedelta(minutes=6))
    assert client.get("/audit/").status_code == 200  # in use: it goes on (last seen now)
    monkeypatch.setattr(user_sessions, "now_utc", lambda: start + 2 * idle - timedelta(minutes=7))
    assert client.get("/audit/").status_code == 200
    monkeypatch.setattr(user_sessions, "now_utc", lambda: start + 3 * idle)
    assert client.get("/audit/").status_code == 302  # unused for longer than allowed


def test_signing_out_ends_only_that_session(app, client, factory):
    auditor = factory.user("auditor1", roles=["auditor"])
    other_browser = app.test_client()
    assert _sign_in(client, auditor) and _sign_in(other_browser, auditor)
    client.post("/logout")
    assert client.get("/audit/").status_code == 302
    assert other_browser.get("/audit/").status_code == 200


def test_a_password_change_ends_every_other_session(app, client, factory, db_session):
    auditor = factory.user("auditor1", roles=["auditor"])
    phone, thief = app.test_client(), app.test_client()
    assert _sign_in(client, auditor) and _sign_in(phone, auditor)
    _copy_cookie(phone, thief)

    response = client.post(
        "/account/password",
        data={
            "current_password": PASSWORD,
            "new_password": NEW_PASSWORD,
            "new_password_again": NEW_PASSWORD,
        },
        headers=EN,
    )
    assert response.status_code == 302
    assert client.get("/audit/").status_code == 200  # where it was changed: still signed in
    assert phone.get("/audit/").status_code == 302
    assert thief.get("/audit/").status_code == 302
    assert not _sign_in(app.test_client(), auditor, PASSWORD)
    assert _sign_in(app.test_client(), auditor, NEW_PASSWORD)
    change = db_session.scalars(
        sa.select(AuditLog).where(AuditLog.action == "user.password_change")
    ).one()
    assert change.actor_user_id == auditor.id and '"sessions_ended":1' in change.after_json


def test_a_wrong_current_password_or_a_bad_new_one_changes_nothing(app, client, factory):
    auditor = factory.user("auditor1", roles=["auditor"])
    phone = app.test_client()
    assert _sign_in(client, auditor) and _sign_in(phone, auditor)
    attempts = [
        ("not-my-password", NEW_PASSWORD, NEW_PASSWORD, "is not correct"),
        (PASSWORD, "short", "short", "at least 10 characters"),
        (PASSWORD, NEW_PASSWORD, NEW_PASSWORD + "x", "not the same"),
    ]
    for current, new, again, message in attempts:
        response = client.post(
            "/account/password",
            data={"current_password": current, "new_password": new, "new_password_again": again},
            headers=EN,
        )
        assert response.status_code == 422
        assert message in response.get_data(as_text=True)
    assert phone.get("/audit/").status_code == 200
    assert _sign_in(app.test_client(), auditor, PASSWORD)


def test_the_password_page_needs_a_signed_in_user(client):
    response = client.get("/account/password")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_api_tokens_do_not_depend_on_browser_sessions(app, app_ctx, client, factory):
    staff = factory.user("staff1", roles=["provider_staff"])
    secret = issue_token(staff, "phone", ["read"])[1]
    bearer = {"Authorization": f"Bearer {secret}"}
    assert client.get("/api/v1/me", headers=bearer).status_code == 200
    assert _sign_in(client, staff)
    client.post("/logout")
    assert client.get("/api/v1/me", headers=bearer).status_code == 200
    assert _sign_in(client, staff)
    client.post(
        "/account/password",
        data={
            "current_password": PASSWORD,
            "new_password": NEW_PASSWORD,
            "new_password_again": NEW_PASSWORD,
        },
    )
    # A device's token is its own credential, revoked on the tokens page, not by a password.
    assert client.get("/api/v1/me", headers=bearer).status_code == 200


def test_signing_in_over_a_live_session_ends_it(app, client, factory):
    """On a shared computer B signs in over A's session: A's session ends there and then,
    so a copy of A's cookie does not outlive it."""
    a = factory.user("officer1", roles=["bureau_officer"])
    b = factory.user("auditor1", roles=["auditor"])
    assert _sign_in(client, a)
    copy = app.test_client()
    _copy_cookie(client, copy)
    assert copy.get("/account/password").status_code == 200
    assert _sign_in(client, b)
    assert copy.get("/account/password").status_code == 302


def test_a_session_in_constant_use_still_ends_after_its_lifetime(app, client, factory, monkeypatch):
    auditor = factory.user("auditor1", roles=["auditor"])
    assert _sign_in(client, auditor)
    start = user_sessions.now_utc()
    lifetime = timedelta(days=app.config["SESSION_MAX_DAYS"])
    step = timedelta(minutes=app.config["SESSION_IDLE_MINUTES"] - 10)
    at = start
    while at + step < start + lifetime:  # used every few hours, never idle for long
        at += step
        monkeypatch.setattr(user_sessions, "now_utc", lambda at=at: at)
        assert client.get("/audit/").status_code == 200
    monkeypatch.setattr(user_sessions, "now_utc", lambda: start + lifetime + timedelta(minutes=1))
    assert client.get("/audit/").status_code == 302
