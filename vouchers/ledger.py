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

Lock order. Every transaction that moves money takes its row locks in this one order, so
two of them can wait for each other but never deadlock. There is no lock that every money
transaction takes (the audit trail appends without one, ``eldercare.audit``), so two
redemptions of different vouchers never wait for each other except on the accounts of (4):

1. the issuance lock (``issuance.serialize_issuance``), only in issuing, expiry,
   revocation and the eligibility feed;
2. a redemption's row (``redemption.lock_row``, first thing in every money step on it),
   then its payment attempts' rows;
3. voucher rows, in id order when there are several. A transaction that locks several
   vouchers (an expiry batch, a revocation, a run of the eligibility feed) locks all of
   them before it moves any money: once it holds an account of (4) it may not wait for a
   voucher, which a redemption holds while it waits for that account;
4. ledger accounts, by account code only, whatever the sign of the amount (``post``).

Check-in share-locks its voucher (it waits for a revocation in progress and keeps one from
starting) and locks nothing else that exists. Audit rows are inserted, never locked.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from eldercare.db import db
from eldercare.errors import InvalidInput
from vouchers.errors import InsufficientFunds
from vouchers.models import (
    ENTRY_KINDS,
    JournalEntry,
    JournalLine,
    LedgerAccount,
    Redemption,
    Voucher,
)


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


# How many ids a failing check names: enough to start looking, bounded for the page.
CHECK_LIST_LIMIT = 50
# Redemptions whose subsidy was captured exactly once (a reversal keeps its capture).
CAPTURED_STATUSES = ("redeemed", "reversed")


@dataclass(frozen=True)
class LedgerCheck:
    ok: bool
    unbalanced_entries: list[int]
    drifted_accounts: list[str]  # running balance differs from the sum of its lines
    total_fen: int  # all balances together: zero when the books balance
    # Accounts that differ from the rows they stand for:
    # [{"account", "ledger_fen", "subledger_fen"}] (see ``_subledgers``).
    subledger_mismatches: list[dict] = field(default_factory=list)
    closed_vouchers_with_balance: list[int] = field(default_factory=list)  # voucher ids
    # Redemptions without exactly one capture entry if captured, or with one if not.
    capture_mismatches: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _subledgers() -> dict[str, sa.ScalarSelect]:
    """Each account that mirrors rows elsewhere, and the sum of those rows. A closed voucher
    with a payment in flight still has its hold in ``vouchers:held``; its balance is 0."""
    total = sa.func.coalesce
    return {
        "vouchers:outstanding": sa.select(total(sa.func.sum(Voucher.balance_fen), 0))
        .where(Voucher.status == "active")
        .scalar_subquery(),
        "vouchers:held": sa.select(total(sa.func.sum(Voucher.held_fen), 0)).scalar_subquery(),
        # Settlement will move money on from here; its redemptions will leave this sum then.
        "redeemed:unsettled": sa.select(total(sa.func.sum(Redemption.subsidy_fen), 0))
        .where(Redemption.status == "redeemed")
        .scalar_subquery(),
    }


def _subledger_mismatches() -> list[dict]:
    subledgers = _subledgers()
    ledger_fen = dict(
        db.session.execute(
            sa.select(LedgerAccount.code, LedgerAccount.balance_fen).where(
                LedgerAccount.code.in_(subledgers)
            )
        ).all()
    )
    rows = db.session.execute(sa.select(*subledgers.values())).one()
    return [
        {"account": code, "ledger_fen": ledger_fen.get(code, 0), "subledger_fen": int(rows[i])}
        for i, code in enumerate(subledgers)
        if ledger_fen.get(code, 0) != rows[i]
    ]


def _capture_mismatches() -> list[int]:
    captures = (
        sa.select(JournalEntry.cause_id.label("redemption"), sa.func.count().label("n"))
        .where(JournalEntry.kind == "capture", JournalEntry.cause_type == "redemptions")
        .group_by(JournalEntry.cause_id)
        .subquery()
    )
    expected = sa.case((Redemption.status.in_(CAPTURED_STATUSES), 1), else_=0)
    return list(
        db.session.scalars(
            sa.select(Redemption.id)
            .outerjoin(captures, captures.c.redemption == sa.cast(Redemption.id, sa.String))
            .where(sa.func.coalesce(captures.c.n, 0) != expected)
            .order_by(Redemption.id)
            .limit(CHECK_LIST_LIMIT)
        )
    )


def verify_ledger() -> LedgerCheck:
    """Reconcile the books: every entry sums to zero, every balance equals its lines, the
    accounts that mirror vouchers and redemptions equal them, closed vouchers hold nothing
    and each captured redemption was captured once. Set-based: a handful of aggregate
    queries whatever the size of the books."""
    unbalanced = list(
        db.session.scalars(
            sa.select(JournalLine.entry_id)
            .group_by(JournalLine.entry_id)
            .having(sa.func.sum(JournalLine.amount_fen) != 0)
            .order_by(JournalLine.entry_id)
            .limit(CHECK_LIST_LIMIT)
        )
    )
    sums = (
        sa.select(JournalLine.account_id, sa.func.sum(JournalLine.amount_fen).label("fen"))
        .group_by(JournalLine.account_id)
        .subquery()
    )
    drifted = list(
        db.session.scalars(
            sa.select(LedgerAccount.code)
            .outerjoin(sums, sums.c.account_id == LedgerAccount.id)
            .where(LedgerAccount.balance_fen != sa.func.coalesce(sums.c.fen, 0))
            .order_by(LedgerAccount.code)
        )
    )
    total = db.session.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(LedgerAccount.balance_fen), 0))
    )
    closed_with_balance = list(
        db.session.scalars(
            sa.select(Voucher.id)
            .where(Voucher.status != "active", Voucher.balance_fen != 0)
            .order_by(Voucher.id)
            .limit(CHECK_LIST_LIMIT)
        )
    )
    subledgers = _subledger_mismatches()
    captures = _capture_mismatches()
    ok = not (unbalanced or drifted or total or subledgers or closed_with_balance or captures)
    return LedgerCheck(
        ok, unbalanced, drifted, int(total), subledgers, closed_with_balance, captures
    )


def balances() -> dict[str, int]:
    return dict(
        db.session.execute(
            sa.select(LedgerAccount.code, LedgerAccount.balance_fen).order_by(LedgerAccount.code)
        ).all()
    )


AMOUNT_MESSAGE = _l("Enter an amount in yuan greater than zero.")
