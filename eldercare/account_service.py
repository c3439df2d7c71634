"""Creating accounts and changing passwords: the one place that checks usernames and
passwords and audits it."""

from __future__ import annotations

import re

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from eldercare import audit, user_sessions
from eldercare.accounts import MIN_PASSWORD_LENGTH, ROLES, User, UserRole
from eldercare.db import db
from eldercare.errors import Conflict, InvalidInput
from eldercare.residents import District

USERNAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{2,79}$"  # also stated in the API's document
_USERNAME = re.compile(USERNAME_PATTERN)


def create_user(
    username: str,
    *,
    display_name: str,
    password: str,
    roles: list[str],
    district: District | None = None,
) -> User:
    key = (username or "").strip().lower()
    errors = {}
    if not _USERNAME.match(key):
        errors["username"] = _l(
            "3 to 80 characters: lower-case letters, digits, dot, dash or underscore."
        )
    if len(password or "") < MIN_PASSWORD_LENGTH:
        errors["password"] = _too_short()
    if not (display_name or "").strip():
        errors["display_name"] = _l("Enter the name shown on pages.")
    unknown = sorted(set(roles) - set(ROLES))
    if unknown or not roles:
        errors["roles"] = _l("Choose at least one known role.")
    if errors:
        raise InvalidInput(details=errors)
    if db.session.scalar(sa.select(User.id).where(User.username == key)) is not None:
        raise Conflict(_l("This username is taken."), details={"username": _l("taken")})
    user = User(username=key, display_name=display_name.strip(), district=district)
    user.set_password(password)
    user.role_rows = [UserRole(role=r) for r in sorted(set(roles))]
    db.session.add(user)
    audit.record("user.create", user, after={"username": key, "roles": sorted(set(roles))})
    return user


def _too_short():
    return _l("The password needs at least %(n)s characters.", n=MIN_PASSWORD_LENGTH)


def change_password(user: User, new_password: str, *, keep_session: str | None = None) -> int:
    """Set a new password and end every sign-in session of the account but ``keep_session``
    (the one changing it): whoever knew the old password, or copied a session cookie, is
    out. API tokens are credentials of their own and stay. Returns how many sessions ended."""
    if len(new_password or "") < MIN_PASSWORD_LENGTH:
        raise InvalidInput(details={"new_password": _too_short()})
    user.set_password(new_password)
    ended = user_sessions.end_all(user, except_token=keep_session)
    audit.record("user.password_change", user, after={"sessions_ended": ended}, actor=user)
    return ended
