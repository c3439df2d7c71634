"""The bank account an assessment-fee refund is paid to.

The elder (or a family agent acting for them) gives it on their own page; a bureau officer
may record it on the elder's behalf (after a phone call, a visit to the office), saying on
whose word. Either way it is validated, audited (before and after) and can no longer be
changed once the refund is paid or is in a bank batch (a transfer that has not failed): the
bank is paid from the batch's copy, so a change then would only make the records disagree.

Race with a bank batch being built: ``set_account`` locks the refund's row (PostgreSQL: FOR
UPDATE) and only then looks for a live transfer, in a statement of its own, so it sees a
batch that committed while it waited. A batch builder that locks the refund rows it takes
(FOR UPDATE, as settlement's bank batch does) therefore either waits for the change and
copies the new account, or commits first and the change is refused.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from assessment.models import FeeRefund
from eldercare import audit
from eldercare.accounts import BUREAU_ROLES, User, elders_acted_for
from eldercare.auth import ensure_in_district
from eldercare.db import db
from eldercare.errors import Conflict, InvalidInput, NotFound, PermissionDenied

NAME_LENGTH = (2, 60)
BANK_LENGTH = (2, 60)
NUMBER_LENGTH = (8, 30)
NOTE_MAX = 500
# Spaces and dashes people type to group the digits ("6222 0212 3456 7890").
_GROUPING = re.compile(r"[\s\-]+")

NAME_PROBLEM = _l("Enter the account holder's name as the bank has it (2 to 60 characters).")
BANK_PROBLEM = _l(
    "Enter the bank and branch, e.g. ICBC Shenyang Heping Sub-branch (2 to 60 characters)."
)
NUMBER_LETTERS = _l("A bank account number has digits only, no letters.")
NUMBER_PROBLEM = _l("Enter the account number: 8 to 30 digits.")
NOTE_PROBLEM = _l(
    "Say on whose word you record it, e.g. a phone call with the elder's son "
    "(at most 500 characters)."
)
NOT_YOURS = _l("Only the elder, their family agent or the bureau can give this account.")
LOCKED_PAID = _l("This refund has been paid; its account can no longer be changed.")
LOCKED_BATCH = _l(
    "This refund is in a bank transfer batch; its account cannot be changed unless the "
    "bank returns the transfer as failed."
)

# Settlement's table, named here (assessment never imports vouchers).
_transfers = sa.table(
    "bank_transfers", sa.column("fee_refund_id"), sa.column("status"), sa.column("id")
)


@dataclass(frozen=True)
class Account:
    name: str
    bank: str
    number: str


def _text(value) -> str:
    return " ".join(value.split()) if isinstance(value, str) else ""


def read_account(name, bank, number) -> Account:
    """The account as typed, cleaned (spaces collapsed; the number's grouping spaces and
    dashes dropped), or InvalidInput naming each field that is wrong."""
    errors = {}
    name, bank = _text(name), _text(bank)
    if not NAME_LENGTH[0] <= len(name) <= NAME_LENGTH[1]:
        errors["account_name"] = NAME_PROBLEM
    if not BANK_LENGTH[0] <= len(bank) <= BANK_LENGTH[1]:
        errors["bank_name"] = BANK_PROBLEM
    # Full-width digits (a Chinese input method's "６２２２") are digits all the same.
    typed = unicodedata.normalize("NFKC", number) if isinstance(number, str) else ""
    digits = _GROUPING.sub("", typed)
    if any(ch.isalpha() for ch in digits):
        errors["account_number"] = NUMBER_LETTERS
    elif not (
        digits.isascii()
        and digits.isdigit()
        and NUMBER_LENGTH[0] <= len(digits) <= NUMBER_LENGTH[1]
    ):
        errors["account_number"] = NUMBER_PROBLEM
    if errors:
        raise InvalidInput(details=errors)
    return Account(name, bank, digits)


def masked(number: str | None) -> str:
    """An account number as pages show it: the last four digits."""
    return f"•••• {number[-4:]}" if number else ""


def refund_for_elder(refund_id: int, user: User) -> FeeRefund:
    """A refund of an elder this account acts for; anyone else's looks missing."""
    refund = db.session.get(FeeRefund, refund_id)
    if refund is None or refund.resident_id not in {e.id for e in elders_acted_for(user)}:
        raise NotFound()
    return refund


def refund_for_bureau(refund_id: int, user: User) -> FeeRefund:
    """A refund in the bureau user's district (all for city-wide staff)."""
    refund = db.session.get(FeeRefund, refund_id)
    if refund is None:
        raise NotFound()
    ensure_in_district(refund.district_id, user=user)
    return refund


def in_live_transfer(refund_id: int) -> bool:
    return (
        db.session.scalar(
            sa.select(_transfers.c.id)
            .where(_transfers.c.fee_refund_id == refund_id, _transfers.c.status != "failed")
            .limit(1)
        )
        is not None
    )


def changeable(refund: FeeRefund) -> bool:
    """Whether the account may still be given or changed (what the pages offer)."""
    return refund.status != "paid" and not in_live_transfer(refund.id)


def refunds_of(resident_id: int) -> list[dict]:
    """An elder's fee refunds as their page shows them, newest first."""
    refunds = db.session.scalars(
        sa.select(FeeRefund)
        .where(FeeRefund.resident_id == resident_id)
        .order_by(FeeRefund.owed_on.desc(), FeeRefund.id.desc())
    ).all()
    return [
        {
            "refund": refund,
            "changeable": changeable(refund),
            "masked_number": masked(refund.payee_account_number),
        }
        for refund in refunds
    ]


def set_account(
    refund: FeeRefund,
    *,
    account_name,
    bank_name,
    account_number,
    actor: User,
    note: str | None = None,
) -> None:
    """Give or change the refund's account. The elder or a family agent acting for them, or
    a bureau officer of the refund's district, who must say on whose word (``note``)."""
    by_bureau = actor.has_role(*BUREAU_ROLES)
    if by_bureau:
        ensure_in_district(refund.district_id, user=actor)
    elif refund.resident_id not in {e.id for e in elders_acted_for(actor)}:
        raise PermissionDenied(NOT_YOURS)
    errors = {}
    try:
        account = read_account(account_name, bank_name, account_number)
    except InvalidInput as error:
        errors.update(error.details)
    note = _text(note)
    if by_bureau and not 1 <= len(note) <= NOTE_MAX:
        errors["note"] = NOTE_PROBLEM
    if errors:
        raise InvalidInput(details=errors)
    # The row first, then the batch: see the module's note on the race with a batch.
    db.session.refresh(refund, with_for_update={"of": FeeRefund})
    if refund.status == "paid":
        raise Conflict(LOCKED_PAID)
    if in_live_transfer(refund.id):
        raise Conflict(LOCKED_BATCH)
    before = {
        "account_name": refund.payee_account_name,
        "bank_name": refund.payee_bank_name,
        "account_number": refund.payee_account_number,
    }
    refund.payee_account_name = account.name
    refund.payee_bank_name = account.bank
    refund.payee_account_number = account.number
    db.session.flush()
    audit.record(
        "fee_refund.payee_account",
        refund,
        district_id=refund.district_id,
        actor=actor,
        before=before if any(before.values()) else None,
        after={
            "account_name": account.name,
            "bank_name": account.bank,
            "account_number": account.number,
            "by": "bureau" if by_bureau else "elder",
            **({"note": note} if by_bureau else {}),
        },
    )
