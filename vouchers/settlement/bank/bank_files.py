"""The bank transfer batch: every approved, unpaid statement and every owed assessment-fee
refund with an account, one transfer line each, and the file handed to the bank.

``create_batch`` takes
- every statement with status 'approved', ``payable_fen`` > 0 and no transfer that has not
  failed (a failed one goes into the next batch), its payee copied from the statement's
  snapshot (never from the provider: the approved snapshot is what was checked);
- every fee refund with status 'owed', an account, and no transfer that has not failed. A
  refund put in a batch for the first time is reserved in the books (kind "fee_refund":
  ``pool:available -F``, ``fee_refunds:payable +F``); one the pool cannot cover waits for a
  later batch. A refund whose earlier transfer failed was reserved then and is not again.

Nothing is paid twice: the partial unique indexes allow one live (not failed) transfer per
statement and per refund. Batches are also made one at a time (a PostgreSQL advisory lock,
taken first), so two bureau officers pressing the button at once get one batch with the
lines and one "nothing waiting"; should the lock ever be bypassed, the index refuses and
the caller gets a Conflict, not a second payment.

The file (``csv_chunks`` / ``xlsx_chunks``, streamed; see the README's layout):
    H,<batch ref>,<created date YYYY-MM-DD>,<payer account name>,<count>,<total yuan>,
      <payer account number>,<payer bank>
    类型,序号,业务参考号,收款账号,收款户名,收款行,金额(元),用途        (column titles)
    D,<line no>,<line ref>,<payee account number>,<payee account name>,<payee bank>,
      <amount yuan 0.00>,<purpose>
    T,<count>,<total yuan>
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import date
from decimal import Decimal

import sqlalchemy as sa
from flask import current_app
from flask_babel import lazy_gettext as _l

from assessment.models import FeeRefund
from eldercare import audit
from eldercare.accounts import BUREAU_ROLES, User
from eldercare.db import db
from eldercare.errors import Conflict, PermissionDenied
from eldercare.timeutil import local_today, now_utc, to_local
from vouchers.pool import ledger, memos
from vouchers.settlement.exceptions import held
from vouchers.settlement.models import BankBatch, BankTransfer, Statement
from vouchers.spreadsheets import text_cell, workbook_chunks

_BATCH_LOCK_KEY = 4_215_120_012  # names the advisory lock only batch creation takes
STREAM_ROWS = 2_000
STATEMENT_PURPOSE = "养老服务补贴结算 {month}"
REFUND_PURPOSE = "评估费退费"
COLUMN_TITLES = ("类型", "序号", "业务参考号", "收款账号", "收款户名", "收款行", "金额(元)", "用途")

NOTHING_WAITING = _l("Nothing is waiting to be paid: no batch was made.")


def yuan_text(fen: int) -> str:
    """Fen as the bank file writes yuan: 150050 -> "1500.50" (no separators, no sign)."""
    return f"{Decimal(fen) / 100:.2f}"


def require_city_bureau(actor: User) -> None:
    """Batches, imports and payee decisions are city-wide bureau staff's."""
    if actor is None or not actor.has_role(*BUREAU_ROLES) or actor.district_id is not None:
        raise PermissionDenied(_l("Only city-wide bureau officers and approvers pay providers."))


def _payable():
    return Statement.subsidy_fen - Statement.clawback_fen + Statement.card_copay_fen


def waiting_statements() -> sa.Select:
    """Approved statements with something to pay and no live transfer."""
    live = sa.select(BankTransfer.id).where(
        BankTransfer.statement_id == Statement.id, BankTransfer.status != "failed"
    )
    return sa.select(Statement).where(
        Statement.status == "approved",
        _payable() > 0,
        ~live.exists(),
        ~held("statement", Statement.id),  # a late "paid" is being checked (bank_results)
    )


def waiting_refunds() -> sa.Select:
    """Owed fee refunds with an account and no live transfer."""
    live = sa.select(BankTransfer.id).where(
        BankTransfer.fee_refund_id == FeeRefund.id, BankTransfer.status != "failed"
    )
    return sa.select(FeeRefund).where(
        FeeRefund.status == "owed",
        FeeRefund.payee_account_number.is_not(None),
        FeeRefund.payee_account_number != "",
        FeeRefund.payee_account_name.is_not(None),
        FeeRefund.payee_bank_name.is_not(None),
        ~live.exists(),
        ~held("fee_refund", FeeRefund.id),
    )


def waiting_totals() -> dict:
    """What the next batch would hold (before the pool's cover of new refunds)."""
    statements = waiting_statements().with_only_columns(_payable().label("fen")).subquery()
    s_count, s_fen = db.session.execute(
        sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(statements.c.fen), 0))
    ).one()
    refunds = waiting_refunds().subquery()
    r_count, r_fen = db.session.execute(
        sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(refunds.c.amount_fen), 0))
    ).one()
    return {
        "statements": int(s_count),
        "statements_fen": int(s_fen),
        "refunds": int(r_count),
        "refunds_fen": int(r_fen),
        "count": int(s_count + r_count),
        "total_fen": int(s_fen + r_fen),
    }


def _serialize() -> None:
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(sa.select(sa.func.pg_advisory_xact_lock(_BATCH_LOCK_KEY)))


def _next_reference(today: date) -> str:
    prefix = f"EC{today:%Y%m%d}"
    taken = db.session.scalar(
        sa.select(sa.func.count()).where(BankBatch.reference.like(prefix + "%"))
    )
    return f"{prefix}{int(taken) + 1:03d}"


def _lock_waiting_refunds() -> list[int]:
    """The waiting refunds' rows, locked in id order before their accounts are copied: an
    account change (``assessment.refund_accounts.set_account`` locks the row, then looks for
    a live transfer) either finishes first and the batch copies the new account, or waits
    for the batch and is then refused. Only these refunds go into the batch."""
    return list(
        db.session.scalars(
            waiting_refunds()
            .with_only_columns(FeeRefund.id)
            .order_by(FeeRefund.id)
            .with_for_update(of=FeeRefund)
        )
    )


def _refunds_to_reserve(locked: list[int]) -> list[tuple[int, int]]:
    """(refund id, fen) of waiting refunds that were never in a batch, which the pool's
    money covers, oldest first; the pool's row is locked to the end of the transaction."""
    never_sent = (
        ~sa.select(BankTransfer.id).where(BankTransfer.fee_refund_id == FeeRefund.id).exists()
    )
    rows = db.session.execute(
        waiting_refunds()
        .with_only_columns(FeeRefund.id, FeeRefund.amount_fen)
        .where(never_sent, FeeRefund.id.in_(locked))
        .order_by(FeeRefund.owed_on, FeeRefund.id)
    ).all()
    if not rows:
        return []
    available = ledger.locked_balance("pool:available")
    covered = []
    for refund_id, fen in rows:
        if fen <= available:  # one that does not fit waits; smaller ones after it may fit
            covered.append((refund_id, int(fen)))
            available -= fen
    return covered


def create_batch(
    *, actor: User, expect: tuple[int, int] | None = None, today: date | None = None
) -> BankBatch:
    """A batch of every payment waiting now; flushed, not committed. ``expect`` (count,
    total fen) is what the person saw when they pressed the button: if it changed in the
    meantime, nothing is made and they are told."""
    require_city_bureau(actor)
    _serialize()
    today = today or local_today()
    locked = _lock_waiting_refunds()
    reserved = _refunds_to_reserve(locked)
    reserved_ids = {refund_id for refund_id, _ in reserved}
    previously_reserved = list(
        db.session.scalars(
            waiting_refunds()
            .with_only_columns(FeeRefund.id)
            .where(
                FeeRefund.id.in_(locked),
                sa.select(BankTransfer.id)
                .where(BankTransfer.fee_refund_id == FeeRefund.id)
                .exists(),
            )
        )
    )
    refund_ids = sorted(reserved_ids | set(previously_reserved))
    statements = db.session.execute(
        waiting_statements()
        .with_only_columns(Statement.id, _payable().label("fen"))
        .order_by(Statement.month, Statement.provider_id, Statement.seq)
    ).all()
    refund_fen = dict(
        db.session.execute(
            sa.select(FeeRefund.id, FeeRefund.amount_fen).where(FeeRefund.id.in_(refund_ids))
        ).all()
    )
    count = len(statements) + len(refund_ids)
    total = sum(int(fen) for _, fen in statements) + sum(refund_fen.values())
    if expect is not None and tuple(expect) != (count, total):
        raise Conflict(
            _l("The payments waiting changed since the page was shown; check them again.")
        )
    if count == 0:
        raise Conflict(NOTHING_WAITING)
    reference = _next_reference(today)
    batch = BankBatch(
        reference=reference,
        line_count=count,
        total_fen=total,
        created_by_user_id=actor.id,
        created_at=now_utc(),
    )
    try:
        with db.session.begin_nested():
            db.session.add(batch)
            db.session.flush()
            _insert_lines(batch, [s for s, _ in statements], refund_ids)
    except sa.exc.IntegrityError:
        raise Conflict(
            _l("Another batch was made at the same moment; reload the page and check it.")
        ) from None
    for refund_id, fen in reserved:
        ledger.post(
            "fee_refund",
            memos.memo("ledger.fee_refund_batch", refund=refund_id, batch=reference),
            [("pool:available", -fen), ("fee_refunds:payable", fen)],
            cause=("fee_refunds", refund_id),
            actor_id=actor.id,
        )
    audit.record(
        "settlement.bank_batch_create",
        batch,
        after={
            "reference": reference,
            "line_count": count,
            "total_fen": total,
            "statements": len(statements),
            "fee_refunds": len(refund_ids),
            "refunds_reserved_fen": sum(fen for _, fen in reserved),
        },
        actor=actor,
    )
    return batch


def _insert_lines(batch: BankBatch, statement_ids: list[int], refund_ids: list[int]) -> None:
    """Two INSERT … SELECTs: the payees come from the statements' snapshots and the refunds'
    accounts, in SQL; line numbers run on from the statements into the refunds."""
    prefix = f"{batch.reference}-"
    columns = [
        "batch_id",
        "line_no",
        "reference",
        "kind",
        "statement_id",
        "fee_refund_id",
        "payee_account_name",
        "payee_bank_name",
        "payee_account_number",
        "amount_fen",
        "status",
    ]
    table = BankTransfer.__table__
    if statement_ids:
        number = sa.func.row_number().over(
            order_by=(Statement.month, Statement.provider_id, Statement.seq)
        )
        db.session.execute(
            table.insert().from_select(
                columns,
                sa.select(
                    sa.literal(batch.id),
                    number,
                    sa.literal(prefix) + sa.cast(number, sa.String),
                    sa.literal("statement"),
                    Statement.id,
                    sa.null(),
                    Statement.payee_account_name,
                    Statement.payee_bank_name,
                    Statement.payee_account_number,
                    _payable(),
                    sa.literal("sent"),
                ).where(Statement.id.in_(statement_ids)),
            )
        )
    if refund_ids:
        offset = len(statement_ids)
        number = sa.func.row_number().over(order_by=(FeeRefund.owed_on, FeeRefund.id)) + offset
        db.session.execute(
            table.insert().from_select(
                columns,
                sa.select(
                    sa.literal(batch.id),
                    number,
                    sa.literal(prefix) + sa.cast(number, sa.String),
                    sa.literal("fee_refund"),
                    sa.null(),
                    FeeRefund.id,
                    FeeRefund.payee_account_name,
                    FeeRefund.payee_bank_name,
                    FeeRefund.payee_account_number,
                    FeeRefund.amount_fen,
                    sa.literal("sent"),
                ).where(FeeRefund.id.in_(refund_ids)),
            )
        )


# --------------------------------------------------------------------------- the file


def payer() -> dict:
    config = current_app.config
    return {
        "name": config["SETTLEMENT_PAYER_ACCOUNT_NAME"],
        "number": config["SETTLEMENT_PAYER_ACCOUNT_NUMBER"],
        "bank": config["SETTLEMENT_PAYER_BANK"],
    }


def file_rows(batch: BankBatch) -> Iterator[list[str]]:
    """The file's rows, header to trailer, the lines streamed from the database."""
    account = payer()
    total = yuan_text(batch.total_fen)
    created = f"{to_local(batch.created_at):%Y-%m-%d}"
    yield ["H", batch.reference, created, account["name"], str(batch.line_count), total,
           account["number"], account["bank"]]  # fmt: skip
    yield list(COLUMN_TITLES)
    rows = db.session.execute(
        sa.select(
            BankTransfer.line_no,
            BankTransfer.reference,
            BankTransfer.payee_account_number,
            BankTransfer.payee_account_name,
            BankTransfer.payee_bank_name,
            BankTransfer.amount_fen,
            BankTransfer.kind,
            Statement.month,
        )
        .outerjoin(Statement, Statement.id == BankTransfer.statement_id)
        .where(BankTransfer.batch_id == batch.id)
        .order_by(BankTransfer.line_no)
        .execution_options(yield_per=STREAM_ROWS)
    )
    for line_no, ref, number, name, bank, fen, kind, month in rows:
        purpose = (
            STATEMENT_PURPOSE.format(month=f"{month:%Y-%m}")
            if kind == "statement"
            else REFUND_PURPOSE
        )
        yield ["D", str(line_no), ref, number, name, bank, yuan_text(fen), purpose]
    yield ["T", str(batch.line_count), total]


def csv_chunks(batch: BankBatch) -> Iterator[bytes]:
    """The batch as CSV, UTF-8 with a byte-order mark (Excel then reads the Chinese right),
    CRLF line ends, a chunk per few hundred rows."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    yield "\ufeff".encode()
    for i, row in enumerate(file_rows(batch), 1):
        writer.writerow(row)
        if i % 500 == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def xlsx_chunks(batch: BankBatch, chunk: int = 64 * 1024) -> Iterator[bytes]:
    """The batch as XLSX, the same rows, every cell text (account numbers keep their
    digits, amounts their two decimals). openpyxl's write-only mode keeps memory flat; the
    workbook is assembled in a temporary file and sent in chunks."""
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(batch.reference)
    for row in file_rows(batch):
        # A payee named "=HYPERLINK(…)" stays text, never a formula Excel evaluates.
        sheet.append([text_cell(sheet, value) for value in row])
    yield from workbook_chunks(workbook, chunk)


def batch_by_id(batch_id: int) -> BankBatch:
    from eldercare.errors import NotFound

    batch = db.session.get(BankBatch, batch_id)
    if batch is None:
        raise NotFound()
    return batch
