"""The bank account a provider's settlements are paid to, and how it changes.

A certified provider's administrator cannot change the account directly (the classic
diversion fraud is a changed account just before a payment run): they request a change
(``request_change``), and it takes effect only when city-wide bureau staff other than the
requester approve it (``approve``), or stays as it was when they reject it with a reason
(``reject``). Both ways are audited with the account masked. At most one request per
provider waits at a time (a partial unique index). Statements copy the provider's account
when they are prepared and approved, so an approved change reaches the next statement and
never one already approved (whose snapshot is frozen).

Before certification the application itself gives the account
(``marketplace.providers.apply_provider``), and an applicant may still correct it.
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from eldercare import audit
from eldercare.accounts import BUREAU_ROLES, User
from eldercare.db import db
from eldercare.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from eldercare.timeutil import now_utc
from marketplace.models import Provider
from vouchers.settlement.models import PayeeChange

ACCOUNT_NUMBER = re.compile(r"\d{8,30}")  # digits only, once spaces are taken out
NAME_LIMIT = 120
REASON_MIN = 5

NOT_CITY_BUREAU = _l("Only city-wide bureau officers and approvers decide bank-account changes.")


def normalized_number(text: str | None) -> str:
    return (text or "").replace(" ", "").replace("-", "").strip()


def masked(number: str | None) -> str:
    """An account number as pages show it: only its last four digits."""
    number = number or ""
    return "*" * max(len(number) - 4, 0) + number[-4:]


def account_problems(account_name: str, bank_name: str, account_number: str) -> dict:
    """Field errors in an account as entered (the same rules as the application's)."""
    errors: dict = {}
    if not (account_name or "").strip():
        errors["account_name"] = _l("Enter the account holder's name exactly as the bank has it.")
    elif len(account_name.strip()) > NAME_LIMIT:
        errors["account_name"] = _l("The account holder's name is at most 120 characters.")
    if not (bank_name or "").strip():
        errors["bank_name"] = _l("Enter the bank and branch, e.g. 盛京银行沈阳分行.")
    elif len(bank_name.strip()) > NAME_LIMIT:
        errors["bank_name"] = _l("The bank and branch are at most 120 characters.")
    if not ACCOUNT_NUMBER.fullmatch(normalized_number(account_number)):
        errors["account_number"] = _l("Enter the bank account number (8 to 30 digits).")
    return errors


def pending_of(provider_id: int) -> PayeeChange | None:
    return db.session.scalar(
        sa.select(PayeeChange).where(
            PayeeChange.provider_id == provider_id, PayeeChange.status == "pending"
        )
    )


def _summary(change: PayeeChange) -> dict:
    return {
        "account_name": change.account_name,
        "bank_name": change.bank_name,
        "account_number": masked(change.account_number),
    }


def _current(provider: Provider) -> dict:
    return {
        "account_name": provider.bank_account_name,
        "bank_name": provider.bank_name,
        "account_number": masked(provider.bank_account_number),
    }


def request_change(
    provider: Provider, *, account_name: str, bank_name: str, account_number: str, actor: User
) -> PayeeChange:
    """A provider administrator's request (the caller has checked that ``actor``
    administers ``provider``). Audited; nothing changes on the provider yet."""
    errors = account_problems(account_name, bank_name, account_number)
    if errors:
        raise InvalidInput(details=errors)
    number = normalized_number(account_number)
    if (account_name.strip(), bank_name.strip(), number) == (
        provider.bank_account_name,
        provider.bank_name,
        provider.bank_account_number,
    ):
        raise InvalidInput(
            details={"account_number": _l("This is already the account you are paid to.")}
        )
    if pending_of(provider.id) is not None:
        raise Conflict(_l("A change is already waiting for the bureau's decision."))
    change = PayeeChange(
        provider_id=provider.id,
        account_name=account_name.strip(),
        bank_name=bank_name.strip(),
        account_number=number,
        status="pending",
        requested_by_user_id=actor.id,
        requested_at=now_utc(),
    )
    try:
        with db.session.begin_nested():
            db.session.add(change)
            db.session.flush()
    except sa.exc.IntegrityError:  # another request at the same moment (unique index)
        raise Conflict(_l("A change is already waiting for the bureau's decision.")) from None
    audit.record(
        "provider.payee_change_request",
        change,
        district_id=provider.district_id,
        before=_current(provider),
        after=_summary(change) | {"provider_id": provider.id},
        actor=actor,
    )
    return change


def _check_decider(change: PayeeChange, actor: User) -> None:
    if not actor.has_role(*BUREAU_ROLES) or actor.district_id is not None:
        raise PermissionDenied(NOT_CITY_BUREAU)
    if actor.id == change.requested_by_user_id:
        raise PermissionDenied(_l("You requested this change: another person must decide it."))


def _decide(change: PayeeChange, status: str, actor: User, reason: str | None) -> None:
    """Pending -> approved/rejected in one conditional UPDATE: of two deciders at once,
    one wins and the other is told."""
    done = db.session.execute(
        sa.update(PayeeChange)
        .where(PayeeChange.id == change.id, PayeeChange.status == "pending")
        .values(status=status, decided_by_user_id=actor.id, decided_at=now_utc(), reason=reason)
        .execution_options(synchronize_session=False)
    ).rowcount
    if done != 1:
        raise Conflict(_l("This change has already been decided."))
    db.session.refresh(change)


def approve(change: PayeeChange, *, actor: User) -> None:
    """The provider is paid to the new account from the next statement on."""
    _check_decider(change, actor)
    _decide(change, "approved", actor, None)
    provider = db.session.get(Provider, change.provider_id, with_for_update=True)
    before = _current(provider)
    provider.bank_account_name = change.account_name
    provider.bank_name = change.bank_name
    provider.bank_account_number = change.account_number
    db.session.flush()
    audit.record(
        "provider.payee_change_approve",
        change,
        district_id=provider.district_id,
        before=before,
        after=_summary(change) | {"provider_id": provider.id, "status": "approved"},
        actor=actor,
    )


def reject(change: PayeeChange, *, reason: str, actor: User) -> None:
    text = (reason or "").strip() if isinstance(reason, str) else ""
    if len(text) < REASON_MIN:
        raise InvalidInput(details={"reason": _l("Give the reason for refusing the change.")})
    _check_decider(change, actor)
    _decide(change, "rejected", actor, text[:2000])
    provider = db.session.get(Provider, change.provider_id)
    audit.record(
        "provider.payee_change_reject",
        change,
        district_id=provider.district_id,
        before={"status": "pending"},
        after=_summary(change) | {"provider_id": provider.id, "status": "rejected", "reason": text},
        actor=actor,
    )


def change_by_id(change_id: int) -> PayeeChange:
    change = db.session.get(PayeeChange, change_id)
    if change is None:
        raise NotFound()
    return change


def pending_changes() -> list[tuple[PayeeChange, Provider]]:
    """Every request waiting for a decision, oldest first, with its provider."""
    return list(
        db.session.execute(
            sa.select(PayeeChange, Provider)
            .join(Provider, Provider.id == PayeeChange.provider_id)
            .where(PayeeChange.status == "pending")
            .order_by(PayeeChange.requested_at, PayeeChange.id)
        ).all()
    )


def history_of(provider_id: int, limit: int = 20) -> list[PayeeChange]:
    return list(
        db.session.scalars(
            sa.select(PayeeChange)
            .where(PayeeChange.provider_id == provider_id)
            .order_by(PayeeChange.requested_at.desc(), PayeeChange.id.desc())
            .limit(limit)
        )
    )
