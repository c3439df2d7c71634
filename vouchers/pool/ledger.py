"""The subsidy pool as a double-entry ledger.

Money lives in buckets (``ledger_accounts``). Every movement is one journal entry whose lines
sum to zero, written in the caller's transaction together with the change that causes it.

Balances. An account's balance is the sum of its shard rows (``ledger_balances``, primary
key (account, shard)); ``balances`` reads it, one small GROUP BY, and nothing else reads the
rows. Most accounts have one shard, moved by a conditional UPDATE: a bucket that may not go
negative refuses in the same statement that would have taken it below zero (and a CHECK
constraint backs that up), so two transactions racing for the last fen cannot both win.

The accounts every redemption moves (``SHARDED_ACCOUNTS``: vouchers outstanding, held,
redeemed unsettled) have 32 shards. With one row each, every redemption in the city updated
the same three rows and held their locks until it committed, so redemptions ran one at a
time. Now a posting takes, for each such account, a shard no other open transaction holds
(``FOR UPDATE SKIP LOCKED``, starting from a shard chosen by the entry's cause and keeping
the shard it already holds in this transaction), so two redemptions never wait for each
other on the ledger. Shards of those accounts may go below zero one by one (money held on
one is captured from another); their money is guarded where it lives, on the voucher row
(balance and held never below zero, CHECK) and the redemption's status, and
``verify_ledger`` proves each account's sum equal to its lines and to those rows.

Why shards and not balances derived from the lines: a derived balance costs a scan of the
account's lines (millions a year) on every read, and the pool page and the API read them
all the time; a sum of 32 rows costs nothing and the journal stays append-only.

The database guards the books too (migration 0010): journal rows cannot be updated or
deleted, and on PostgreSQL a deferred constraint trigger refuses, at commit, a transaction
that leaves any entry's lines not summing to zero. ``verify_ledger`` proves the rest: every
balance equals its lines, and the accounts that mirror rows elsewhere (vouchers, holds,
redemptions) equal the sum of those rows. It is not run on page loads: the hourly job
``vouchers-verify-ledger``, ``flask vouchers verify-ledger`` and the pool page's button store
a result (``vouchers.pool.ledger_checks``), which the pool page and the API show with its age.

Lock order. Every transaction that moves money takes its row locks in this one order, so
two of them can wait for each other but never deadlock. There is no lock that every money
transaction takes (the audit trail appends without one, ``eldercare.audit``), so two
redemptions of different vouchers never wait for each other (on the ledger, only when every
shard of an account is held by others):

1. the issuance lock (``issuance.serialize_issuance``), only in issuing, expiry,
   revocation and the eligibility feed;
2. a redemption's row (``redemption.lock_row``, first thing in every money step on it),
   then the settlement month row of its voucher's month (``settlement_months``: FOR SHARE
   by a reversal or a flag being raised, FOR UPDATE by a settlement run of that month,
   which locks no redemption row: it reads them under the month lock, so a reversal
   holding the share lock finishes first and one starting later waits for the run and
   then sees its line), then the statement rows (a reversal or a flag taking its line out;
   an approval, which takes no month row; a run, which locks its month's prepared
   statements in id order before adding lines, so it waits for an approval in progress),
   then the redemption's payment attempts' rows (a reversal's refund decided there, asked
   of the gateway only after the commit);
3. voucher rows, in id order when there are several. A transaction that locks several
   vouchers (an expiry batch, a revocation, a run of the eligibility feed) locks all of
   them before it moves any money: once it holds a ledger row of (4) it may not wait for a
   voucher, which a redemption holds while it waits for that ledger row;
4. ledger balance rows, by account code, whatever the sign of the amount (``post``). Only
   the one row of a guarded account is ever waited for; a sharded account never waits: its
   shard is taken with SKIP LOCKED, and when every shard is held by others the account gets
   a new one (under a burst of more transactions than shards). A transaction keeps the
   shard it took first for the rest of the transaction. So a transaction that posts twice
   (a cash payment's hold then capture) may reach back in code order only for a sharded
   account, where nobody waits, and no cycle of waits can form on the ledger.

Check-in share-locks its voucher (it waits for a revocation in progress and keeps one from
starting) and locks nothing else that exists. Audit rows are inserted, never locked.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l
from sqlalchemy.dialects import postgresql

from eldercare import stored_text
from eldercare.db import db
from eldercare.errors import InvalidInput
from vouchers.errors import InsufficientFunds
from vouchers.models import (
    ENTRY_KINDS,
    JournalEntry,
    JournalLine,
    LedgerAccount,
    LedgerBalance,
    Redemption,
    Voucher,
)
from vouchers.pool import memos

# The accounts every redemption moves, and their shard counts (migration 0015 sets them).
# 32 rows: 8 or 16 concurrent redemptions find a free one at once; summing 32 rows is free.
SHARDED_ACCOUNTS = {
    "vouchers:outstanding": 32,
    "vouchers:held": 32,
    "redeemed:unsettled": 32,
    # Every card redemption moves these two as well (migration 0017).
    "gateway:clearing": 32,
    "copay:card": 32,
}
_SESSION_SHARDS = "vouchers.pool.ledger.shards"  # session.info: (transaction, {account id: shard})


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
                opened = LedgerAccount(code=code, name=create_name, shards=1)
                db.session.add(opened)
                db.session.flush()
                db.session.add(LedgerBalance(account_id=opened.id, shard=0, balance_fen=0))
        except sa.exc.IntegrityError:
            pass  # another transaction opened it at the same moment: use theirs
        found = db.session.scalar(statement)
    return found


def locked_balance(code: str) -> int:
    """The balance of a guarded (one-row) account, its row locked to the end of the
    transaction (PostgreSQL): what a caller reads is what it can still spend, however long it
    takes to decide how much (issuance sizes a batch to a district's money this way)."""
    return int(
        db.session.scalar(
            sa.select(LedgerBalance.balance_fen)
            .join(LedgerAccount, LedgerAccount.id == LedgerBalance.account_id)
            .where(LedgerAccount.code == code, LedgerAccount.shards == 1)
            .with_for_update(of=LedgerBalance)
        )
    )


def _held_shards() -> dict[int, int]:
    """The shard this transaction already moved, per sharded account (see the lock order)."""
    session = db.session()  # the scoped session's own Session
    transaction = session.get_transaction()
    held = session.info.get(_SESSION_SHARDS)
    if held is None or held[0] is not transaction:
        held = (transaction, {})
        session.info[_SESSION_SHARDS] = held
    return held[1]


def _first_choice(cause: tuple[str, object] | None, shards: int) -> int:
    if cause is None:
        return random.randrange(shards)  # noqa: S311 (spreading load, not a secret)
    return zlib.crc32(f"{cause[0]}:{cause[1]}".encode()) % shards


def _move_guarded(account_id: int, amount: int) -> bool:
    """An account's one row, refused in the same statement if it would go below zero."""
    return (
        db.session.execute(
            sa.update(LedgerBalance)
            .where(
                LedgerBalance.account_id == account_id,
                LedgerBalance.shard == 0,
                sa.or_(LedgerBalance.may_go_negative, LedgerBalance.balance_fen + amount >= 0),
            )
            .values(balance_fen=LedgerBalance.balance_fen + amount)
            .execution_options(synchronize_session=False)
        ).rowcount
        == 1
    )


def _move_sharded(account_id: int, shards: int, amount: int, first: int) -> int:
    """Add ``amount`` to a shard nobody else holds, trying ``first`` first; returns it.
    One statement: the sub-select locks the shard it picks and skips those held by others
    (ignored on SQLite, which has one writer)."""
    order = (LedgerBalance.shard - first + shards) % shards
    pick = (
        sa.select(LedgerBalance.shard)
        .where(LedgerBalance.account_id == account_id)
        .order_by(order)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    move = (
        sa.update(LedgerBalance)
        .values(balance_fen=LedgerBalance.balance_fen + amount)
        .returning(LedgerBalance.shard)
        .execution_options(synchronize_session=False)
    )
    taken = db.session.scalar(
        move.where(LedgerBalance.account_id == account_id, LedgerBalance.shard == pick)
    )
    for _attempt in range(5):
        if taken is not None:
            return taken
        if db.session.get_bind().dialect.name != "postgresql":
            break  # SQLite has no row locks: a shard is always free unless there is none
        # Every shard is held by another transaction. Waiting for one could close a cycle (a
        # transaction that posts twice, hold then capture, reaches back in code order for a
        # row another holds while that one waits for ours), so the account gets a new shard
        # instead: a sharded account never waits. Its number is random, so two transactions
        # opening one at the same moment do not wait for each other's key either.
        taken = db.session.scalar(
            postgresql.insert(LedgerBalance)
            .values(
                account_id=account_id,
                shard=random.randrange(shards, 2**31),  # noqa: S311 (a key, not a secret)
                balance_fen=amount,
                may_go_negative=True,
            )
            .on_conflict_do_nothing()
            .returning(LedgerBalance.shard)
        )
    if taken is None:
        raise RuntimeError(f"ledger account {account_id} has no shard to move")
    return taken


def post(
    kind: str,
    memo: str,
    lines: Iterable[tuple[str, int]],
    *,
    cause: tuple[str, object] | None = None,
    actor_id: int | None = None,
) -> JournalEntry:
    """Write one balanced entry: ``lines`` are (account code, amount in fen) pairs.

    Statements: one to read the accounts, one for the entry, one UPDATE per line (whatever
    the number of shards) and one for the lines."""
    lines = list(lines)
    if kind not in ENTRY_KINDS:
        raise ValueError(f"unknown entry kind {kind!r}")
    if any(isinstance(a, bool) or not isinstance(a, int) for _, a in lines):
        raise ValueError("amounts are whole fen")
    lines = [(code, amount) for code, amount in lines if amount != 0]
    if not lines or sum(amount for _, amount in lines) != 0:
        raise ValueError(f"unbalanced entry {kind}: {lines}")
    accounts = {
        row.code: row
        for row in db.session.execute(
            sa.select(LedgerAccount.id, LedgerAccount.code, LedgerAccount.shards).where(
                LedgerAccount.code.in_({code for code, _ in lines})
            )
        )
    }
    for code, _ in lines:
        if code not in accounts:
            raise InvalidInput(details={"account": code})
    entry = JournalEntry(
        kind=kind,
        memo=stored_text.clip(memo, memos.MEMO_LENGTH),
        cause_type=cause[0] if cause else None,
        cause_id=str(cause[1]) if cause else None,
        created_by_user_id=actor_id,
    )
    db.session.add(entry)
    db.session.flush()
    held = _held_shards()
    # Step 4 of the lock order: by code only. Sorting debits first would lock the same two
    # accounts in opposite orders for opposite movements (hold vs release, issue vs
    # expiry). A refused debit still refuses the whole entry: it is one transaction.
    for code, amount in sorted(lines, key=lambda line: line[0]):
        target = accounts[code]
        if target.shards == 1:
            if not _move_guarded(target.id, amount):
                raise InsufficientFunds(details={"account": code, "amount_fen": -amount})
        else:
            first = held.get(target.id)
            if first is None:
                first = _first_choice(cause, target.shards)
            held[target.id] = _move_sharded(target.id, target.shards, amount, first)
    db.session.execute(
        sa.insert(JournalLine),
        [
            {"entry_id": entry.id, "account_id": accounts[code].id, "amount_fen": amount}
            for code, amount in lines
        ],
    )
    # Callers move voucher and redemption rows in SQL too: what the session loaded is
    # reloaded when next read.
    db.session.expire_all()
    return entry


# How many ids a failing check names: enough to start looking, bounded for the page.
CHECK_LIST_LIMIT = 50
# Redemptions whose subsidy was captured exactly once (a reversal keeps its capture).
CAPTURED_STATUSES = ("redeemed", "reversed")


@dataclass(frozen=True)
class LedgerCheck:
    ok: bool
    unbalanced_entries: list[int]
    drifted_accounts: list[str]  # balance (sum of its shards) differs from the sum of its lines
    total_fen: int  # all balances together: zero when the books balance
    # Accounts that differ from the rows they stand for:
    # [{"account", "ledger_fen", "subledger_fen"}] (see ``_subledgers``).
    subledger_mismatches: list[dict] = field(default_factory=list)
    closed_vouchers_with_balance: list[int] = field(default_factory=list)  # voucher ids
    # Redemptions without exactly one capture entry if captured, or with one if not.
    capture_mismatches: list[int] = field(default_factory=list)
    # Accounts that may not go negative whose balance (the sum of their shards) is below 0.
    negative_accounts: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _account_balances() -> sa.Subquery:
    """Each account's balance: the sum of its shards."""
    return (
        sa.select(LedgerBalance.account_id, sa.func.sum(LedgerBalance.balance_fen).label("fen"))
        .group_by(LedgerBalance.account_id)
        .subquery()
    )


def _subledgers() -> dict[str, sa.ScalarSelect]:
    """Each account that mirrors rows elsewhere, and the sum of those rows. A closed voucher
    with a payment in flight still has its hold in ``vouchers:held``; its balance is 0."""
    total = sa.func.coalesce
    return {
        "vouchers:outstanding": sa.select(total(sa.func.sum(Voucher.balance_fen), 0))
        .where(Voucher.status == "active")
        .scalar_subquery(),
        "vouchers:held": sa.select(total(sa.func.sum(Voucher.held_fen), 0)).scalar_subquery(),
        # Settlement moves a redemption on from here when its statement is approved.
        "redeemed:unsettled": sa.select(total(sa.func.sum(Redemption.subsidy_fen), 0))
        .where(Redemption.status == "redeemed", ~_in_settled_statement())
        .scalar_subquery(),
        "gateway:clearing": _gateway_clearing(),
        **_provider_subledgers(),
    }


def _provider_subledgers() -> dict[str, sa.ScalarSelect]:
    """All providers' accounts together (a code with "%" sums every account it matches):
    what approved statements owe and are not yet paid (subsidy less clawbacks netted; card
    co-payments), and the clawbacks of settled redemptions not yet netted. By table name:
    the pool does not import settlement."""
    total = sa.func.coalesce
    statements = sa.table(
        "statements",
        sa.column("id"),
        sa.column("status"),
        sa.column("subsidy_fen"),
        sa.column("card_copay_fen"),
        sa.column("clawback_fen"),
    )
    lines = sa.table(
        "statement_lines",
        sa.column("redemption_id"),
        sa.column("statement_id"),
        sa.column("subsidy_fen"),
    )
    approved = statements.c.status == "approved"
    settled = statements.c.status.in_(("approved", "paid"))
    clawed = (
        sa.select(total(sa.func.sum(lines.c.subsidy_fen), 0))
        .join(statements, statements.c.id == lines.c.statement_id)
        .join(Redemption, Redemption.id == lines.c.redemption_id)
        .where(settled, Redemption.status == "reversed")
        .scalar_subquery()
    )
    netted = sa.select(total(sa.func.sum(statements.c.clawback_fen), 0)).where(settled)
    return {
        "provider:%:payable": sa.select(
            total(sa.func.sum(statements.c.subsidy_fen - statements.c.clawback_fen), 0)
        )
        .where(approved)
        .scalar_subquery(),
        "provider:%:copay": sa.select(total(sa.func.sum(statements.c.card_copay_fen), 0))
        .where(approved)
        .scalar_subquery(),
        "provider:%:receivable": (clawed - netted.scalar_subquery()),
    }


def _in_settled_statement() -> sa.Exists:
    """The redemption is a line of an approved or paid statement (by table name: the pool
    does not import settlement)."""
    lines = sa.table("statement_lines", sa.column("redemption_id"), sa.column("statement_id"))
    statements = sa.table("statements", sa.column("id"), sa.column("status"))
    return sa.exists().where(
        lines.c.redemption_id == Redemption.id,
        statements.c.id == lines.c.statement_id,
        statements.c.status.in_(("approved", "paid")),
    )


# Settlement's tables, named here rather than imported: imports run one way (settlement uses
# the pool, never the reverse).
_statements = sa.table("statements", sa.column("id"), sa.column("status"))
_statement_lines = sa.table(
    "statement_lines",
    sa.column("redemption_id"),
    sa.column("statement_id"),
    sa.column("card_copay_fen"),
)


def _gateway_clearing() -> sa.ScalarSelect:
    """What the gateway holds for the platform: the card co-payments of redeemed
    redemptions (captured, not refunded) less those an approved or paid statement has moved
    on to the provider. Only lines of redemptions still 'redeemed' count: one reversed after
    its statement was approved (a clawback) left the account at approval and, its co-payment
    not refunded, never comes back to it."""
    settled = sa.case(
        (_statements.c.status.in_(("approved", "paid")), _statement_lines.c.card_copay_fen),
        else_=0,
    )
    return (
        sa.select(
            sa.func.coalesce(sa.func.sum(Redemption.copay_fen - sa.func.coalesce(settled, 0)), 0)
        )
        .select_from(Redemption)
        .outerjoin(_statement_lines, _statement_lines.c.redemption_id == Redemption.id)
        .outerjoin(_statements, _statements.c.id == _statement_lines.c.statement_id)
        .where(Redemption.status == "redeemed", Redemption.payment_method == "card")
        .scalar_subquery()
    )


def _ledger_balance(code: str) -> sa.ScalarSelect:
    return (
        sa.select(sa.func.coalesce(sa.func.sum(LedgerBalance.balance_fen), 0))
        .join(LedgerAccount, LedgerAccount.id == LedgerBalance.account_id)
        .where(LedgerAccount.code.like(code) if "%" in code else LedgerAccount.code == code)
        .scalar_subquery()
    )


def _subledger_mismatches() -> list[dict]:
    """One statement, so the books and the rows are read at one moment: money moving
    between them while the check runs is never reported as a mismatch."""
    subledgers = _subledgers()
    columns = []
    for code, rows in subledgers.items():
        columns += [_ledger_balance(code), rows]
    values = [int(v) for v in db.session.execute(sa.select(*columns)).one()]
    return [
        {"account": code, "ledger_fen": values[2 * i], "subledger_fen": values[2 * i + 1]}
        for i, code in enumerate(subledgers)
        if values[2 * i] != values[2 * i + 1]
    ]


def _capture_mismatches() -> list[int]:
    captures = (
        sa.select(JournalEntry.cause_id.label("redemption"), sa.func.count().label("n"))
        .where(JournalEntry.kind == "capture", JournalEntry.cause_type == "redemptions")
        .group_by(JournalEntry.cause_id)
        .subquery()
    )
    expected = sa.case((Redemption.status.in_(CAPTURED_STATUSES), 1), else_=0)
    # OFFSET 0 keeps PostgreSQL from pulling the LIMIT into the join: with it, the planner
    # expects the first 50 mismatches early and joins by nested loop, which with none to
    # find compares every redemption with every capture (minutes at 100,000 redemptions);
    # planned whole, it is one hash join (seconds at a million).
    mismatched = (
        sa.select(Redemption.id.label("id"))
        .outerjoin(captures, captures.c.redemption == sa.cast(Redemption.id, sa.String))
        .where(sa.func.coalesce(captures.c.n, 0) != expected)
        .offset(0)
        .subquery()
    )
    return list(
        db.session.scalars(
            sa.select(mismatched.c.id).order_by(mismatched.c.id).limit(CHECK_LIST_LIMIT)
        )
    )


def verify_ledger() -> LedgerCheck:
    """Reconcile the books: every entry sums to zero, every balance (the sum of its shards)
    equals its lines, the accounts that mirror vouchers and redemptions equal them, no
    account that may not go negative is below zero, closed vouchers hold nothing and each
    captured redemption was captured once. Set-based: a handful of aggregate queries
    whatever the size of the books; each finding comes from one statement, so postings
    committing while it runs cannot make it see a difference that is not there."""
    unbalanced = list(
        db.session.scalars(
            sa.select(JournalLine.entry_id)
            .group_by(JournalLine.entry_id)
            .having(sa.func.sum(JournalLine.amount_fen) != 0)
            .order_by(JournalLine.entry_id)
            .limit(CHECK_LIST_LIMIT)
        )
    )
    lines = (
        sa.select(JournalLine.account_id, sa.func.sum(JournalLine.amount_fen).label("fen"))
        .group_by(JournalLine.account_id)
        .subquery()
    )
    shards = _account_balances()
    balance = sa.func.coalesce(shards.c.fen, 0)
    drifted, negative = [], []
    for code, drift, below_zero in db.session.execute(
        sa.select(
            LedgerAccount.code,
            balance != sa.func.coalesce(lines.c.fen, 0),
            sa.and_(~LedgerAccount.may_go_negative, balance < 0),
        )
        .outerjoin(lines, lines.c.account_id == LedgerAccount.id)
        .outerjoin(shards, shards.c.account_id == LedgerAccount.id)
        .where(
            sa.or_(
                balance != sa.func.coalesce(lines.c.fen, 0),
                sa.and_(~LedgerAccount.may_go_negative, balance < 0),
            )
        )
        .order_by(LedgerAccount.code)
    ):
        if drift:
            drifted.append(code)
        if below_zero:
            negative.append(code)
    total = db.session.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(LedgerBalance.balance_fen), 0))
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
    ok = not (
        unbalanced or drifted or total or subledgers or closed_with_balance or captures or negative
    )
    return LedgerCheck(
        ok, unbalanced, drifted, int(total), subledgers, closed_with_balance, captures, negative
    )


def balances(codes: Iterable[str] | None = None) -> dict[str, int]:
    """Each account's balance (the sum of its shards), by code; only ``codes`` if given.
    The one place balances are read: the pool page, the API, the demo and the tests."""
    statement = (
        sa.select(LedgerAccount.code, sa.func.coalesce(sa.func.sum(LedgerBalance.balance_fen), 0))
        .outerjoin(LedgerBalance, LedgerBalance.account_id == LedgerAccount.id)
        .group_by(LedgerAccount.code)
        .order_by(LedgerAccount.code)
    )
    if codes is not None:
        statement = statement.where(LedgerAccount.code.in_(list(codes)))
    return {code: int(fen) for code, fen in db.session.execute(statement).all()}


AMOUNT_MESSAGE = _l("Enter an amount in yuan greater than zero.")
