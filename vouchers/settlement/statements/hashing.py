"""The hash of a statement: SHA-256 over its totals, its payee and every line, in a fixed
text form, stored at approval and recomputed by reconciliation. Any change to a line, a
total or the payee after approval (which the triggers refuse, unless someone bypasses them)
changes the hash.

The text form (UTF-8), one record per line, fields separated by "|":
    statement|<id>|<provider id>|<YYYY-MM>|<seq>|<line count>|<subsidy fen>|<card co-payment
        fen>|<clawback fen>|<payee account name>|<payee bank>|<payee account number>
    then, by redemption id:
    line|<redemption id>|<district id>|<price>|<insurance>|<subsidy>|<co-payment>|<method>|
        <card co-payment>
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa

from eldercare.db import db
from vouchers.settlement.models import Statement, StatementLine

LINE_COLUMNS = (
    StatementLine.redemption_id,
    StatementLine.district_id,
    StatementLine.price_fen,
    StatementLine.insurance_fen,
    StatementLine.subsidy_fen,
    StatementLine.copay_fen,
    StatementLine.payment_method,
    StatementLine.card_copay_fen,
)
STREAM_ROWS = 5_000  # lines read per round trip: a statement of any size hashes in flat memory


def head(statement: Statement) -> str:
    fields = (
        "statement",
        statement.id,
        statement.provider_id,
        f"{statement.month:%Y-%m}",
        statement.seq,
        statement.line_count,
        statement.subsidy_fen,
        statement.card_copay_fen,
        statement.clawback_fen,
        statement.payee_account_name,
        statement.payee_bank_name,
        statement.payee_account_number,
    )
    return "|".join(str(f) for f in fields) + "\n"


def statement_hash(statement: Statement) -> str:
    """The statement's hash as its rows stand now (hex)."""
    digest = hashlib.sha256(head(statement).encode())
    rows = db.session.execute(
        sa.select(*LINE_COLUMNS)
        .where(StatementLine.statement_id == statement.id)
        .order_by(StatementLine.redemption_id)
        .execution_options(yield_per=STREAM_ROWS)
    )
    for row in rows:
        digest.update(line_text(row).encode())
    return digest.hexdigest()


def line_text(row) -> str:
    """One line's record (the values of ``LINE_COLUMNS``, in order)."""
    return "line|" + "|".join(str(v) for v in row) + "\n"


_head = head  # the name it had first
