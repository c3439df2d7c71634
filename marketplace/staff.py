"""A provider's people, as its administrators manage them.

- staff accounts: an administrator invites a colleague (a new account, role provider_staff,
  or provider_admin for another administrator), records their caregiver certificate
  (养老护理员) and its validity, and deactivates them when they leave;
- ``staff_may_deliver``: whether a staff member may deliver a service of a category on a day
  (categories marked ``requires_caregiver_certificate`` need a certificate valid that day).

The provider's own details (contact, opening hours, bank account) are ``providers.update_profile``.

Every change is audited in the caller's transaction.
"""

from __future__ import annotations

import re
from datetime import date

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from eldercare import audit
from eldercare.account_service import create_user
from eldercare.accounts import User
from eldercare.db import db
from eldercare.errors import Conflict, InvalidInput, NotFound
from eldercare.timeutil import local_today
from marketplace.models import Provider, ProviderStaff, ServiceCategory

MAX_CERTIFICATE_NUMBER = 40  # the column's length


# --------------------------------------------------------------------------- staff


def staff_may_deliver(staff: ProviderStaff, category: ServiceCategory, day: date) -> bool:
    """May this staff member deliver a service of ``category`` on ``day``?"""
    if not staff.active:
        return False
    if category.requires_caregiver_certificate:
        return staff.certified_on(day)
    return True


def staff_of(provider: Provider) -> list[ProviderStaff]:
    """Everyone who works or worked for the provider: active first, then by name."""
    return list(
        db.session.scalars(
            sa.select(ProviderStaff)
            .join(User, User.id == ProviderStaff.user_id)
            .where(ProviderStaff.provider_id == provider.id)
            .order_by(ProviderStaff.active.desc(), User.display_name, ProviderStaff.id)
        )
    )


def staff_member(provider: Provider, staff_id: int) -> ProviderStaff:
    """One of the provider's staff; another provider's (or no one's) id is NotFound."""
    staff = db.session.get(ProviderStaff, staff_id)
    if staff is None or staff.provider_id != provider.id:
        raise NotFound()
    return staff


def _certificate_problems(
    number: str | None, valid_until: date | None, today: date, *, exclude_id: int | None = None
) -> tuple[str | None, dict]:
    """The cleaned certificate number and field errors (both or neither must be given)."""
    errors: dict = {}
    number = (number or "").strip().upper() or None
    if number is None and valid_until is None:
        return None, errors
    if number is None:
        errors["certificate_number"] = _l("Enter the certificate number, or leave both blank.")
    elif len(number) > MAX_CERTIFICATE_NUMBER or not re.fullmatch(r"[0-9A-Z-]+", number):
        errors["certificate_number"] = _l(
            "A certificate number has at most 40 digits, capital letters and dashes."
        )
    if valid_until is None:
        errors["certificate_valid_until"] = _l(
            "Enter the last day the certificate is valid, or leave both blank."
        )
    elif valid_until < today:
        errors["certificate_valid_until"] = _l(
            "This certificate has expired; record a certificate that is valid today or later."
        )
    if number and not errors:
        clash = sa.select(ProviderStaff.id).where(
            ProviderStaff.caregiver_certificate_number == number, ProviderStaff.active
        )
        if exclude_id is not None:
            clash = clash.where(ProviderStaff.id != exclude_id)
        if db.session.scalar(clash) is not None:
            errors["certificate_number"] = _l(
                "This certificate number is already recorded for another staff member."
            )
    return number, errors


def invite_staff(
    provider: Provider,
    *,
    username: str,
    display_name: str,
    password: str,
    is_admin: bool = False,
    certificate_number: str | None = None,
    certificate_valid_until: date | None = None,
    today: date | None = None,
) -> ProviderStaff:
    """A new account working for ``provider``, with its caregiver certificate if any."""
    number, errors = _certificate_problems(
        certificate_number, certificate_valid_until, today or local_today()
    )
    try:
        user = create_user(
            username,
            display_name=display_name,
            password=password,
            roles=["provider_admin" if is_admin else "provider_staff"],
        )
    except InvalidInput as error:
        raise InvalidInput(details={**error.details, **errors}) from None
    except Conflict as error:  # the username is taken: say so next to it
        raise Conflict(error.message, details={"username": error.message}) from None
    if errors:
        raise InvalidInput(details=errors)
    db.session.flush()
    staff = ProviderStaff(
        provider_id=provider.id,
        user_id=user.id,
        user=user,
        is_admin=is_admin,
        caregiver_certificate_number=number,
        certificate_valid_until=certificate_valid_until if number else None,
    )
    db.session.add(staff)
    audit.record(
        "provider.staff_invite",
        staff,
        district_id=provider.district_id,
        after={
            "provider_id": provider.id,
            "username": user.username,
            "is_admin": is_admin,
            "certificate_number": number,
            "certificate_valid_until": staff.certificate_valid_until,
        },
    )
    return staff


def set_certificate(
    staff: ProviderStaff,
    *,
    number: str | None,
    valid_until: date | None,
    today: date | None = None,
) -> None:
    """Record, renew or (both blank) remove a staff member's caregiver certificate."""
    if not staff.active:
        raise Conflict(_l("This staff member has been deactivated."))
    number, errors = _certificate_problems(
        number, valid_until, today or local_today(), exclude_id=staff.id
    )
    if errors:
        raise InvalidInput(details=errors)
    before = {
        "certificate_number": staff.caregiver_certificate_number,
        "certificate_valid_until": staff.certificate_valid_until,
    }
    staff.caregiver_certificate_number = number
    staff.certificate_valid_until = valid_until if number else None
    audit.record(
        "provider.staff_certificate",
        staff,
        district_id=_district_of(staff),
        before=before,
        after={
            "certificate_number": staff.caregiver_certificate_number,
            "certificate_valid_until": staff.certificate_valid_until,
        },
    )


def deactivate_staff(staff: ProviderStaff, *, actor: User) -> None:
    """The person no longer works for the provider; their history stays."""
    if not staff.active:
        return
    if staff.user_id == actor.id:
        raise Conflict(_l("You cannot deactivate your own account here."))
    if staff.is_admin:
        admins = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(ProviderStaff)
            .where(
                ProviderStaff.provider_id == staff.provider_id,
                ProviderStaff.is_admin,
                ProviderStaff.active,
            )
        )
        if admins <= 1:
            raise Conflict(_l("A provider needs at least one active administrator."))
    staff.active = False
    audit.record(
        "provider.staff_deactivate",
        staff,
        district_id=_district_of(staff),
        before={"active": True},
        after={"active": False},
    )


def _district_of(staff: ProviderStaff) -> int | None:
    return db.session.scalar(
        sa.select(Provider.district_id).where(Provider.id == staff.provider_id)
    )
