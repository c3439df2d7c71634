"""Reconciliation, part (a): the pool identity, in total and per district, and the
sub-ledgers of settlement's accounts.

The total identity (ledger balances, one statement, so postings committing meanwhile cannot
show a difference that is not there):

    funded = -(funding:central + funding:local)
           = pool:available + district allocations' available + vouchers outstanding + held
             + redeemed unsettled + provider payables + settled + fee refunds (payable + paid)
             + settlement:payable
    and  providers' receivables + returns:clawback = 0   (a clawback and its netting)
    and  copay:card + gateway:clearing + providers' co-payments + copay:paid_out = 0
         (card co-payments are the elders' money passing through, never the pool's)

Every entry balances, so a break here means a balance row was changed outside ``post``.

The per-district identity (rows, one statement): a district's money is what was allocated
to it; it is now either still in its account or on the vouchers issued from it, and from
there in what they redeemed:

    allocated(d) = Σ allocation lines on district:<code>:available
                 = that account's balance
                   + Σ balance of its active vouchers + Σ held on its vouchers
                   + Σ subsidy of its vouchers' redemptions 'redeemed' and in no approved or
                     paid statement (redeemed, unsettled)
                   + Σ subsidy of statement lines of the district in approved statements
                   + Σ subsidy of statement lines of the district in paid statements

A district is the voucher's (``vouchers.district_id``, the allocation it was reserved from;
``statement_lines.district_id`` copies it). Expiry, revocation, releases and reversals
before settlement put money back into the district's account, so they are inside its
balance (the returns are shown beside it). A clawback (a reversal after approval) keeps its
line in the approved statement: its money comes back to the city's pool when netted, not to
the district, so the district's side stays the line.

Sub-ledgers: ``vouchers.pool.ledger.verify_ledger`` (entries, balances = lines, vouchers,
holds, captures), and here the accounts settlement moves, each equal to the rows behind it
(BRIEF "The books"):
    provider:<p>:payable    = Σ (subsidy - clawback netted) of p's approved statements
    provider:<p>:copay      = Σ card co-payments of p's approved statements
    provider:<p>:receivable = Σ subsidy of p's clawed-back lines (redemption reversed, line
                              in an approved/paid statement) - Σ clawback netted by p's
                              approved/paid statements
    returns:clawback        = -(Σ of the receivables above)
    settled                 = Σ (subsidy - clawback netted) of paid statements
    copay:paid_out          = Σ card co-payments of paid statements
    redeemed:unsettled      = Σ subsidy of redeemed redemptions in no approved/paid statement
    fee_refunds:paid        = Σ fee refunds paid
    fee_refunds:payable     = Σ fee refunds owed that were put into a bank transfer
All in one UNION ALL grouped by account code: only the accounts that differ come back.
"""

from __future__ import annotations

import sqlalchemy as sa

from assessment.models import FeeRefund
from eldercare.db import db
from eldercare.residents import District
from vouchers.models import (
    JournalEntry,
    JournalLine,
    LedgerAccount,
    LedgerBalance,
    Redemption,
    Voucher,
)
from vouchers.pool import ledger
from vouchers.settlement.models import FROZEN_STATUSES, BankTransfer, Statement, StatementLine

# The right-hand side of the total identity, in the order the page shows it.
BALANCE_TERMS = (
    "pool_available",
    "districts_available",
    "outstanding",
    "held",
    "unsettled",
    "provider_payable",
    "settled",
    "fee_refunds",
    "settlement_payable",
)
FIXED = {
    "pool:available": "pool_available",
    "vouchers:outstanding": "outstanding",
    "vouchers:held": "held",
    "redeemed:unsettled": "unsettled",
    "settled": "settled",
    "fee_refunds:payable": "fee_refunds",
    "fee_refunds:paid": "fee_refunds",
    "settlement:payable": "settlement_payable",
    "returns:clawback": "clawback_pair",
    "copay:card": "copay_group",
    "gateway:clearing": "copay_group",
    "copay:paid_out": "copay_group",
}
FUNDING = ("funding:central", "funding:local")
DISTRICT_TERMS = ("available", "outstanding", "held", "unsettled", "approved", "paid")


def _term_of(code: str) -> str:
    if code in FIXED:
        return FIXED[code]
    parts = code.split(":")
    if len(parts) == 3 and parts[0] == "district" and parts[2] == "available":
        return "districts_available"
    if len(parts) == 3 and parts[0] == "provider":
        return {"payable": "provider_payable", "copay": "copay_group"}.get(
            parts[2], "clawback_pair" if parts[2] == "receivable" else "other"
        )
    return "other"


def total_identity() -> dict:
    """The identity over every account's balance (one statement: ``ledger.balances``)."""
    balances = ledger.balances()
    terms = dict.fromkeys((*BALANCE_TERMS, "clawback_pair", "copay_group", "other"), 0)
    others = []
    for code, fen in balances.items():
        if code in FUNDING:
            continue
        term = _term_of(code)
        terms[term] += fen
        if term == "other" and fen:
            others.append(code)
    funded = -sum(balances.get(code, 0) for code in FUNDING)
    right = sum(terms[t] for t in BALANCE_TERMS)
    return {
        "funded": funded,
        "terms": {t: terms[t] for t in BALANCE_TERMS},
        "right": right,
        "difference": funded - right,
        "clawback_pair": terms["clawback_pair"],
        "copay_group": terms["copay_group"],
        "other": terms["other"],
        "other_accounts": others,
        "ok": funded == right
        and not terms["clawback_pair"]
        and not terms["copay_group"]
        and not terms["other"],
    }


def _frozen_lines():
    return (
        sa.select(StatementLine, Statement.status)
        .join(Statement, Statement.id == StatementLine.statement_id)
        .where(Statement.status.in_(FROZEN_STATUSES))
        .subquery()
    )


def district_identity() -> list[dict]:
    """Each district's identity, one row per district that has an account or vouchers."""
    account_code = sa.literal("district:") + District.code + sa.literal(":available")
    accounts = (
        sa.select(District.id.label("district_id"), LedgerAccount.id.label("account_id"))
        .join(LedgerAccount, LedgerAccount.code == account_code)
        .subquery()
    )
    flows = (
        sa.select(
            JournalLine.account_id,
            sa.func.sum(
                sa.case((JournalEntry.kind == "allocation", JournalLine.amount_fen), else_=0)
            ).label("allocated"),
            sa.func.sum(
                sa.case(
                    (JournalEntry.kind.in_(("expire", "revoke")), JournalLine.amount_fen), else_=0
                )
            ).label("returned"),
        )
        .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
        .where(JournalLine.account_id.in_(sa.select(accounts.c.account_id)))
        .group_by(JournalLine.account_id)
        .subquery()
    )
    balances = (
        sa.select(LedgerBalance.account_id, sa.func.sum(LedgerBalance.balance_fen).label("fen"))
        .group_by(LedgerBalance.account_id)
        .subquery()
    )
    vouchers = (
        sa.select(
            Voucher.district_id,
            sa.func.sum(sa.case((Voucher.status == "active", Voucher.balance_fen), else_=0)).label(
                "outstanding"
            ),
            sa.func.sum(Voucher.held_fen).label("held"),
        )
        .group_by(Voucher.district_id)
        .subquery()
    )
    frozen = _frozen_lines()
    unsettled = (
        sa.select(Voucher.district_id, sa.func.sum(Redemption.subsidy_fen).label("fen"))
        .join(Voucher, Voucher.id == Redemption.voucher_id)
        .outerjoin(frozen, frozen.c.redemption_id == Redemption.id)
        .where(Redemption.status == "redeemed", frozen.c.redemption_id.is_(None))
        .group_by(Voucher.district_id)
        .subquery()
    )
    lines = (
        sa.select(
            frozen.c.district_id,
            sa.func.sum(
                sa.case((frozen.c.status == "approved", frozen.c.subsidy_fen), else_=0)
            ).label("approved"),
            sa.func.sum(sa.case((frozen.c.status == "paid", frozen.c.subsidy_fen), else_=0)).label(
                "paid"
            ),
        )
        .group_by(frozen.c.district_id)
        .subquery()
    )
    z = sa.func.coalesce
    rows = db.session.execute(
        sa.select(
            District.id,
            District.code,
            z(flows.c.allocated, 0),
            z(flows.c.returned, 0),
            z(balances.c.fen, 0),
            z(vouchers.c.outstanding, 0),
            z(vouchers.c.held, 0),
            z(unsettled.c.fen, 0),
            z(lines.c.approved, 0),
            z(lines.c.paid, 0),
        )
        .outerjoin(accounts, accounts.c.district_id == District.id)
        .outerjoin(flows, flows.c.account_id == accounts.c.account_id)
        .outerjoin(balances, balances.c.account_id == accounts.c.account_id)
        .outerjoin(vouchers, vouchers.c.district_id == District.id)
        .outerjoin(unsettled, unsettled.c.district_id == District.id)
        .outerjoin(lines, lines.c.district_id == District.id)
        .where(sa.or_(accounts.c.account_id.is_not(None), vouchers.c.district_id.is_not(None)))
        .order_by(District.code)
    ).all()
    result = []
    for district_id, code, allocated, returned, *values in rows:
        terms = dict(zip(DISTRICT_TERMS, (int(v) for v in values), strict=True))
        right = sum(terms.values())
        result.append(
            {
                "district_id": district_id,
                "code": code,
                "allocated": int(allocated),
                "returned": int(returned),
                "terms": terms,
                "right": right,
                "difference": int(allocated) - right,
                "ok": int(allocated) == right,
            }
        )
    return result


def _code(provider_id, suffix: str):
    return sa.literal("provider:") + sa.cast(provider_id, sa.String) + sa.literal(suffix)


def subledger_mismatches() -> list[dict]:
    """Settlement's accounts against the rows behind them (see the module's text): one
    statement, only the accounts that differ. ``[{"account", "ledger_fen", "rows_fen"}]``."""
    s, line, r = Statement, StatementLine, Redemption
    approved = s.status == "approved"
    frozen = s.status.in_(FROZEN_STATUSES)
    paid = s.status == "paid"
    net = s.subsidy_fen - s.clawback_fen
    clawed = (
        sa.select(s.provider_id, line.subsidy_fen)
        .select_from(line)
        .join(s, s.id == line.statement_id)
        .join(r, r.id == line.redemption_id)
        .where(frozen, r.status == "reversed")
        .subquery()
    )
    frozen_lines = _frozen_lines()
    in_transfer = sa.select(BankTransfer.id).where(BankTransfer.fee_refund_id == FeeRefund.id)
    parts = [
        sa.select(_code(s.provider_id, ":payable"), net).where(approved),
        sa.select(_code(s.provider_id, ":copay"), s.card_copay_fen).where(approved),
        sa.select(_code(clawed.c.provider_id, ":receivable"), clawed.c.subsidy_fen),
        sa.select(_code(s.provider_id, ":receivable"), -s.clawback_fen).where(frozen),
        sa.select(sa.literal("returns:clawback"), -clawed.c.subsidy_fen),
        sa.select(sa.literal("returns:clawback"), s.clawback_fen).where(frozen),
        sa.select(sa.literal("settled"), net).where(paid),
        sa.select(sa.literal("copay:paid_out"), s.card_copay_fen).where(paid),
        sa.select(sa.literal("redeemed:unsettled"), r.subsidy_fen)
        .outerjoin(frozen_lines, frozen_lines.c.redemption_id == r.id)
        .where(r.status == "redeemed", frozen_lines.c.redemption_id.is_(None)),
        sa.select(sa.literal("fee_refunds:paid"), FeeRefund.amount_fen).where(
            FeeRefund.status == "paid"
        ),
        sa.select(sa.literal("fee_refunds:payable"), FeeRefund.amount_fen).where(
            FeeRefund.status == "owed", in_transfer.exists()
        ),
    ]
    expected = sa.union_all(*parts).subquery()
    code_col, fen_col = list(expected.c)
    checked = ["settled", "copay:paid_out", "redeemed:unsettled", "returns:clawback"]
    checked += ["fee_refunds:paid", "fee_refunds:payable"]
    books = (
        sa.select(LedgerAccount.code, LedgerBalance.balance_fen)
        .join(LedgerBalance, LedgerBalance.account_id == LedgerAccount.id)
        .where(sa.or_(LedgerAccount.code.like("provider:%"), LedgerAccount.code.in_(checked)))
        .subquery()
    )
    both = sa.union_all(
        sa.select(code_col.label("code"), fen_col.label("rows"), sa.literal(0).label("books")),
        sa.select(books.c.code, sa.literal(0), books.c.balance_fen),
    ).subquery()
    found = db.session.execute(
        sa.select(both.c.code, sa.func.sum(both.c.books), sa.func.sum(both.c.rows))
        .group_by(both.c.code)
        .having(sa.func.sum(both.c.books) != sa.func.sum(both.c.rows))
        .order_by(both.c.code)
    ).all()
    return [
        {"account": code, "ledger_fen": int(books_fen), "rows_fen": int(rows_fen)}
        for code, books_fen, rows_fen in found
    ]


def ledger_check() -> dict:
    """``verify_ledger``'s findings (its sub-ledgers already leave out what approved
    statements moved on from ``redeemed:unsettled``)."""
    return ledger.verify_ledger().to_dict()
