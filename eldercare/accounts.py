"""User accounts, roles, family-agent links and the login throttle."""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from flask import current_app
from flask_babel import lazy_gettext as _l
from flask_login import UserMixin
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from eldercare.db import Base, UTCDateTime, db
from eldercare.residents import District, Resident
from eldercare.timeutil import now_utc

# Every role the platform knows, with the label people see.
ROLES = {
    "elder": _l("Elder"),
    "family_agent": _l("Family agent"),
    "provider_admin": _l("Provider administrator"),
    "provider_staff": _l("Provider staff"),
    "assessor": _l("Assessor"),
    "agency_admin": _l("Assessment agency administrator"),
    "bureau_officer": _l("Bureau officer"),
    "bureau_approver": _l("Bureau approver"),
    "auditor": _l("Auditor"),
    "admin": _l("System administrator"),
}
BUREAU_ROLES = ("bureau_officer", "bureau_approver")
# The elder's side: an elder's own account and the accounts of family agents.
ELDER_ROLES = ("elder", "family_agent")

# Who may act for an elder (POLICY.md, step 1).
RELATIONSHIPS = {
    "spouse": _l("Spouse"),
    "child": _l("Child"),
    "other_relative": _l("Other relative"),
    "community_worker": _l("Village or community worker"),
    "institution_staff": _l("Staff of the elder's care institution"),
}

MIN_PASSWORD_LENGTH = 10

_role_list = ", ".join(f"'{r}'" for r in ROLES)
_relationship_list = ", ".join(f"'{r}'" for r in RELATIONSHIPS)


class User(UserMixin, Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    # Stored lower-case so that logins and the throttle are case-insensitive.
    username: Mapped[str] = mapped_column(sa.String(80), unique=True)
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    display_name: Mapped[str] = mapped_column(sa.String(80))
    active: Mapped[bool] = mapped_column(default=True)
    # Where the notification outbox emails this person's notices; none: they are shown in
    # Messages only (eldercare/mail.py). Set by the person on the Messages page.
    email: Mapped[str | None] = mapped_column(sa.String(254))
    # The language the person last chose while signed in (a SUPPORTED_LOCALES code): their
    # pages in a new browser and their mailed notices speak it; none: the browser decides,
    # and mail carries every language.
    language: Mapped[str | None] = mapped_column(sa.String(16))
    # The person behind the account, when they are in the resident register (elders, relatives).
    resident_id: Mapped[int | None] = mapped_column(sa.ForeignKey("residents.id"), index=True)
    # Bureau staff of one district see only that district; NULL means city-wide.
    district_id: Mapped[int | None] = mapped_column(sa.ForeignKey("districts.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    resident: Mapped[Resident | None] = relationship()
    district: Mapped[District | None] = relationship()
    role_rows: Mapped[list[UserRole]] = relationship(cascade="all, delete-orphan", lazy="selectin")

    # The sign-in session this object came through (eldercare/user_sessions.py); not stored.
    session_token = None
    # That session's row id: a key for the browser that is not personal data (the anomaly
    # rule "shared_device" records it at check-in as "session:<id>"); not stored either.
    session_id = None

    def get_id(self) -> str:
        """What Flask-Login keeps in the session cookie: the sign-in session's token, never
        the account id, so that ending the session (sign-out) ends every copy of the cookie."""
        if self.session_token is None:
            raise RuntimeError("no sign-in session: user_sessions.start(user) before login_user")
        return self.session_token

    @property
    def is_active(self) -> bool:  # Flask-Login refuses inactive accounts
        return self.active

    @property
    def roles(self) -> frozenset[str]:
        return frozenset(row.role for row in self.role_rows)

    def has_role(self, *roles: str) -> bool:
        return not self.roles.isdisjoint(roles)

    def set_password(self, password: str) -> None:
        method = current_app.config.get("PASSWORD_HASH_METHOD", "scrypt")
        self.password_hash = generate_password_hash(password, method=method)

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)


class UserRole(Base):
    __tablename__ = "user_roles"
    __table_args__ = (sa.CheckConstraint(f"role IN ({_role_list})", name="known_role"),)

    user_id: Mapped[int] = mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[str] = mapped_column(sa.String(32), primary_key=True)


class FamilyLink(Base):
    """An agent (a relative, a community worker...) allowed to act for an elder."""

    __tablename__ = "family_links"
    __table_args__ = (
        sa.UniqueConstraint("agent_user_id", "resident_id"),
        sa.CheckConstraint(f"relationship IN ({_relationship_list})", name="known_relationship"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    agent_user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    resident_id: Mapped[int] = mapped_column(sa.ForeignKey("residents.id"), index=True)
    relationship: Mapped[str] = mapped_column(sa.String(32))
    # The day the elder (or their guardian) consented to this person acting for them.
    consent_date: Mapped[date] = mapped_column(sa.Date)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)


class LoginThrottle(Base):
    """Failed sign-ins in the current window, per typed name and client, per client (name
    left empty) and per name (client left empty); see ``eldercare.login_throttle``.

    Keying on the typed name (not the user row) is what keeps the lock-out from
    telling an attacker which usernames are real.
    """

    __tablename__ = "login_throttles"
    __table_args__ = (
        sa.CheckConstraint("username_key <> '' OR client_key <> ''", name="names_something"),
    )

    # The typed name, lower-case; '' on a client's row across every name.
    username_key: Mapped[str] = mapped_column(sa.String(80), primary_key=True)
    # The client's address (an IPv6 client's /64); '' on a name's row across every client.
    client_key: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    # Guesses taken in the window (each before its password was judged), less right ones.
    failures: Mapped[int] = mapped_column(default=0)
    window_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


def elders_acted_for(user) -> list[Resident]:
    """The elders an account acts for: its own record for an elder, then, for a family agent,
    the elders linked to it in the order they were linked; none for anyone else, nor for a
    visitor who has not signed in."""
    if not user.is_authenticated:
        return []
    elders: list[Resident] = []
    if user.has_role("elder") and user.resident is not None:
        elders.append(user.resident)
    if user.has_role("family_agent"):
        linked = db.session.scalars(
            sa.select(Resident)
            .join(FamilyLink, FamilyLink.resident_id == Resident.id)
            .where(FamilyLink.agent_user_id == user.id)
            .order_by(FamilyLink.id)
        ).all()
        seen = {elder.id for elder in elders}
        elders.extend(elder for elder in linked if elder.id not in seen)
    return elders


def accounts_acting_for(resident_id: int) -> list[User]:
    """The other way round: the active accounts that act for an elder, the elder's own and
    every family agent's linked to them, by account id (whom to tell about the elder)."""
    agent_ids = sa.select(FamilyLink.agent_user_id).where(FamilyLink.resident_id == resident_id)
    return list(
        db.session.scalars(
            sa.select(User)
            .where(
                User.active.is_(True),
                sa.or_(User.resident_id == resident_id, User.id.in_(agent_ids)),
            )
            .order_by(User.id)
        )
    )
