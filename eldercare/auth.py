"""Signing in and out, the login throttle, and the role and district checks views use."""

from __future__ import annotations

import functools

import sqlalchemy as sa
from flask import (
    Blueprint,
    current_app,
    flash,
    has_request_context,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import LoginManager, current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from werkzeug.security import check_password_hash, generate_password_hash
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, EqualTo, Length

from eldercare import account_service, audit, i18n, login_throttle, user_sessions
from eldercare.accounts import User
from eldercare.db import db
from eldercare.errors import (
    AuthenticationRequired,
    InvalidInput,
    NotFound,
    PermissionDenied,
    wants_json,
)
from eldercare.navigation import safe_next
from eldercare.timeutil import now_utc

bp = Blueprint("auth", __name__)
login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = _l("Please sign in to see this page.")
login_manager.login_message_category = "info"

_dummy_hash_cache: dict[str, str] = {}


class LoginFailed(Exception):
    """Wrong name or password, or a locked name: the message never says which name exists."""

    def __init__(self, message):
        super().__init__(str(message))
        self.message = message


@login_manager.user_loader
def _load_user(session_token: str) -> User | None:
    # The cookie names a sign-in session, not an account: a session ended by signing out or
    # by a password change loads nobody, whoever kept a copy of the cookie.
    return user_sessions.load(session_token)


@login_manager.unauthorized_handler
def _unauthorized():
    if wants_json():
        raise AuthenticationRequired()
    flash(login_manager.login_message, "info")
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def _dummy_hash() -> str:
    """A hash to check against when the name is unknown, so timing does not tell."""
    method = current_app.config.get("PASSWORD_HASH_METHOD", "scrypt")
    if method not in _dummy_hash_cache:
        _dummy_hash_cache[method] = generate_password_hash("not-a-real-password", method=method)
    return _dummy_hash_cache[method]


def authenticate(username: str, password: str) -> User:
    """Return the user for a right name and password. Each attempt takes one of the allowed
    guesses before the password is judged (eldercare/login_throttle.py); once they are used
    up, the client (or the name) is refused without judging."""
    key = username.strip().lower()[:80]
    if not key:
        raise LoginFailed(_l("The username or password is not correct."))
    client = login_throttle.client_key(request.remote_addr if has_request_context() else None)
    now = now_utc()
    user = db.session.scalar(sa.select(User).where(User.username == key))
    known = login_throttle.known_device(key, user.password_hash if user is not None else None)
    attempt = login_throttle.take_guess(key, client, now, known=known)
    if attempt is None:
        raise LoginFailed(_l("Too many failed attempts. Please try again later."))

    if user is None:
        check_password_hash(_dummy_hash(), password)
        ok = False
    else:
        ok = user.check_password(password)
    if ok and user is not None and user.active:
        login_throttle.give_back(attempt)
        user.last_login_at = now
        return user

    if attempt.locked:  # this wrong guess was the last one allowed
        audit.record(
            "login.locked",
            object_type="login_throttles",
            object_id=key,
            after={"client": client, "locked": list(attempt.locked)},
        )
        raise LoginFailed(_l("Too many failed attempts. Please try again later."))
    raise LoginFailed(_l("The username or password is not correct."))


class LoginForm(FlaskForm):
    username = StringField(_l("Username"), validators=[DataRequired(), Length(max=80)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(max=200)])


@bp.route("/login", methods=["GET", "POST"])
def login():
    form = LoginForm()
    error = None
    if form.validate_on_submit():
        try:
            user = authenticate(form.username.data, form.password.data)
        except LoginFailed as failure:
            error = failure.message
        else:
            if current_user.is_authenticated:  # signing in over a live session ends it
                user_sessions.end(current_user.get_id())
            user_sessions.start(user)
            i18n.carry_language_over_sign_in(user)
            login_user(user)
            audit.record("login.success", user, actor=user)
            response = redirect(safe_next(request.args.get("next")))
            login_throttle.mark_device(response, user.username, user.password_hash)
            return response
    status = 401 if error else 200
    return render_template("auth/login.html", form=form, error=error), status


@bp.post("/logout")
def logout():
    if current_user.is_authenticated:
        user_sessions.end(current_user.get_id())
        user = current_user._get_current_object()
        audit.record("logout", user, actor=user)
    logout_user()
    flash(_("You have signed out."), "info")
    return redirect(url_for("home.index"))


class PasswordForm(FlaskForm):
    current_password = PasswordField(
        _l("Current password"), validators=[DataRequired(), Length(max=200)]
    )
    new_password = PasswordField(_l("New password"), validators=[DataRequired(), Length(max=200)])
    new_password_again = PasswordField(
        _l("The new password again"),
        validators=[
            DataRequired(),
            EqualTo("new_password", message=_l("The two new passwords are not the same.")),
        ],
    )


@bp.route("/account/password", methods=["GET", "POST"])
@login_required
def change_password():
    """The signed-in person changes their password; every other session of theirs ends."""
    form = PasswordForm()
    if form.validate_on_submit():
        user = current_user._get_current_object()
        try:
            # Typing the current password is a sign-in attempt: the throttle counts it.
            authenticate(user.username, form.current_password.data)
        except LoginFailed as failure:
            form.current_password.errors.append(failure.message)
        else:
            try:
                account_service.change_password(
                    user, form.new_password.data, keep_session=user.get_id()
                )
            except InvalidInput as error:  # raised before anything changed
                form.new_password.errors.extend(error.details.values())
            else:
                flash(_("Your password is changed. Every other session is signed out."), "info")
                return redirect(url_for("home.index"))
    status = 422 if form.is_submitted() else 200
    return render_template("auth/password.html", form=form), status


def roles_required(*roles: str, also=None):
    """Only signed-in users holding one of ``roles`` (no roles: anyone signed in) reach the
    view; others get 403.

    ``also(user)``, when given, is a further condition that raises PermissionDenied (with
    its own message) for a user the roles alone would let in, e.g. district staff on a
    city-wide page. Both are recorded on the view as ``access`` so that menus offer a page
    by the very rule the page enforces (``may_open``), not by a copy of its role list."""

    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            if not current_user.is_authenticated:
                return login_manager.unauthorized()
            if roles and not current_user.has_role(*roles):
                raise PermissionDenied()
            if also is not None:
                also(current_user)
            return view(*args, **kwargs)

        wrapper.access = (roles, also)
        return wrapper

    return decorator


def may_open(user, endpoint: str) -> bool:
    """Would ``user`` get past the roles_required of ``endpoint``'s view? A view without one
    is open to anyone signed in as far as this rule goes."""
    view = current_app.view_functions.get(endpoint)
    if view is None:
        return False
    roles, also = getattr(view, "access", ((), None))
    if roles and not user.has_role(*roles):
        return False
    if also is not None:
        try:
            also(user)
        except PermissionDenied:
            return False
    return True


def scope_to_district(statement, district_column, user=None):
    """Narrow a query to the user's district when they are district staff."""
    user = user or current_user
    if user.district_id is not None:
        statement = statement.where(district_column == user.district_id)
    return statement


def ensure_in_district(district_id: int, user=None) -> None:
    """Out-of-district records look exactly like missing ones."""
    user = user or current_user
    if user.district_id is not None and user.district_id != district_id:
        raise NotFound()
