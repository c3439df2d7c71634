"""Bearer tokens for devices and partner systems: stored hashed, scoped, revocable.

A token acts as the user account it belongs to (a service account with a role), and its
scopes narrow that further. The secret is shown once, at creation; only its SHA-256 is
kept, which is enough for a random 256-bit secret (no salt or slow hash needed).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import g, request
from flask_babel import lazy_gettext as _l
from sqlalchemy.orm import Mapped, joinedload, mapped_column, relationship

from eldercare import audit
from eldercare.accounts import User
from eldercare.db import Base, UTCDateTime, db
from eldercare.errors import AuthenticationRequired, InvalidInput, PermissionDenied
from eldercare.timeutil import now_utc

TOKEN_PREFIX = "ect"  # noqa: S105 - a public marker, not a secret
# Scopes the platform understands; domains check for them on their API endpoints.
SCOPES = {
    "read": _l("Read reference data and own records"),
    "assessments:write": _l("Submit assessments"),
    "providers:write": _l("Manage a provider's listing and bookings"),
    "vouchers:redeem": _l("Scan and redeem vouchers"),
    "vouchers:read": _l("Read vouchers and balances"),
    "bureau:write": _l("Act for the bureau: record moves, decide assessments, change policy"),
    "elders:write": _l(
        "Act for an elder: book, cancel and rate services, file complaints, show voucher codes"
    ),
}
# The scopes that only let a token read. Every other scope lets it write something, and an
# operation that is not a GET, HEAD or OPTIONS needs one of those (see token_required).
READ_SCOPES = frozenset({"read", "vouchers:read"})
WRITE_SCOPES = frozenset(SCOPES) - READ_SCOPES
# What the mini-program's token needs to act for an elder (a read-only one only looks).
ELDERS_WRITE = "elders:write"
_LAST_USED_RESOLUTION = timedelta(minutes=1)  # avoid a write on every API call


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(100))
    # Public part of the token, used to find the row; the secret part is only hashed.
    prefix: Mapped[str] = mapped_column(sa.String(16), unique=True)
    secret_sha256: Mapped[str] = mapped_column(sa.String(64))
    # Space-separated scope names (see SCOPES).
    scopes: Mapped[str] = mapped_column(sa.String(500))
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship()

    @property
    def scope_set(self) -> frozenset[str]:
        return frozenset(self.scopes.split())

    def usable_at(self, when: datetime) -> bool:
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or when < self.expires_at


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue_token(
    user: User, name: str, scopes: list[str], *, expires_at: datetime | None = None
) -> tuple[ApiToken, str]:
    """Create a token and return it with the full secret string (shown once)."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise InvalidInput(_l("Choose at least one known scope."), details={"scopes": unknown})
    if not name.strip():
        raise InvalidInput(_l("Give the token a name."), details={"name": "required"})
    prefix = secrets.token_hex(4)
    secret = secrets.token_urlsafe(32)
    token = ApiToken(
        name=name.strip(),
        prefix=prefix,
        secret_sha256=_digest(secret),
        scopes=" ".join(sorted(set(scopes))),
        user_id=user.id,
        expires_at=expires_at,
    )
    db.session.add(token)
    audit.record(
        "api_token.create",
        token,
        after={"name": token.name, "prefix": prefix, "user": user.username, "scopes": token.scopes},
    )
    return token, f"{TOKEN_PREFIX}_{prefix}_{secret}"


def revoke_token(token: ApiToken) -> None:
    if token.revoked_at is not None:
        return
    token.revoked_at = now_utc()
    audit.record("api_token.revoke", token, after={"prefix": token.prefix})


def authenticate_bearer(header: str | None) -> ApiToken:
    if not header or not header.startswith("Bearer "):
        raise AuthenticationRequired(_l("Send an API token as 'Authorization: Bearer ...'."))
    parts = header[len("Bearer ") :].strip().split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        raise AuthenticationRequired(_l("The API token is not valid."))
    _, prefix, secret = parts
    # The token, its user and the user's roles in one round trip: every API request asks.
    token = (
        db.session.execute(
            sa.select(ApiToken)
            .options(joinedload(ApiToken.user).joinedload(User.role_rows))
            .where(ApiToken.prefix == prefix)
        )
        .unique()
        .scalar_one_or_none()
    )
    now = now_utc()
    if (
        token is None
        or not hmac.compare_digest(token.secret_sha256, _digest(secret))
        or not token.usable_at(now)
        or not token.user.is_active
    ):
        raise AuthenticationRequired(_l("The API token is not valid, expired or revoked."))
    if token.last_used_at is None or now - token.last_used_at > _LAST_USED_RESOLUTION:
        token.last_used_at = now
    return token


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _check_write_scope(token: ApiToken, declared: frozenset[str]) -> None:
    """The one rule for writing: an operation that is not a GET, HEAD or OPTIONS needs one of
    the write scopes its route declares. A route that declares none (an oversight) refuses
    every token, rather than letting a read-only one write."""
    needed = declared & WRITE_SCOPES
    if needed & token.scope_set:
        return
    missing = sorted(needed)
    raise PermissionDenied(
        _l("This API token may only read; this operation needs a write scope."),
        code="write_scope_required",
        details={"missing": missing} if len(missing) == 1 else {"missing_one_of": missing},
    )


def token_required(*scopes: str, any_of: bool = False, lookup: bool = False):
    """Decorator for API views: a valid bearer token holding every listed scope (or, with
    ``any_of``, at least one of them).

    Whatever the list says, a request with a method other than GET, HEAD or OPTIONS must
    also hold one of the listed write scopes (``_check_write_scope``), so that a read-only
    token never writes. ``lookup`` marks the rare POST that only reads (to keep an ID number
    out of URLs); tests/api/test_write_scopes.py keeps the list of those short and reviewed.
    """
    declared = frozenset(scopes)

    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            token = authenticate_bearer(request.headers.get("Authorization"))
            if request.method not in SAFE_METHODS and not lookup:
                _check_write_scope(token, declared)
            missing = sorted(set(scopes) - token.scope_set)
            if any_of and scopes and len(missing) == len(set(scopes)):
                raise PermissionDenied(
                    _l("The API token lacks a required scope."),
                    details={"missing_one_of": missing},
                )
            if missing and not any_of:
                raise PermissionDenied(
                    _l("The API token lacks a required scope."), details={"missing": missing}
                )
            g.api_token = token
            g.api_user = token.user
            return view(*args, **kwargs)

        # What the route declares, for the tests that walk the route table.
        wrapper.token_scopes = declared
        wrapper.token_lookup = lookup
        return wrapper

    return decorator
