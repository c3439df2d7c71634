import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from eldercare import auth
from eldercare.accounts import LoginThrottle
from eldercare.audit import AuditLog
from eldercare.timeutil import now_utc
from tests.conftest import ON_POSTGRES, PASSWORD

EN = {"Accept-Language": "en"}
WRONG = "The username or password is not correct."
LOCKED = "Too many failed attempts. Please try again later."


def _attempt(client, username, password, address="127.0.0.1"):
    return client.post(
        "/login",
        data={"username": username, "password": password},
        headers=EN,
        environ_base={"REMOTE_ADDR": address},
    )


def _failures(db_session, name, client):
    """A throttle row's count as stored now (on PostgreSQL committed apart), or None."""
    return db_session.scalar(
        sa.select(LoginThrottle.failures).where(
            LoginThrottle.username_key == name, LoginThrottle.client_key == client
        )
    )


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


def test_lock_runs_out_and_success_clears_the_count(client, factory, db_session, monkeypatch):
    factory.user("clerk")
    for _ in range(5):
        _attempt(client, "clerk", "bad-password")
    assert LOCKED in _attempt(client, "clerk", PASSWORD).get_data(as_text=True)
    assert _failures(db_session, "clerk", "127.0.0.1") == 5
    later = now_utc() + timedelta(minutes=16)
    monkeypatch.setattr(auth, "now_utc", lambda: later)
    assert _attempt(client, "clerk", PASSWORD).status_code == 302
    assert _failures(db_session, "clerk", "127.0.0.1") is None


def test_the_owner_elsewhere_gets_in_while_the_guessing_client_is_locked(client, factory):
    factory.user("clerk")
    factory.user("typist")
    for _ in range(5):
        _attempt(client, "clerk", "bad-password", address="198.51.100.9")
    assert LOCKED in _attempt(client, "clerk", PASSWORD, "198.51.100.9").get_data(as_text=True)
    # The lock is on that client for that name: the owner elsewhere still gets in, and the
    # guessing client may still sign in to other names.
    assert _attempt(client, "clerk", PASSWORD, address="203.0.113.4").status_code == 302
    assert _attempt(client, "typist", PASSWORD, address="198.51.100.9").status_code == 302
    assert LOCKED in _attempt(client, "clerk", PASSWORD, "198.51.100.9").get_data(as_text=True)


def test_a_client_guessing_across_names_is_locked_for_every_name(client, factory, app):
    factory.user("clerk")
    app.config["LOGIN_CLIENT_MAX_FAILURES"] = 4
    try:
        for name in ("ann", "bob", "cai"):
            assert WRONG in _attempt(client, name, "guess", "198.51.100.9").get_data(as_text=True)
        assert LOCKED in _attempt(client, "dan", "guess", "198.51.100.9").get_data(as_text=True)
        refused = _attempt(client, "clerk", PASSWORD, "198.51.100.9")
        assert LOCKED in refused.get_data(as_text=True)
        assert _attempt(client, "clerk", PASSWORD, "198.51.100.10").status_code == 302
    finally:
        app.config["LOGIN_CLIENT_MAX_FAILURES"] = 30


def test_guessing_one_name_from_many_clients_locks_the_name_but_not_the_owners_browser(
    client, factory, app
):
    factory.user("clerk")
    owners_browser = app.test_client()
    assert _attempt(owners_browser, "clerk", PASSWORD, "10.9.9.8").status_code == 302
    owners_browser.post("/logout")
    app.config["LOGIN_NAME_MAX_FAILURES"] = 4
    try:
        for i in range(3):
            assert WRONG in _attempt(client, "clerk", "guess", f"10.0.0.{i}").get_data(as_text=True)
        assert LOCKED in _attempt(client, "clerk", "guess", "10.0.0.3").get_data(as_text=True)
        # The price of bounding distributed guessing: the name is locked for every browser
        # that has not signed in as it before...
        assert LOCKED in _attempt(client, "clerk", PASSWORD, "10.9.9.9").get_data(as_text=True)
        # ...but the owner's usual browser, wherever it is now, carries the mark of an
        # earlier right password and still gets in.
        assert _attempt(owners_browser, "clerk", PASSWORD, "10.9.9.9").status_code == 302
        # A mark for another name, or a forged one, does not help.
        stranger = app.test_client()
        factory.user("other")
        assert _attempt(stranger, "other", PASSWORD, "10.9.9.7").status_code == 302
        refused = _attempt(stranger, "clerk", PASSWORD, "10.9.9.7")
        assert LOCKED in refused.get_data(as_text=True)
        stranger.set_cookie("signin_device", "forged.value")
        refused = _attempt(stranger, "clerk", PASSWORD, "10.9.9.7")
        assert LOCKED in refused.get_data(as_text=True)
    finally:
        app.config["LOGIN_NAME_MAX_FAILURES"] = 50


def test_a_right_password_gives_back_its_guess_but_not_the_failures(client, factory, db_session):
    factory.user("clerk")
    for _ in range(2):
        _attempt(client, "clerk", "bad-password")
    assert _failures(db_session, "clerk", "127.0.0.1") == 2
    for _ in range(3):  # an office signing in again and again is never locked by it
        assert _attempt(client, "clerk", PASSWORD).status_code == 302
    assert _failures(db_session, "clerk", "127.0.0.1") is None  # the guesser's count: cleared
    assert _failures(db_session, "", "127.0.0.1") == 2  # the client's failures stay
    assert _failures(db_session, "clerk", "") == 2  # and the name's


@pytest.mark.skipif(not ON_POSTGRES, reason="SQLite counts in the request's transaction")
def test_a_failure_is_counted_even_when_the_request_rolls_back(app, factory, db_session):
    from eldercare.db import db

    factory.user("clerk")
    with app.test_request_context(environ_base={"REMOTE_ADDR": "198.51.100.9"}):
        with pytest.raises(auth.LoginFailed):
            auth.authenticate("clerk", "bad-password")
        db.session.rollback()
    assert _failures(db_session, "clerk", "198.51.100.9") == 1


@pytest.mark.parametrize(
    "address, key",
    [
        ("198.51.100.9", "198.51.100.9"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),  # one host holds a whole /64
        ("::ffff:198.51.100.9", "198.51.100.9"),
        (None, "unknown"),
    ],
)
def test_the_client_key(address, key):
    from eldercare.login_throttle import client_key

    assert client_key(address) == key


@pytest.mark.parametrize("hops, seen", [(0, "127.0.0.1"), (1, "203.0.113.7")])
def test_proxy_hops_says_whose_x_forwarded_for_to_believe(tmp_path, hops, seen):
    from flask import request

    from eldercare import create_app

    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/p.db", "PROXY_HOPS": hops})
    app.add_url_rule("/test/addr", "addr", lambda: request.remote_addr or "")
    response = app.test_client().get(
        "/test/addr", headers={"X-Forwarded-For": "198.51.100.66, 203.0.113.7"}
    )
    assert response.get_data(as_text=True) == seen


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
    assert db_session.scalar(sa.select(sa.func.count()).select_from(LoginThrottle)) == 0


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


def test_a_password_change_ends_the_browsers_mark_for_the_name(client, factory, app):
    """The mark that lets the owner's browser past the name's lock is bound to the password:
    someone who once knew it and kept the cookie loses the mark when the owner changes it."""
    factory.user("clerk")
    former, owner = app.test_client(), app.test_client()
    assert _attempt(former, "clerk", PASSWORD, "10.9.9.8").status_code == 302
    assert _attempt(owner, "clerk", PASSWORD, "10.9.9.9").status_code == 302
    changed = owner.post(
        "/account/password",
        data={
            "current_password": PASSWORD,
            "new_password": "a-new-password-2026",
            "new_password_again": "a-new-password-2026",
        },
    )
    assert changed.status_code == 302
    app.config["LOGIN_NAME_MAX_FAILURES"] = 4
    try:
        answers = [
            _attempt(former, "clerk", "guess", f"10.0.1.{i}").get_data(as_text=True)
            for i in range(8)
        ]
        # The name's limit holds for the old browser too: the fourth guess locks the name.
        assert [WRONG in a for a in answers] == [True] * 3 + [False] * 5
        assert all(LOCKED in a for a in answers[3:])
    finally:
        app.config["LOGIN_NAME_MAX_FAILURES"] = 50


def test_the_owners_browser_is_not_held_by_a_lock_others_put_on_its_address(
    client, factory, app
):
    """30 wrong guesses from a shared address (an office, a carrier's NAT) lock that address,
    but not the browser that signed in as its own name there before."""
    factory.user("clerk")
    owners_browser = app.test_client()
    assert _attempt(owners_browser, "clerk", PASSWORD, "100.64.0.7").status_code == 302
    owners_browser.post("/logout")
    app.config["LOGIN_CLIENT_MAX_FAILURES"] = 4
    try:
        for i in range(4):
            _attempt(client, f"nobody{i}", "guess", "100.64.0.7")
        assert LOCKED in _attempt(client, "clerk", PASSWORD, "100.64.0.7").get_data(as_text=True)
        assert _attempt(owners_browser, "clerk", PASSWORD, "100.64.0.7").status_code == 302
    finally:
        app.config["LOGIN_CLIENT_MAX_FAILURES"] = 30


def test_a_lock_on_a_long_name_is_audited_and_answers_401(client, db_session):
    """The audit row of a lock names the typed name, which may be longer than an audit row's
    object id holds (80 characters against 64): shortened, not a 500 and a lost row."""
    name = "z" * 80
    statuses = [_attempt(client, name, "guess", "192.0.2.80").status_code for _ in range(5)]
    assert statuses == [401] * 5
    row = db_session.scalars(sa.select(AuditLog).where(AuditLog.action == "login.locked")).one()
    assert len(row.object_id) <= 64 and row.object_id.startswith("zzzz")
