"""Reconciliation, parts (c) and (d): the bank, and the approved statements themselves.

(c) The bank, for the month's statements (and every fee refund transfer):
- every transfer marked paid came from an imported result file (``result_import_id``);
- every statement marked paid has exactly one paid transfer, of its payable amount
  (subsidy - clawback netted + card co-payments), or none when that is 0 (clawbacks took
  it all); none is paid twice;
- no statement still 'approved' has a paid transfer (the payment never reached the books);
- a fee refund paid by a transfer is marked paid;
- every transfer pays what was approved: a statement's transfer carries the statement's
  payee snapshot and payable amount, a fee refund's live (sent or paid) transfer the
  refund's account and amount (a failed one may differ: the account may be corrected after
  a failure). The bank file is built from the transfers, so an edited transfer would divert
  the payment; migration 0019's triggers refuse the edit, this check catches a bypass.
(d) The statements, approved or paid, of the month:
- each still hashes (as ``hashing.statement_hash`` does, all of the month's in one pass) to
  the ``lines_hash`` stored at approval;
- its totals equal the sum of its lines;
- the books hold its entries: one "settle" entry (approval) and, once paid, one "pay"
  entry, both with the statement as their cause.

Each function returns findings ``{"kind", "fingerprint", "evidence", "district_id"}``; the
queries are aggregates over the month's statements (a month has about one per provider).
"""

from __future__ import annotations

import hashlib
from datetime import date

import sqlalchemy as sa

from assessment.models import FeeRefund
from eldercare.db import db
from vouchers.models import JournalEntry
from vouchers.settlement.models import FROZEN_STATUSES, BankTransfer, Statement, StatementLine
from vouchers.settlement.statements import hashing

LIST_LIMIT = 200  # findings of one kind per run: enough to act on, bounded for the page


def _finding(kind: str, key, evidence: dict, district_id=None) -> dict:
    return {
        "kind": kind,
        "fingerprint": f"{kind}:{key}",
        "evidence": evidence,
        "district_id": district_id,
    }


def bank_findings(month: date) -> list[dict]:
    s, t = Statement, BankTransfer
    payable = s.subsidy_fen - s.clawback_fen + s.card_copay_fen
    paid_transfers = (
        sa.select(
            t.statement_id,
            sa.func.count().label("n"),
            sa.func.min(t.amount_fen).label("low"),
            sa.func.max(t.amount_fen).label("high"),
            sa.func.min(t.reference).label("reference"),
        )
        .where(t.status == "paid", t.statement_id.is_not(None))
        .group_by(t.statement_id)
        .subquery()
    )
    findings = []
    rows = db.session.execute(
        sa.select(
            s.id,
            s.provider_id,
            s.status,
            payable,
            sa.func.coalesce(paid_transfers.c.n, 0),
            paid_transfers.c.low,
            paid_transfers.c.high,
            paid_transfers.c.reference,
        )
        .outerjoin(paid_transfers, paid_transfers.c.statement_id == s.id)
        .where(
            s.month == month,
            s.status.in_(FROZEN_STATUSES),
            sa.or_(
                # A statement whose clawbacks ate all it owed is paid without a transfer.
                sa.and_(
                    s.status == "paid",
                    sa.func.coalesce(paid_transfers.c.n, 0) != sa.case((payable > 0, 1), else_=0),
                ),
                sa.and_(s.status == "paid", paid_transfers.c.low != payable),
                sa.and_(s.status == "paid", paid_transfers.c.high != payable),
                sa.and_(s.status == "approved", paid_transfers.c.n > 0),
            ),
        )
        .order_by(s.id)
        .limit(LIST_LIMIT)
    ).all()
    for sid, provider, status, owed, n, low, high, reference in rows:
        evidence = {
            "statement": sid,
            "provider": provider,
            "status": status,
            "payable_fen": int(owed),
            "paid_transfers": int(n),
            "paid_amount_fen": int(low) if low is not None else None,
            "reference": reference,
        }
        if status == "approved":
            findings.append(_finding("bank.paid_not_booked", sid, evidence))
        elif n == 0:  # owed something, paid by no transfer
            findings.append(_finding("bank.paid_without_transfer", sid, evidence))
        elif n > 1:
            findings.append(_finding("bank.paid_twice", sid, evidence))
        else:
            findings.append(_finding("bank.amount", sid, evidence | {"high_fen": int(high)}))
    of_month = sa.select(s.id).where(s.month == month)
    unimported = db.session.execute(
        sa.select(t.id, t.reference, t.kind, t.statement_id, t.fee_refund_id, t.amount_fen)
        .where(
            t.status == "paid",
            t.result_import_id.is_(None),
            sa.or_(t.statement_id.in_(of_month), t.fee_refund_id.is_not(None)),
        )
        .order_by(t.id)
        .limit(LIST_LIMIT)
    ).all()
    for tid, reference, kind, statement_id, refund_id, amount in unimported:
        findings.append(
            _finding(
                "bank.paid_without_import",
                reference,
                {
                    "transfer": tid,
                    "reference": reference,
                    "kind": kind,
                    "statement": statement_id,
                    "fee_refund": refund_id,
                    "amount_fen": int(amount),
                },
            )
        )
    unmarked = db.session.execute(
        sa.select(t.reference, FeeRefund.id, FeeRefund.district_id, FeeRefund.amount_fen)
        .join(FeeRefund, FeeRefund.id == t.fee_refund_id)
        .where(t.status == "paid", FeeRefund.status != "paid")
        .order_by(FeeRefund.id)
        .limit(LIST_LIMIT)
    ).all()
    for reference, refund_id, district_id, amount in unmarked:
        evidence = {"fee_refund": refund_id, "reference": reference, "amount_fen": int(amount)}
        findings.append(
            _finding("bank.refund_not_marked_paid", refund_id, evidence, district_id=district_id)
        )
    return findings + _payee_findings(month)


def _payee_findings(month: date) -> list[dict]:
    """Transfers whose payee or amount is not what their statement (or fee refund) says."""
    s, t, r = Statement, BankTransfer, FeeRefund
    payable = s.subsidy_fen - s.clawback_fen + s.card_copay_fen

    def differs(name, bank, number, amount):
        return sa.or_(
            t.payee_account_name != name,
            t.payee_bank_name != bank,
            t.payee_account_number != number,
            t.amount_fen != amount,
        )

    columns = (t.id, t.reference, t.kind, t.status, t.payee_account_name,
               t.payee_bank_name, t.payee_account_number, t.amount_fen)  # fmt: skip
    statements = db.session.execute(
        sa.select(
            *columns, s.id, s.payee_account_name, s.payee_bank_name, s.payee_account_number, payable
        )  # fmt: skip
        .join(s, s.id == t.statement_id)
        .where(
            s.month == month,
            differs(s.payee_account_name, s.payee_bank_name, s.payee_account_number, payable),
        )
        .order_by(t.id)
        .limit(LIST_LIMIT)
    ).all()
    refunds = db.session.execute(
        sa.select(
            *columns,
            r.id,
            r.payee_account_name,
            r.payee_bank_name,
            r.payee_account_number,
            r.amount_fen,
        )  # fmt: skip
        .join(r, r.id == t.fee_refund_id)
        .where(
            t.status != "failed",
            differs(
                r.payee_account_name, r.payee_bank_name, r.payee_account_number, r.amount_fen
            ),  # fmt: skip
        )
        .order_by(t.id)
        .limit(LIST_LIMIT)
    ).all()
    findings = []
    for tid, ref, kind, status, name, bank, number, fen, oid, o_name, o_bank, o_number, o_fen in (
        *statements,
        *refunds,
    ):
        evidence = {
            "transfer": tid,
            "reference": ref,
            "kind": kind,
            "status": status,
            "statement" if kind == "statement" else "fee_refund": oid,
            "transfer_payee": {
                "account_name": name,
                "bank_name": bank,
                "account_number": number,
                "amount_fen": int(fen),
            },  # fmt: skip
            "approved_payee": {
                "account_name": o_name,
                "bank_name": o_bank,
                "account_number": o_number,
                "amount_fen": int(o_fen) if o_fen is not None else None,
            },  # fmt: skip
        }
        findings.append(_finding("bank.transfer_payee", ref, evidence))
    return findings


def statement_findings(month: date) -> list[dict]:
    s = Statement
    findings = []
    findings += _hash_findings(month)
    # Totals against the lines.
    sums = (
        sa.select(
            StatementLine.statement_id,
            sa.func.count().label("n"),
            sa.func.sum(StatementLine.subsidy_fen).label("subsidy"),
            sa.func.sum(StatementLine.card_copay_fen).label("copay"),
        )
        .group_by(StatementLine.statement_id)
        .subquery()
    )
    z = sa.func.coalesce
    for sid, count, subsidy, copay, n, lines_subsidy, lines_copay in db.session.execute(
        sa.select(
            s.id,
            s.line_count,
            s.subsidy_fen,
            s.card_copay_fen,
            z(sums.c.n, 0),
            z(sums.c.subsidy, 0),
            z(sums.c.copay, 0),
        )
        .outerjoin(sums, sums.c.statement_id == s.id)
        .where(
            s.month == month,
            s.status.in_(FROZEN_STATUSES),
            sa.or_(
                s.line_count != z(sums.c.n, 0),
                s.subsidy_fen != z(sums.c.subsidy, 0),
                s.card_copay_fen != z(sums.c.copay, 0),
            ),
        )
        .limit(LIST_LIMIT)
    ):
        evidence = {
            "statement": sid,
            "totals": {"lines": count, "subsidy_fen": subsidy, "card_copay_fen": copay},
            "lines": {
                "lines": n,
                "subsidy_fen": int(lines_subsidy),
                "card_copay_fen": int(lines_copay),
            },
        }
        findings.append(_finding("statement.totals", sid, evidence))
    findings += _entry_findings(month)
    return findings


def _hash_findings(month: date) -> list[dict]:
    """Every frozen statement of the month hashed again in one streamed pass over their
    lines (ordered by statement, then redemption: each statement's digest is built exactly
    as ``hashing.statement_hash`` builds it, from its head and its lines)."""
    s = Statement
    frozen = {
        st.id: st
        for st in db.session.scalars(
            sa.select(s).where(s.month == month, s.status.in_(FROZEN_STATUSES))
        )
    }
    digests = {sid: hashlib.sha256(hashing.head(st).encode()) for sid, st in frozen.items()}
    rows = db.session.execute(
        sa.select(StatementLine.statement_id, *hashing.LINE_COLUMNS)
        .join(s, s.id == StatementLine.statement_id)
        .where(s.month == month, s.status.in_(FROZEN_STATUSES))
        .order_by(StatementLine.statement_id, StatementLine.redemption_id)
        .execution_options(yield_per=hashing.STREAM_ROWS)
    )
    for statement_id, *line in rows:
        digests[statement_id].update(hashing.line_text(line).encode())
    findings = []
    for sid, digest in sorted(digests.items()):
        now, statement = digest.hexdigest(), frozen[sid]
        if now != statement.lines_hash:
            evidence = {
                "statement": sid,
                "provider": statement.provider_id,
                "stored": statement.lines_hash,
                "now": now,
            }
            findings.append(_finding("statement.hash", sid, evidence))
    return findings[:LIST_LIMIT]


def _entry_count(kind: str) -> sa.Subquery:
    return (
        sa.select(JournalEntry.cause_id.label("statement"), sa.func.count().label("n"))
        .where(JournalEntry.kind == kind, JournalEntry.cause_type == "statements")
        .group_by(JournalEntry.cause_id)
        .subquery()
    )


def _entry_findings(month: date) -> list[dict]:
    """Each frozen statement's approval entry, and each paid one's payment entry, once. An
    entry that would move nothing is not posted (an empty statement)."""
    s = Statement
    settles, pays = _entry_count("settle"), _entry_count("pay")
    sid_text = sa.cast(s.id, sa.String)
    moves_on_approval = sa.or_(s.subsidy_fen > 0, s.card_copay_fen > 0)
    moves_on_payment = sa.or_(s.subsidy_fen - s.clawback_fen > 0, s.card_copay_fen > 0)
    want_settle = sa.case((moves_on_approval, 1), else_=0)
    want_pay = sa.case((sa.and_(s.status == "paid", moves_on_payment), 1), else_=0)
    z = sa.func.coalesce
    rows = db.session.execute(
        sa.select(s.id, s.status, z(settles.c.n, 0), want_settle, z(pays.c.n, 0), want_pay)
        .outerjoin(settles, settles.c.statement == sid_text)
        .outerjoin(pays, pays.c.statement == sid_text)
        .where(
            s.month == month,
            s.status.in_(FROZEN_STATUSES),
            sa.or_(z(settles.c.n, 0) != want_settle, z(pays.c.n, 0) != want_pay),
        )
        .order_by(s.id)
        .limit(LIST_LIMIT)
    ).all()
    return [
        _finding(
            "statement.entries",
            sid,
            {
                "statement": sid,
                "status": status,
                "settle_entries": int(settle_n),
                "settle_expected": int(settle_want),
                "pay_entries": int(pay_n),
                "pay_expected": int(pay_want),
            },
        )
        for sid, status, settle_n, settle_want, pay_n, pay_want in rows
    ]
