"""Settled worlds for the reconciliation tests, built directly: approved and paid statements
with their lines, their ledger entries exactly as the BRIEF's books say (approval §3, paid §4)
and a paid bank transfer with its result import.

The settlement run, approval and bank import are written in parallel (other parts); once
merged, these helpers should be replaced by the real functions (``run``, ``approval``,
``bank_files``/``bank_results``), so the reconciliation tests check what those really write.
"""

from __future__ import annotations

import hashlib
import itertools

import sqlalchemy as sa

from eldercare.db import db
from eldercare.timeutil import now_utc
from vouchers.models import Redemption
from vouchers.pool import ledger
from vouchers.settlement.models import (
    BankBatch,
    BankResultImport,
    BankTransfer,
    Statement,
    StatementLine,
)
from vouchers.settlement.statements.hashing import statement_hash

_numbers = itertools.count(1)


def _provider_accounts(provider_id: int) -> None:
    for suffix, name in (("payable", "subsidy owed"), ("copay", "co-payments owed")):
        ledger.account(f"provider:{provider_id}:{suffix}", create_name=f"{provider_id} {name}")
    ledger.account(f"provider:{provider_id}:receivable", create_name=f"{provider_id} owes")


def approve_statement(redemptions: list[Redemption], *, prepared_by, approved_by, clawback_fen=0):
    """One approved statement of the redemptions' provider and month, frozen, hashed and
    posted (books §3)."""
    first = redemptions[0]
    provider_id, month = first.provider_id, first.voucher.month
    seq = 1 + (
        db.session.scalar(
            sa.select(sa.func.max(Statement.seq)).where(
                Statement.provider_id == provider_id, Statement.month == month
            )
        )
        or 0
    )
    statement = Statement(
        provider_id=provider_id,
        month=month,
        seq=seq,
        status="prepared",
        payee_account_name="南湖社区养老服务站",
        payee_bank_name="中国工商银行沈阳三好街支行",
        payee_account_number="6222020700001234567",
        prepared_by_user_id=prepared_by.id,
    )
    db.session.add(statement)
    db.session.flush()
    lines = []
    for r in redemptions:
        card = r.copay_fen if r.payment_method == "card" else 0
        lines.append(
            StatementLine(
                redemption_id=r.id,
                statement_id=statement.id,
                district_id=r.voucher.district_id,
                price_fen=r.price_fen,
                insurance_fen=r.insurance_fen,
                subsidy_fen=r.subsidy_fen,
                copay_fen=r.copay_fen,
                payment_method=r.payment_method,
                card_copay_fen=card,
            )
        )
    db.session.add_all(lines)
    statement.line_count = len(lines)
    statement.subsidy_fen = sum(line.subsidy_fen for line in lines)
    statement.card_copay_fen = sum(line.card_copay_fen for line in lines)
    statement.clawback_fen = clawback_fen
    db.session.flush()
    digest, approver_id = statement_hash(statement), approved_by.id
    # One UPDATE: once the status is 'approved' the freeze trigger refuses anything else.
    db.session.execute(
        sa.update(Statement)
        .where(Statement.id == statement.id)
        .values(
            lines_hash=digest,
            status="approved",
            approved_by_user_id=approver_id,
            approved_at=now_utc(),
        )
    )
    db.session.expire(statement)
    s, n, cc = statement.subsidy_fen, clawback_fen, statement.card_copay_fen
    _provider_accounts(provider_id)
    entry = [("redeemed:unsettled", -s), (f"provider:{provider_id}:payable", s - n)]
    if n:
        entry += [
            (f"provider:{provider_id}:receivable", -n),
            ("returns:clawback", n),
            ("pool:available", n),
        ]
    if cc:
        entry += [("gateway:clearing", -cc), (f"provider:{provider_id}:copay", cc)]
    ledger.post("settle", f"statement {statement.id}", entry, cause=("statements", statement.id))
    return db.session.get(Statement, statement.id)


def pay_statement(statement: Statement, *, actor) -> BankTransfer:
    """The bank confirmed the statement's transfer: a batch of one line, its result file
    imported, the transfer and the statement paid, the payment posted (books §4)."""
    number = next(_numbers)
    reference = f"ECTEST{statement.id:06d}{number:03d}"
    amount = statement.payable_fen
    batch = BankBatch(
        reference=reference, line_count=1, total_fen=amount, created_by_user_id=actor.id
    )
    db.session.add(batch)
    db.session.flush()
    result = BankResultImport(
        batch_id=batch.id,
        file_sha256=hashlib.sha256(reference.encode()).hexdigest(),
        file_name=f"{reference}-result.csv",
        paid_count=1,
        imported_by_user_id=actor.id,
    )
    db.session.add(result)
    db.session.flush()
    transfer = BankTransfer(
        batch_id=batch.id,
        line_no=1,
        reference=f"{reference}-1",
        kind="statement",
        statement_id=statement.id,
        payee_account_name=statement.payee_account_name,
        payee_bank_name=statement.payee_bank_name,
        payee_account_number=statement.payee_account_number,
        amount_fen=amount,
        status="paid",
        result_import_id=result.id,
        decided_at=now_utc(),
    )
    db.session.add(transfer)
    statement.status = "paid"
    statement.paid_at = now_utc()
    db.session.flush()
    p = statement.provider_id
    net, cc = statement.subsidy_fen - statement.clawback_fen, statement.card_copay_fen
    ledger.post(
        "pay",
        f"statement {statement.id} paid",
        [
            (f"provider:{p}:payable", -net),
            ("settled", net),
            (f"provider:{p}:copay", -cc),
            ("copay:paid_out", cc),
        ],
        cause=("statements", statement.id),
    )
    return transfer


def claw_back(redemption: Redemption, *, actor) -> None:
    """A redemption reversed after its statement was approved (books §6): it becomes
    'reversed', nothing goes back onto its voucher, and its provider owes the subsidy."""
    amount, provider_id = redemption.subsidy_fen, redemption.provider_id
    db.session.execute(
        sa.update(Redemption)
        .where(Redemption.id == redemption.id)
        .values(status="reversed", reversed_at=now_utc(), reversed_by_user_id=actor.id)
    )
    _provider_accounts(provider_id)
    ledger.post(
        "reverse",
        f"clawback of redemption {redemption.id}",
        [(f"provider:{provider_id}:receivable", amount), ("returns:clawback", -amount)],
        cause=("redemptions", redemption.id),
    )
