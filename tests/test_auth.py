import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from eldercare.accounts import LoginThrottle
from eldercare.audit import AuditLog
from eldercare.timeutil import now_utc
from tests.conftest import PASSWORD

EN = {"Accept-Language": "en"}
WRONG = "The username or password is not correct."
LOCKED = "Too many failed attempts. Please try again later."


def _attempt(client, username, password):
    return client.post("/login", data={"username": username, "password": password}, headers=EN)


def test_right_password_signs_in_and_logs_it(client, factory, db_session):
    user = factory.user("clerk", roles=["bureau_officer"])
    response = _attempt(client, "Clerk", PASSWORD)  # usernames are case-insensitive
    assert response.status_code == 302
    assert client.get("/", headers=EN).get_data(as_text=True).count("Sign out") == 1
    assert user.last_login_at is not None
    actions = db_session.scalars(
        sa.select(AuditLog.action).where(AuditLog.actor_user_id == user.id)
    )
    assert "login.success" in list(actions)


def test_wrong_password_and_unknown_user_get_the_same_answer(client, factory):
    factory.user("clerk")
    wrong = _attempt(client, "clerk", "not-the-password")
    unknown = _attempt(client, "nobody-here", "not-the-password")
    assert wrong.status_code == unknown.status_code == 401
    assert WRONG in wrong.get_data(as_text=True)
    assert WRONG in unknown.get_data(as_text=True)


@pytest.mark.parametrize("username", ["clerk", "no-such-account"])
def test_locked_after_five_failures_whether_or_not_the_account_exists(client, factory, username):
    factory.user("clerk")
    for _ in range(4):
        assert WRONG in _attempt(client, username, "bad-password").get_data(as_text=True)
    assert LOCKED in _attempt(client, username, "bad-password").get_data(as_text=True)
    # While locked, even the right password is refused, with the same message.
    locked = _attempt(client, username, PASSWORD)
    assert locked.status_code == 401
    assert LOCKED in locked.get_data(as_text=True)


def test_lock_runs_out_and_success_clears_the_count(client, factory, db_session):
    factory.user("clerk")
    for _ in range(5):
        _attempt(client, "clerk", "bad-password")
    throttle = db_session.get(LoginThrottle, "clerk")
    throttle.locked_until = now_utc() - timedelta(seconds=1)
    db_session.flush()
    assert _attempt(client, "clerk", PASSWORD).status_code == 302
    assert db_session.get(LoginThrottle, "clerk") is None


def test_inactive_account_cannot_sign_in(client, factory):
    factory.user("gone", active=False)
    assert _attempt(client, "gone", PASSWORD).status_code == 401


def test_login_form_without_csrf_token_is_rejected(csrf_client, factory, db_session):
    factory.user("clerk")
    response = csrf_client.post(
        "/login", data={"username": "clerk", "password": PASSWORD}, headers=EN
    )
    assert response.status_code == 400
    assert "did not come from this site" in response.get_data(as_text=True)
    assert db_session.get(LoginThrottle, "clerk") is None  # nothing was counted


def test_login_form_with_csrf_token_is_accepted(csrf_client, factory):
    factory.user("clerk")
    page = csrf_client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    response = csrf_client.post(
        "/login", data={"username": "clerk", "password": PASSWORD, "csrf_token": token}
    )
    assert response.status_code == 302


def test_next_parameter_cannot_send_the_user_off_site(client, factory):
    factory.user("clerk")
    response = client.post(
        "/login?next=//evil.example/x", data={"username": "clerk", "password": PASSWORD}
    )
    assert response.headers["Location"] == "/"


@pytest.mark.parametrize(
    "roles, path",
    [
        (["elder"], "/audit/"),
        (["elder"], "/bureau/residents/"),
        (["provider_staff"], "/admin/tokens/"),
        (["bureau_officer"], "/audit/"),
        (["auditor"], "/bureau/residents/new"),
        (["bureau_approver"], "/bureau/residents/new"),
    ],
)
def test_a_role_reaching_another_roles_page_gets_403(client, factory, login, roles, path):
    login(factory.user(roles=roles))
    response = client.get(path, headers=EN)
    assert response.status_code == 403
    assert "not allowed" in response.get_data(as_text=True)


def test_signed_out_visitor_is_sent_to_sign_in(client):
    response = client.get("/audit/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=/audit/")


def test_sign_out(client, factory, login):
    login(factory.user(roles=["auditor"]))
    assert client.get("/audit/").status_code == 200
    client.post("/logout")
    assert client.get("/audit/").status_code == 302
