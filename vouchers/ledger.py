"""The subsidy pool as a double-entry ledger.

Money lives in buckets (``ledger_accounts``). Every movement is one journal entry whose lines
sum to zero, written in the caller's transaction together with the change that causes it.
Balances move by conditional UPDATEs: a bucket that may not go negative refuses in the same
statement that would have taken it below zero (and a CHECK constraint backs that up), so two
transactions racing for the last fen cannot both win.

The database guards the books too (migration 0008): journal rows cannot be updated or
deleted, and on PostgreSQL a deferred constraint trigger refuses, at commit, a transaction
that leaves any entry's lines not summing to zero. ``verify_ledger`` proves the rest: every
balance equals its lines, and the accounts that mirror rows elsewhere (vouchers, holds,
redemptions) equal the sum of those rows.

Lock order. Every transaction that moves money takes its locks in this one order, so two
of them can wait for each other but never deadlock:

1. the issuance lock (``issuance.serialize_issuance``), only in issuing, expiry,
   revocation and the eligibility feed;
2. the audit chain's lock (``eldercare.audit.lock_chain``), first thing in every money
   step (``post`` takes it too, for callers that did not);
3. rows of the change itself: a redemption's row before its voucher's row;
4. ledger accounts, by account code only, whatever the sign of the amount (``post``).

Holding (2) serialises money transactions with each other; (4) still matters to anything
that updates accounts without it, and keeps the order obvious.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from eldercare import audit
from eldercare.db import db
from eldercare.errors import InvalidInput
from vouchers.errors import InsufficientFunds
from vouchers.models import ENTRY_KINDS, JournalEntry, JournalLine, LedgerAccount


def district_account_code(district_code: str) -> str:
    return f"district:{district_code}:available"


def account(code: str, *, create_name: str | None = None) -> LedgerAccount:
    """The account with this code; district accounts are opened on first use."""
    statement = sa.select(LedgerAccount).where(LedgerAccount.code == code)
    found = db.session.scalar(statement)
    if found is None:
        if create_name is None:
            raise InvalidInput(details={"account": code})
        try:
            with db.session.begin_nested():
                db.session.add(LedgerAccount(code=code, name=create_name, balance_fen=0))
        except sa.exc.IntegrityError:
            pass  # another transaction opened it at the same moment: use theirs
        found = db.session.scalar(statement)
    return found


def post(
    kind: str,
    memo: str,
    lines: Iterable[tuple[str, int]],
    *,
    cause: tuple[str, object] | None = None,
    actor_id: int | None = None,
) -> JournalEntry:
    """Write one balanced entry: ``lines`` are (account code, amount in fen) pairs."""
    audit.lock_chain()  # step 2 of the lock order, before any account row
    lines = list(lines)
    if kind not in ENTRY_KINDS:
        raise ValueError(f"unknown entry kind {kind!r}")
    if any(isinstance(a, bool) or not isinstance(a, int) for _, a in lines):
        raise ValueError("amounts are whole fen")
    lines = [(code, amount) for code, amount in lines if amount != 0]
    if not lines or sum(amount for _, amount in lines) != 0:
        raise ValueError(f"unbalanced entry {kind}: {lines}")
    entry = JournalEntry(
        kind=kind,
        memo=memo[:200],
        cause_type=cause[0] if cause else None,
        cause_id=str(cause[1]) if cause else None,
        created_by_user_id=actor_id,
    )
    db.session.add(entry)
    db.session.flush()
    # Step 4 of the lock order: by code only. Sorting debits first would lock the same two
    # accounts in opposite orders for opposite movements (hold vs release, issue vs
    # expiry). A refused debit still refuses the whole entry: it is one transaction.
    for code, amount in sorted(lines, key=lambda line: line[0]):
        target = account(code)
        moved = db.session.execute(
            sa.update(LedgerAccount)
            .where(
                LedgerAccount.id == target.id,
                sa.or_(
                    LedgerAccount.may_go_negative,
                    LedgerAccount.balance_fen + amount >= 0,
                ),
            )
            .values(balance_fen=LedgerAccount.balance_fen + amount)
            .execution_options(synchronize_session=False)
        ).rowcount
        if moved != 1:
            raise InsufficientFunds(details={"account": code, "amount_fen": -amount})
        db.session.add(JournalLine(entry_id=entry.id, account_id=target.id, amount_fen=amount))
    db.session.flush()
    db.session.expire_all()  # balances changed in SQL; reload them when next read
    return entry


@dataclass(frozen=True)
class LedgerCheck:
    ok: bool
    unbalanced_entries: list[int]
    drifted_accounts: list[str]  # running balance differs from the sum of its lines
    total_fen: int  # all balances together: zero when the books balance


def verify_ledger() -> LedgerCheck:
    """Reconcile the books: every entry sums to zero and every balance equals its lines."""
    unbalanced = list(
        db.session.scalars(
            sa.select(JournalLine.entry_id)
            .group_by(JournalLine.entry_id)
            .having(sa.func.sum(JournalLine.amount_fen) != 0)
        )
    )
    sums = dict(
        db.session.execute(
            sa.select(JournalLine.account_id, sa.func.sum(JournalLine.amount_fen)).group_by(
                JournalLine.account_id
            )
        ).all()
    )
    drifted, total = [], 0
    for acct in db.session.scalars(sa.select(LedgerAccount).order_by(LedgerAccount.code)):
        total += acct.balance_fen
        if acct.balance_fen != (sums.get(acct.id) or 0):
            drifted.append(acct.code)
    return LedgerCheck(not unbalanced and not drifted and total == 0, unbalanced, drifted, total)


def balances() -> dict[str, int]:
    return dict(
        db.session.execute(
            sa.select(LedgerAccount.code, LedgerAccount.balance_fen).order_by(LedgerAccount.code)
        ).all()
    )


AMOUNT_MESSAGE = _l("Enter an amount in yuan greater than zero.")
