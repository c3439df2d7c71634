"""Server-side sign-in sessions: what the session cookie names, ended on sign-out and on a
password change.

The signed session cookie carries a random token (Flask-Login's "alternative id": what
``User.get_id`` returns), never the account id. Each request looks the token up: one indexed
query, which also loads the account. A session that was ended (signed out, or every other
session after a password change) is found revoked, so a copied cookie stops working the
moment its owner signs out. Only the token's SHA-256 is stored, as for API tokens: someone
reading the table cannot sign in with what they read.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app, has_request_context, request
from sqlalchemy.orm import Mapped, contains_eager, mapped_column, relationship

from eldercare.accounts import User
from eldercare.db import Base, UTCDateTime, db
from eldercare.timeutil import now_utc

# How stale "last seen" may get: a write every few minutes per session, not every request.
_LAST_SEEN_RESOLUTION = timedelta(minutes=5)


class UserSession(Base):
    __tablename__ = "user_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    # SHA-256 of the random token the session cookie carries; the token itself is not kept.
    token_sha256: Mapped[str] = mapped_column(sa.String(64), unique=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    # Set when the session ends (sign-out, password change); a revoked session never returns.
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The browser it began in, to tell sessions apart when listing or auditing them.
    user_agent: Mapped[str | None] = mapped_column(sa.String(200))

    user: Mapped[User] = relationship()


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start(user: User) -> str:
    """A new session for ``user``, who has just proved who they are; its token, which
    ``user.get_id()`` answers from now on (so ``login_user`` puts it in the cookie)."""
    token = secrets.token_urlsafe(32)
    agent = request.headers.get("User-Agent", "")[:200] if has_request_context() else None
    db.session.add(UserSession(token_sha256=_digest(token), user_id=user.id, user_agent=agent))
    user.session_token = token
    return token


def load(token: str) -> User | None:
    """The active account whose live session ``token`` names, or None. A session unused for
    ``SESSION_IDLE_MINUTES`` is over too, and any session ``SESSION_MAX_DAYS`` after its
    sign-in: a cookie left behind on a shared computer, or copied, does not work forever."""
    if not token:
        return None
    now = now_utc()
    idle = timedelta(minutes=current_app.config["SESSION_IDLE_MINUTES"])
    lifetime = timedelta(days=current_app.config["SESSION_MAX_DAYS"])
    row = db.session.execute(
        sa.select(UserSession)
        .join(UserSession.user)
        .options(contains_eager(UserSession.user))
        .where(
            UserSession.token_sha256 == _digest(token),
            UserSession.revoked_at.is_(None),
            UserSession.last_seen_at > now - idle,
            UserSession.created_at > now - lifetime,
        )
    ).scalar_one_or_none()
    if row is None or not row.user.active:
        return None
    if now - row.last_seen_at > _LAST_SEEN_RESOLUTION:
        row.last_seen_at = now
    row.user.session_token = token
    row.user.session_id = row.id
    return row.user


def end(token: str) -> None:
    """Sign-out: this session is over, whoever holds a copy of its cookie."""
    db.session.execute(
        sa.update(UserSession)
        .where(UserSession.token_sha256 == _digest(token), UserSession.revoked_at.is_(None))
        .values(revoked_at=now_utc())
    )


def end_all(user: User, *, except_token: str | None = None) -> int:
    """End every live session of ``user`` (but the one ``except_token`` names): how many."""
    where = [UserSession.user_id == user.id, UserSession.revoked_at.is_(None)]
    if except_token:
        where.append(UserSession.token_sha256 != _digest(except_token))
    result = db.session.execute(sa.update(UserSession).where(*where).values(revoked_at=now_utc()))
    return result.rowcount
