"""Creating accounts: the one place that checks usernames and passwords and audits it."""

from __future__ import annotations

import re

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from eldercare import audit
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
        errors["password"] = _l(
            "The password needs at least %(n)s characters.", n=MIN_PASSWORD_LENGTH
        )
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
