"""Provider onboarding and certification by the bureau.

    applied -> active -> suspended -> active (reinstated)
       |          \\          \\
       v           v          v
    rejected     revoked    revoked

A certification lasts a year from approval or renewal (``certified_until``); after that the
provider is no longer listed and can accept nothing, without any job having to run.

A certified provider's administrators keep its contact and opening hours up to date
(``update_profile``); its name and credit code are the bureau's record and stay as applied.
The bank account settlements are paid to is given with the application and may be corrected
until certification; after that it changes only through a request the bureau approves
(``vouchers.settlement.bank.payees``: a changed account just before a payment run is the classic
diversion fraud).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import date, timedelta

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l
from sqlalchemy.orm import Session

from eldercare import audit
from eldercare.accounts import User
from eldercare.credit_codes import credit_code_problem
from eldercare.db import db
from eldercare.errors import Conflict, InvalidInput, PermissionDenied
from eldercare.residents import District
from eldercare.timeutil import local_today, now_utc
from marketplace import documents
from marketplace.errors import InvalidTransition
from marketplace.models import PROVIDER_TYPES, Provider, ProviderStaff

CERTIFICATION_DAYS = 365
_PHONE = re.compile(r"^(1[3-9]\d{9}|0\d{2,3}-?\d{7,8})$")
_ACCOUNT_NUMBER = re.compile(r"\d{8,30}")  # with spaces removed
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
CREDIT_CODE_MESSAGES = {
    "format": _l(
        "A unified social credit code has 18 characters (digits and capital letters "
        "except I, O, S, V, Z)."
    ),
    "check_character": _l(
        "The last character of the credit code does not match; please check for a typing mistake."
    ),
}


def _contact_problems(
    contact_name: str,
    contact_phone: str,
    bank_account_name: str,
    bank_name: str,
    bank_account_number: str,
) -> dict:
    """Field errors in a provider's contact and bank account, on applying as on a change."""
    errors: dict = {}
    if not (contact_name or "").strip():
        errors["contact_name"] = _l("Enter a contact person.")
    if not _PHONE.match((contact_phone or "").strip()):
        errors["contact_phone"] = _l(
            "Enter an 11-digit mobile number or a landline such as 024-12345678."
        )
    if not (bank_account_name or "").strip() or not (bank_name or "").strip():
        errors["bank_account_name"] = _l("Enter the account holder and the bank.")
    if not _ACCOUNT_NUMBER.fullmatch((bank_account_number or "").replace(" ", "")):
        errors["bank_account_number"] = _l("Enter the bank account number (8 to 30 digits).")
    return errors


def validate_opening_hours(hours: dict | None) -> str | None:
    """Canonical JSON of {"mon": [["08:00", "18:00"]], ...}, or InvalidInput."""
    if not hours:
        return None
    clean = {}
    for day, intervals in hours.items():
        if day not in WEEKDAYS or not isinstance(intervals, list):
            raise InvalidInput(details={"opening_hours": _l("Unknown weekday.")})
        for interval in intervals:
            if (
                not isinstance(interval, list | tuple)
                or len(interval) != 2
                or not all(isinstance(t, str) and _HHMM.match(t) for t in interval)
                or interval[0] >= interval[1]
            ):
                raise InvalidInput(
                    details={
                        "opening_hours": _l(
                            "Give opening hours as HH:MM to HH:MM, the end after the start."
                        )
                    }
                )
        clean[day] = [list(i) for i in intervals]
    return json.dumps(clean, sort_keys=True, separators=(",", ":"))


def apply_provider(
    *,
    applicant: User,
    name: str,
    credit_code: str,
    type: str,
    district: District | None,
    address: str,
    latitude: float | None,
    longitude: float | None,
    service_districts: list[District],
    contact_name: str,
    contact_phone: str,
    bank_account_name: str,
    bank_name: str,
    bank_account_number: str,
    opening_hours: dict | None = None,
    beds_total: int | None = None,
) -> Provider:
    """An application for certification; the applicant becomes the provider's administrator."""
    errors: dict = {}
    code = (credit_code or "").strip().upper()
    problem = credit_code_problem(code)
    if problem:
        errors["credit_code"] = CREDIT_CODE_MESSAGES[problem]
    if not (name or "").strip():
        errors["name"] = _l("Enter the provider's registered name.")
    if type not in PROVIDER_TYPES:
        errors["type"] = _l("Choose the kind of provider.")
    if district is None:
        errors["district_id"] = _l("Choose the district of the address.")
    if not (address or "").strip():
        errors["address"] = _l("Enter the address where elders are served or staff start from.")
    if (
        latitude is None
        or longitude is None
        or not (-90 <= latitude <= 90 and -180 <= longitude <= 180)
    ):
        errors["latitude"] = _l("Give the location's latitude and longitude.")
    if not service_districts:
        errors["service_districts"] = _l("Choose at least one district you serve.")
    errors.update(
        _contact_problems(
            contact_name, contact_phone, bank_account_name, bank_name, bank_account_number
        )
    )
    if type == "care_institution":
        if beds_total is None or isinstance(beds_total, bool) or not 1 <= beds_total <= 10_000:
            errors["beds_total"] = _l("Enter the number of beds (1 to 10,000).")
    elif beds_total is not None:
        errors["beds_total"] = _l("Only care institutions have beds.")
    try:
        hours_json = validate_opening_hours(opening_hours)
    except InvalidInput as error:
        errors.update(error.details)
    if errors:
        raise InvalidInput(details=errors)
    if db.session.scalar(sa.select(Provider.id).where(Provider.credit_code == code)):
        raise Conflict(
            _l("A provider with this credit code has already applied."),
            details={"credit_code": _l("already registered")},
        )
    if db.session.scalar(sa.select(ProviderStaff.id).where(ProviderStaff.user_id == applicant.id)):
        raise Conflict(_l("This account already works for a provider."))

    provider = Provider(
        name=name.strip(),
        credit_code=code,
        type=type,
        status="applied",
        district_id=district.id,
        address=address.strip(),
        latitude=latitude,
        longitude=longitude,
        contact_name=contact_name.strip(),
        contact_phone=contact_phone.strip(),
        bank_account_name=bank_account_name.strip(),
        bank_name=bank_name.strip(),
        bank_account_number=bank_account_number.replace(" ", ""),
        opening_hours_json=hours_json,
        beds_total=beds_total,
        beds_free=beds_total,
        applied_by_user_id=applicant.id,
    )
    provider.service_districts = list(service_districts)
    db.session.add(provider)
    db.session.flush()
    db.session.add(ProviderStaff(provider_id=provider.id, user_id=applicant.id, is_admin=True))
    audit.record(
        "provider.apply",
        provider,
        district_id=district.id,
        after={"name": provider.name, "credit_code": code, "type": type},
    )
    return provider


def update_profile(
    provider: Provider,
    *,
    contact_name: str,
    contact_phone: str,
    opening_hours: dict | None,
    bank_account_name: str | None = None,
    bank_name: str | None = None,
    bank_account_number: str | None = None,
) -> None:
    """The provider's contact and opening hours; before certification also its bank account
    (audited with the old and new account, since settlements are paid there). A certified
    provider's account is refused here: it changes only with the bureau's approval."""
    bank_given = bank_account_number is not None
    errors = _contact_problems(
        contact_name,
        contact_phone,
        bank_account_name if bank_given else "-",
        bank_name if bank_given else "-",
        bank_account_number if bank_given else provider.bank_account_number,
    )
    hours_json = None
    try:
        hours_json = validate_opening_hours(opening_hours)
    except InvalidInput as error:
        errors.update(error.details)
    new = {
        "contact_name": (contact_name or "").strip(),
        "contact_phone": (contact_phone or "").strip(),
        "opening_hours_json": hours_json,
    }
    if bank_given:
        new |= {
            "bank_account_name": (bank_account_name or "").strip(),
            "bank_name": (bank_name or "").strip(),
            "bank_account_number": bank_account_number.replace(" ", ""),
        }
        if provider.status != "applied" and any(getattr(provider, k) != new[k] for k in BANK):
            errors["bank_account_number"] = CERTIFIED_BANK_MESSAGE
    if errors:
        raise InvalidInput(details=errors)
    before = {k: getattr(provider, k) for k in new if getattr(provider, k) != new[k]}
    if not before:
        return
    for key in before:
        setattr(provider, key, new[key])
    after = {k: new[k] for k in before}
    for summary in (before, after):  # enough to see the change, not the whole number
        if "bank_account_number" in summary:
            summary["bank_account_number"] = _masked(summary["bank_account_number"])
    audit.record(
        "provider.profile", provider, district_id=provider.district_id, before=before, after=after
    )


BANK = ("bank_account_name", "bank_name", "bank_account_number")
CERTIFIED_BANK_MESSAGE = _l(
    "A certified provider's bank account changes only on the payment account page, and takes "
    "effect when the bureau approves it."
)


def _masked(number: str) -> str:
    return number[:4] + "*" * max(len(number) - 8, 0) + number[-4:]


def _locked(provider: Provider) -> None:
    """Reload the provider under its row lock (SELECT ... FOR UPDATE on PostgreSQL; SQLite
    has no row locks), so that a decision reads a status and documents that no concurrent
    decision changes before this one commits: two approvers deciding at once make one
    decision, the second sees the first's. Anything that ever removes a document (nothing
    does today) must take this lock too. Pending changes are flushed first, not lost."""
    db.session.flush()
    db.session.refresh(provider, with_for_update=True)


def _transition(
    provider: Provider,
    allowed: tuple[str, ...],
    new: str,
    reason: str | None,
    action: str,
    *,
    reason_required: bool = True,
    actor: User | None = None,
    under_lock: Callable[[], dict] | None = None,
) -> None:
    """Move the provider from one of ``allowed`` to ``new``, audited. ``under_lock`` runs
    after the status is checked under the row lock, may refuse or change more of the
    provider, and returns what the audit row adds."""
    _locked(provider)
    if provider.status not in allowed:
        raise InvalidTransition(details={"status": provider.status})
    if reason_required and not (reason or "").strip():
        raise InvalidInput(details={"reason": _l("Give the reason for this decision.")})
    after = under_lock() if under_lock is not None else {}
    before = provider.status
    provider.status, provider.status_changed_at = new, now_utc()
    provider.status_reason = (reason or "").strip() or None
    audit.record(
        action,
        provider,
        district_id=provider.district_id,
        before={"status": before},
        after={"status": new, "reason": provider.status_reason, **after},
        actor=actor,
    )


def _waived(waived: dict[str, str]) -> dict:
    """What the audit row adds about waived documents (nothing when none was)."""
    return {"waived_documents": waived} if waived else {}


def approve(
    provider: Provider,
    *,
    today: date | None = None,
    note: str | None = None,
    approver: User | None = None,
    waivers: dict[str, str | None] | None = None,
) -> None:
    """Certify an applicant for a year. Each document its type requires must be uploaded,
    or waived by ``approver`` with a written reason (``documents.certification_waivers``);
    the audit row names the approver (the signed-in user if none is given) and keeps the
    waivers, in the decision's transaction."""
    today = today or local_today()

    def certify() -> dict:
        waived = documents.certification_waivers(provider, waivers, approver)
        provider.certified_until = today + timedelta(days=CERTIFICATION_DAYS - 1)
        return {"certified_until": provider.certified_until.isoformat(), **_waived(waived)}

    _transition(
        provider,
        ("applied",),
        "active",
        note,
        "provider.approve",
        reason_required=False,
        actor=approver,
        under_lock=certify,
    )


def reject(provider: Provider, reason: str) -> None:
    _transition(provider, ("applied",), "rejected", reason, "provider.reject")


def suspend(provider: Provider, reason: str) -> None:
    """Takes effect at once: a suspended provider is unlisted and can accept nothing."""
    _transition(provider, ("active",), "suspended", reason, "provider.suspend")


def reinstate(provider: Provider, reason: str) -> None:
    _transition(provider, ("suspended",), "active", reason, "provider.reinstate")


def revoke(provider: Provider, reason: str) -> None:
    _transition(provider, ("active", "suspended"), "revoked", reason, "provider.revoke")


def renew(
    provider: Provider,
    *,
    today: date | None = None,
    note: str | None = None,
    approver: User | None = None,
    waivers: dict[str, str | None] | None = None,
) -> None:
    """Another year, counted from the end of the current one (or from today if it lapsed).
    The yearly review asks for the same documents as the approval (a provider certified
    before the rule brings them now, or has them waived)."""
    today = today or local_today()
    _locked(provider)
    if provider.status not in ("active", "suspended"):
        raise InvalidTransition(details={"status": provider.status})
    waived = documents.certification_waivers(provider, waivers, approver)
    start = max(today, (provider.certified_until or today) + timedelta(days=1))
    before = provider.certified_until
    provider.certified_until = start + timedelta(days=CERTIFICATION_DAYS - 1)
    audit.record(
        "provider.renew",
        provider,
        district_id=provider.district_id,
        before={"certified_until": before.isoformat() if before else None},
        after={
            "certified_until": provider.certified_until.isoformat(),
            "note": note,
            **_waived(waived),
        },
        actor=approver,
    )


def set_star_level(provider: Provider, stars: int, reason: str) -> None:
    """The bureau's evaluation result."""
    if isinstance(stars, bool) or not isinstance(stars, int) or not 1 <= stars <= 5:
        raise InvalidInput(details={"star_level": _l("Choose 1 to 5 stars.")})
    if not (reason or "").strip():
        raise InvalidInput(details={"reason": _l("Give the reason for this decision.")})
    before = provider.star_level
    provider.star_level = stars
    audit.record(
        "provider.stars",
        provider,
        district_id=provider.district_id,
        before={"star_level": before},
        after={"star_level": stars, "reason": reason},
    )


def provider_by_credit_code(credit_code: str) -> Provider | None:
    return db.session.scalar(
        sa.select(Provider).where(Provider.credit_code == (credit_code or "").strip().upper())
    )


# staff_record's answers in the session's current transaction: {user id: (staff row, its
# provider)}. One request asks several times (the scanner API's guard, the service's own
# checks); held here, the two rows also stay in the identity map (which holds what nothing
# else references only weakly), so ``provider_of``'s get needs no query either. Forgotten
# when the transaction ends or rolls back (a savepoint included).
_STAFF_SEEN = "marketplace.staff_record"


@sa.event.listens_for(Session, "after_transaction_end")
def _forget_staff_at_end(session, transaction) -> None:
    if transaction.parent is None:
        session.info.pop(_STAFF_SEEN, None)


@sa.event.listens_for(Session, "after_soft_rollback")
def _forget_staff_on_rollback(session, previous_transaction) -> None:
    session.info.pop(_STAFF_SEEN, None)


def staff_record(user: User) -> ProviderStaff | None:
    """The user's active staff row, with its provider loaded in the same statement."""
    seen = db.session.info.setdefault(_STAFF_SEEN, {})
    staff, _provider = seen.get(user.id, (None, None))
    if staff is not None:
        state = sa.inspect(staff)
        # Changed in this transaction (deactivated, deleted): ask the database again.
        if staff.active and staff.user_id == user.id and state.persistent:
            return staff
    row = db.session.execute(
        sa.select(ProviderStaff, Provider)
        .join(Provider, Provider.id == ProviderStaff.provider_id)
        .where(ProviderStaff.user_id == user.id, ProviderStaff.active)
    ).first()
    if row is None:
        seen.pop(user.id, None)
        return None
    seen[user.id] = tuple(row)
    return row[0]


def provider_of(user: User, *, admin: bool = False) -> Provider:
    """The provider the user works for (as an administrator, when ``admin``); else 403."""
    staff = staff_record(user)
    if staff is None or (admin and not staff.is_admin):
        raise PermissionDenied(_l("Your account does not administer a service provider."))
    return db.session.get(Provider, staff.provider_id)


def administers_a_provider(user: User) -> None:
    """403 unless the user administers a provider: a view's extra condition
    (``roles_required(also=...)``), which the menus ask too."""
    provider_of(user, admin=True)


def require_certified(provider: Provider, *, today: date | None = None) -> None:
    from marketplace.errors import ProviderNotCertified

    if not provider.is_certified_on(today or local_today()):
        raise ProviderNotCertified()
