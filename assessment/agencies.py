"""Certified assessment agencies and their assessors."""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from assessment.models import AGENCY_STATUSES, Agency, Assessor
from eldercare import audit
from eldercare.account_service import create_user
from eldercare.accounts import User
from eldercare.credit_codes import is_valid_credit_code
from eldercare.db import db
from eldercare.errors import Conflict, InvalidInput
from eldercare.timeutil import local_today, now_utc


def create_agency(
    *,
    name: str,
    licence_number: str,
    certified_until: date,
    credit_code: str | None = None,
    district_id: int | None = None,
) -> Agency:
    errors = {}
    if not name or not name.strip():
        errors["name"] = _l("Enter the agency's name.")
    if not licence_number or not licence_number.strip():
        errors["licence_number"] = _l("Enter the licence number.")
    credit_code = (credit_code or "").strip().upper() or None
    if credit_code and not is_valid_credit_code(credit_code):
        errors["credit_code"] = _l(
            "This is not a valid unified social credit code (18 characters; check the last one)."
        )
    if certified_until < local_today():
        errors["certified_until"] = _l("The certification must run until today or later.")
    if errors:
        raise InvalidInput(details=errors)
    if db.session.scalar(sa.select(Agency.id).where(Agency.licence_number == licence_number)):
        raise Conflict(_l("An agency with this licence number already exists."))
    agency = Agency(
        name=name.strip(),
        licence_number=licence_number.strip(),
        credit_code=credit_code,
        certified_until=certified_until,
        district_id=district_id,
        status="active",
    )
    db.session.add(agency)
    audit.record(
        "agency.create",
        agency,
        after={"licence": agency.licence_number, "certified_until": certified_until.isoformat()},
    )
    return agency


def set_agency_status(agency: Agency, status: str, reason: str) -> None:
    """A bureau decision: suspend, revoke or reinstate, always with a reason."""
    if status not in AGENCY_STATUSES:
        raise InvalidInput(details={"status": _l("Unknown status.")})
    if not reason or not reason.strip():
        raise InvalidInput(details={"reason": _l("Give the reason for this decision.")})
    if agency.status == "revoked":
        raise Conflict(_l("A revoked certification cannot be changed; certify anew."))
    before = agency.status
    agency.status, agency.status_reason, agency.status_changed_at = (
        status,
        reason.strip(),
        now_utc(),
    )
    audit.record(
        "agency.status",
        agency,
        before={"status": before},
        after={"status": status, "reason": agency.status_reason},
    )


def renew_certification(agency: Agency, certified_until: date, reason: str) -> None:
    """The bureau extends (or shortens) a certification after its yearly review."""
    if not reason or not reason.strip():
        raise InvalidInput(details={"reason": _l("Give the reason for this decision.")})
    if agency.status == "revoked":
        raise Conflict(_l("A revoked certification cannot be changed; certify anew."))
    before = agency.certified_until
    agency.certified_until = certified_until
    audit.record(
        "agency.renew",
        agency,
        before={"certified_until": before.isoformat()},
        after={"certified_until": certified_until.isoformat(), "reason": reason.strip()},
    )


def add_assessor(
    agency: Agency, user: User, *, name: str, certificate_number: str, valid_until: date
) -> Assessor:
    if db.session.scalar(
        sa.select(Assessor.id).where(
            sa.or_(Assessor.user_id == user.id, Assessor.certificate_number == certificate_number)
        )
    ):
        raise Conflict(_l("This account or certificate is already registered as an assessor."))
    assessor = Assessor(
        user_id=user.id,
        agency_id=agency.id,
        name=name,
        certificate_number=certificate_number,
        certificate_valid_until=valid_until,
    )
    db.session.add(assessor)
    audit.record(
        "assessor.create",
        assessor,
        after={
            "agency": agency.licence_number,
            "certificate": certificate_number,
            "valid_until": valid_until.isoformat(),
        },
    )
    return assessor


def register_assessor(
    agency: Agency,
    *,
    username: str,
    display_name: str,
    password: str,
    certificate_number: str,
    valid_until: date,
) -> Assessor:
    """An agency administrator registers a colleague: a new account and their certificate."""
    certificate_number = (certificate_number or "").strip()
    if not certificate_number:
        raise InvalidInput(details={"certificate_number": _l("Enter the certificate number.")})
    if valid_until < local_today():
        raise InvalidInput(details={"valid_until": _l("This certificate has already expired.")})
    user = create_user(username, display_name=display_name, password=password, roles=["assessor"])
    db.session.flush()
    return add_assessor(
        agency,
        user,
        name=user.display_name,
        certificate_number=certificate_number,
        valid_until=valid_until,
    )


def renew_assessor_certificate(assessor: Assessor, valid_until: date) -> None:
    before = assessor.certificate_valid_until
    assessor.certificate_valid_until = valid_until
    audit.record(
        "assessor.certificate",
        assessor,
        before={"valid_until": before.isoformat()},
        after={"valid_until": valid_until.isoformat()},
    )


def assessor_for_user(user: User) -> Assessor | None:
    return db.session.scalar(sa.select(Assessor).where(Assessor.user_id == user.id))
