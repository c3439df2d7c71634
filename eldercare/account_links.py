"""Linking an account to a resident in the register, with the bureau's confirmation.

An elder (or a family member) with an account asks to be linked to a registered resident by
the resident's ID number, name and their relationship: ``self`` (the account becomes the
resident's own) or one of the family-agent relationships (the account becomes a family agent,
a ``FamilyLink``). A bureau officer of the resident's district confirms or refuses (with a
reason). The bureau can also create an account for a resident at the office, linked at once.

Nothing the account holder sees tells whether an ID number is registered: every well-formed
request is received the same way and waits for the bureau; only the bureau sees whether it
matched the register. Requests are throttled per account (``LINK_REQUESTS_PER_DAY`` in 24
hours, counted under a lock on the account's row) so that the bureau's queue cannot be used to
try ID numbers in bulk either.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app
from flask_babel import lazy_gettext as _l
from sqlalchemy import orm
from sqlalchemy.orm import Mapped, mapped_column

from eldercare import account_service, audit
from eldercare.accounts import RELATIONSHIPS, FamilyLink, User
from eldercare.db import Base, UTCDateTime, db
from eldercare.errors import Conflict, InvalidInput, NotFound, PermissionDenied, TooManyRequests
from eldercare.notifications import enqueue, notice, notice_messages
from eldercare.pii import EncryptedString, keep_lookup_hash, lookup_hash, lookup_hash_column
from eldercare.register import RESIDENT_ID_MESSAGES
from eldercare.residents import (
    InvalidResidentId,
    Resident,
    mask_name,
    mask_resident_id,
    parse_resident_id,
)
from eldercare.timeutil import local_today, now_utc

SELF = "self"
# What the account holder is to the resident: the resident, or one of the agents' relationships.
LINK_RELATIONSHIPS = {SELF: _l("I am this person (my own account)")} | RELATIONSHIPS
STATUSES = ("pending", "confirmed", "refused")
MAX_REASON_LENGTH = 500
THROTTLE_WINDOW = timedelta(hours=24)

_relationship_list = ", ".join(f"'{r}'" for r in LINK_RELATIONSHIPS)
_status_list = ", ".join(f"'{s}'" for s in STATUSES)


class AccountLinkRequest(Base):
    """An account holder's request to be linked to a resident, and the bureau's decision."""

    __tablename__ = "account_link_requests"
    __table_args__ = (
        sa.CheckConstraint(f"relationship IN ({_relationship_list})", name="known_relationship"),
        sa.CheckConstraint(f"status IN ({_status_list})", name="known_status"),
        sa.CheckConstraint(
            "status = 'pending' OR (decided_by_user_id IS NOT NULL AND decided_at IS NOT NULL)",
            name="decision_recorded",
        ),
        sa.CheckConstraint("status <> 'refused' OR refusal_reason IS NOT NULL", name="reason"),
        # One open request per account and ID number (a second is a duplicate, not news).
        sa.Index(
            "uq_account_link_requests_pending",
            "user_id",
            "id_number_hash",
            unique=True,
            sqlite_where=sa.text("status = 'pending'"),
            postgresql_where=sa.text("status = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    # As typed (normalised): the bureau compares it with the register; never shown in full
    # to anyone but bureau staff.
    # Encrypted at rest (eldercare/pii.py); compared through its hash.
    id_number: Mapped[str] = mapped_column(EncryptedString("account_link_requests.id_number"))
    id_number_hash: Mapped[str] = lookup_hash_column("id_number", "id_number")
    name: Mapped[str] = mapped_column(sa.String(50))
    relationship: Mapped[str] = mapped_column(sa.String(32))
    # The registered resident with this ID number at the time of asking; NULL: none. Only
    # the bureau sees it; it decides which district's officers handle the request.
    resident_id: Mapped[int | None] = mapped_column(sa.ForeignKey("residents.id"), index=True)
    # Whether the typed name equals the register's (the bureau refuses a mismatch).
    name_matches: Mapped[bool] = mapped_column(default=False)
    status: Mapped[str] = mapped_column(sa.String(16), default="pending", index=True)
    decided_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    refusal_reason: Mapped[str | None] = mapped_column(sa.String(MAX_REASON_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc, index=True)

    # orm.relationship: the name "relationship" is the column above in this class's body.
    user: Mapped[User] = orm.relationship(foreign_keys=[user_id])
    resident: Mapped[Resident | None] = orm.relationship()

    @property
    def masked_id_number(self) -> str:
        return mask_resident_id(self.id_number)


keep_lookup_hash(AccountLinkRequest.id_number, "id_number_hash", "id_number")


# --- asking --------------------------------------------------------------------------------


def _check_request(user: User, id_number: str, name: str, relationship: str) -> tuple[str, str]:
    errors: dict = {}
    number = ""
    try:
        number = parse_resident_id(id_number or "").number
    except InvalidResidentId as exc:
        errors["id_number"] = RESIDENT_ID_MESSAGES[exc.reason]
    name = (name or "").strip()
    if not name or len(name) > 50:
        errors["name"] = _l("Enter the name as on the ID card (at most 50 characters).")
    if relationship not in LINK_RELATIONSHIPS:
        errors["relationship"] = _l("Choose how you are related to this person.")
    elif relationship == SELF and not user.has_role("elder"):
        errors["relationship"] = _l("Only an elder's account can be linked as the elder's own.")
    elif relationship != SELF and not user.has_role("family_agent"):
        errors["relationship"] = _l("Only a family member's account can act for an elder.")
    if errors:
        raise InvalidInput(details=errors)
    return number, name


def _throttle(user: User) -> None:
    """Refuse a request beyond the day's allowance. The account's row is locked first, so
    requests of one account sent at once are counted one after another (PostgreSQL)."""
    db.session.execute(sa.select(User.id).where(User.id == user.id).with_for_update())
    since = now_utc() - THROTTLE_WINDOW
    asked = db.session.scalar(
        sa.select(sa.func.count())
        .select_from(AccountLinkRequest)
        .where(AccountLinkRequest.user_id == user.id, AccountLinkRequest.created_at > since)
    )
    if asked >= current_app.config["LINK_REQUESTS_PER_DAY"]:
        raise TooManyRequests(
            _l(
                "You have sent as many link requests as one account may in a day. Please try "
                "again tomorrow, or ask at your district's civil-affairs office."
            )
        )


def request_link(user: User, *, id_number: str, name: str, relationship: str):
    """Record a request; the answer is the same whether or not the ID number is registered."""
    if not user.has_role("elder", "family_agent"):
        raise PermissionDenied(_l("Only elders' and family members' accounts can ask for this."))
    number, name = _check_request(user, id_number, name, relationship)
    if relationship == SELF and user.resident_id is not None:
        raise Conflict(_l("Your account is already linked to your own record."))
    _throttle(user)
    duplicate = db.session.scalar(
        sa.select(AccountLinkRequest.id).where(
            AccountLinkRequest.user_id == user.id,
            AccountLinkRequest.id_number_hash == lookup_hash("id_number", number),
            AccountLinkRequest.status == "pending",
        )
    )
    if duplicate is not None:
        raise Conflict(_l("You have already asked for this link; the bureau will answer it."))
    resident = db.session.scalar(sa.select(Resident).where(Resident.id_number_is(number)))
    # The asker already acts for this resident, so saying so tells them nothing new.
    if resident is not None and relationship != SELF and _acts_for(user, resident):
        raise Conflict(_l("This account already acts for this resident."))
    link = AccountLinkRequest(
        user_id=user.id,
        id_number=number,
        name=name,
        relationship=relationship,
        resident_id=resident.id if resident else None,
        name_matches=resident is not None and resident.name == name,
        status="pending",
        created_at=now_utc(),
    )
    db.session.add(link)
    db.session.flush()
    audit.record(
        "account_link.request",
        link,
        actor=user,
        district_id=resident.district_id if resident else None,
        after={"id_number": link.masked_id_number, "relationship": relationship},
    )
    return link


def requests_of(user: User) -> list[AccountLinkRequest]:
    return list(
        db.session.scalars(
            sa.select(AccountLinkRequest)
            .where(AccountLinkRequest.user_id == user.id)
            .order_by(AccountLinkRequest.id.desc())
        )
    )


# --- the bureau's decision ----------------------------------------------------------------


def requests_for_officer(officer: User, status: str = "pending"):
    """A statement of the requests an officer handles: their district's residents; city-wide
    staff also get the requests that matched nobody in the register."""
    statement = sa.select(AccountLinkRequest).where(AccountLinkRequest.status == status)
    if officer.district_id is not None:
        statement = statement.join(Resident, AccountLinkRequest.resident_id == Resident.id).where(
            Resident.district_id == officer.district_id
        )
    return statement


def _request_for_decision(officer: User, request_id: int) -> AccountLinkRequest:
    if not officer.has_role("bureau_officer"):
        raise PermissionDenied(_l("Only a bureau officer can decide link requests."))
    link = db.session.get(AccountLinkRequest, request_id, with_for_update=True)
    if link is None:
        raise NotFound()
    district_id = link.resident.district_id if link.resident else None
    # Out-of-district requests, and unmatched ones for district staff, look like missing ones.
    if officer.district_id is not None and officer.district_id != district_id:
        raise NotFound()
    if link.status != "pending":
        raise Conflict(
            _l("This request has already been decided."), details={"status": link.status}
        )
    return link


def _acts_for(user: User, resident: Resident) -> bool:
    return (
        db.session.scalar(
            sa.select(FamilyLink.id).where(
                FamilyLink.agent_user_id == user.id, FamilyLink.resident_id == resident.id
            )
        )
        is not None
    )


def _link(user: User, resident: Resident, relationship: str) -> None:
    """Make ``user`` the resident's own account, or one of the resident's family agents."""
    if relationship == SELF:
        if user.resident_id is not None:
            raise Conflict(_l("This account is already linked to a resident's own record."))
        own = db.session.scalar(
            sa.select(User.id)
            .where(User.resident_id == resident.id, User.active.is_(True), User.id != user.id)
            .limit(1)
        )
        if own is not None:
            raise Conflict(
                _l("This resident already has an account of their own; deactivate it first.")
            )
        user.resident_id = resident.id
        return
    if _acts_for(user, resident):
        raise Conflict(_l("This account already acts for this resident."))
    db.session.add(
        FamilyLink(
            agent_user_id=user.id,
            resident_id=resident.id,
            relationship=relationship,
            consent_date=local_today(),  # the bureau confirms the elder's consent today
        )
    )


notice_messages(
    "account_link.confirmed",
    _l("Your account is linked"),
    _l(
        "The bureau has linked your account to the record of %(who)s: you can now see and "
        "use the vouchers on your phone."
    ),
)
notice_messages(
    "account_link.refused",
    _l("Your link request was refused"),
    _l("The bureau could not confirm your request to link to %(who)s. Reason: %(reason)s"),
)


def _tell_asker(link: AccountLinkRequest) -> None:
    """The answer, in the asker's Messages (and email), in the reader's language."""
    who = mask_name(link.name)
    if link.status == "confirmed":
        subject, body = notice("account_link.confirmed", who=who)
    else:
        subject, body = notice("account_link.refused", who=who, reason=link.refusal_reason)
    enqueue(link.user_id, subject, body, f"account-link-{link.status}:{link.id}")


def confirm_link(officer: User, request_id: int) -> AccountLinkRequest:
    link = _request_for_decision(officer, request_id)
    if link.resident is None:
        raise Conflict(
            _l("No registered resident has this ID number; refuse the request with a reason.")
        )
    if not link.name_matches:
        raise Conflict(
            _l("The name given does not match the register; refuse the request with a reason.")
        )
    _link(link.user, link.resident, link.relationship)
    link.status, link.decided_by_user_id, link.decided_at = "confirmed", officer.id, now_utc()
    db.session.flush()
    audit.record(
        "account_link.confirm",
        link,
        actor=officer,
        district_id=link.resident.district_id,
        after={"user": link.user.username, "resident_id": link.resident_id,
               "relationship": link.relationship},
    )  # fmt: skip
    _tell_asker(link)
    return link


def refuse_link(officer: User, request_id: int, reason: str) -> AccountLinkRequest:
    reason = (reason or "").strip()
    if not reason or len(reason) > MAX_REASON_LENGTH:
        raise InvalidInput(
            details={
                "reason": _l(
                    "Give the reason the person will read (at most %(n)s characters).",
                    n=MAX_REASON_LENGTH,
                )
            }
        )
    link = _request_for_decision(officer, request_id)
    link.status, link.decided_by_user_id, link.decided_at = "refused", officer.id, now_utc()
    link.refusal_reason = reason
    db.session.flush()
    audit.record(
        "account_link.refuse",
        link,
        actor=officer,
        district_id=link.resident.district_id if link.resident else None,
        after={"user": link.user.username, "reason": reason},
    )
    _tell_asker(link)
    return link


# --- accounts the bureau creates ---------------------------------------------------------


def create_linked_account(
    officer: User,
    resident: Resident,
    *,
    username: str,
    display_name: str,
    password: str,
    relationship: str,
) -> User:
    """At the office, with the person in front of them, a bureau officer creates an elder's
    own account (``self``) or a family member's, linked to the resident at once."""
    if not officer.has_role("bureau_officer"):
        raise PermissionDenied(_l("Only a bureau officer can create accounts for residents."))
    if officer.district_id is not None and officer.district_id != resident.district_id:
        raise NotFound()
    if relationship not in LINK_RELATIONSHIPS:
        raise InvalidInput(
            details={"relationship": _l("Choose how the account holder is related to this person.")}
        )
    role = "elder" if relationship == SELF else "family_agent"
    user = account_service.create_user(
        username, display_name=display_name, password=password, roles=[role]
    )
    db.session.flush()
    _link(user, resident, relationship)
    db.session.flush()
    audit.record(
        "account_link.direct",
        user,
        actor=officer,
        district_id=resident.district_id,
        after={"user": user.username, "resident_id": resident.id, "relationship": relationship},
    )
    return user
