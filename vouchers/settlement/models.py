"""Tables of settlement: months and their cut-off, statements and their lines, approvals,
payee bank-account changes, bank transfer batches and their results, reconciliation runs and
the exception queue.

Money is integer fen. What the database itself guarantees (migration 0017):
- a redemption is in at most one statement (``statement_lines.redemption_id`` is the key);
- the person who prepared a statement never approves or rejects it, and the second approver
  is neither of the others (CHECK constraints);
- an approved statement's lines and totals never change (triggers on PostgreSQL and SQLite);
- a statement or a fee refund is in at most one bank transfer that is not failed (partial
  unique indexes), so nothing is paid twice;
- a bank result file is imported once (its SHA-256 is unique).
"""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from eldercare.db import Base, UTCDateTime
from eldercare.timeutil import now_utc

# prepared: lines gathered, waiting for an approver (a rerun may add lines); awaiting_second:
# approved once, above the threshold, waiting for a second approver; approved: frozen and in
# the books (provider payable), waiting for the bank; paid: the bank confirmed the transfer;
# rejected: an approver refused it with a reason, and its lines went back to be settled again.
STATEMENT_STATUSES = ("prepared", "awaiting_second", "approved", "paid", "rejected")
FROZEN_STATUSES = ("approved", "paid")
PAYEE_CHANGE_STATUSES = ("pending", "approved", "rejected")
# sent: in a batch file handed to the bank; paid / failed: what the bank's result said.
TRANSFER_STATUSES = ("sent", "paid", "failed")
TRANSFER_KINDS = ("statement", "fee_refund")
EXCEPTION_STATUSES = ("open", "resolved")


def _in(column: str, values) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class SettlementMonth(Base):
    """A voucher month as settlement sees it. Its row is also the lock that keeps a
    reversal and a settlement run of the same month apart: the run locks it for update, a
    reversal for share (``vouchers.settlement.statements.guard``), so a redemption is either in a
    statement or reversed, never both."""

    __tablename__ = "settlement_months"

    month: Mapped[date] = mapped_column(sa.Date, primary_key=True)  # the month's first day
    # The first day it may be settled: the day after month end + the longest reversal window.
    settles_from: Mapped[date] = mapped_column(sa.Date)
    last_run_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_run_lines: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")


class SettlementRules(Base):
    """The settlement rules in force from a date (policy data, versioned like voucher
    policies): above what total a statement needs a second approver."""

    __tablename__ = "settlement_rules"
    __table_args__ = (sa.CheckConstraint("second_approval_above_fen > 0", name="threshold"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    effective_from: Mapped[date] = mapped_column(sa.Date, unique=True)
    # A statement paying more than this needs two different approvers (1 million yuan).
    second_approval_above_fen: Mapped[int] = mapped_column(sa.BigInteger)
    note: Mapped[str | None] = mapped_column(sa.Text)
    created_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)


class Statement(Base):
    """What the pool owes one provider for one voucher month. Usually one per provider and
    month; redemptions that become settleable after it was approved (a payment resolved
    late, a flag cleared) go into a supplementary one (``seq`` 2, 3, ...)."""

    __tablename__ = "statements"
    __table_args__ = (
        sa.CheckConstraint(_in("status", STATEMENT_STATUSES), name="known_status"),
        sa.UniqueConstraint("provider_id", "month", "seq"),
        # Maker-checker in the database: nobody approves or rejects what they prepared, and
        # the second approval is a third person.
        sa.CheckConstraint(
            "approved_by_user_id IS NULL OR approved_by_user_id <> prepared_by_user_id",
            name="checker_not_maker",
        ),
        sa.CheckConstraint(
            "second_approved_by_user_id IS NULL OR (second_approved_by_user_id <> "
            "approved_by_user_id AND second_approved_by_user_id <> prepared_by_user_id)",
            name="second_checker_differs",
        ),
        sa.CheckConstraint(
            "rejected_by_user_id IS NULL OR rejected_by_user_id <> prepared_by_user_id",
            name="rejecter_not_maker",
        ),
        sa.CheckConstraint(
            "subsidy_fen >= 0 AND card_copay_fen >= 0 AND clawback_fen >= 0 "
            "AND clawback_fen <= subsidy_fen AND line_count >= 0",
            name="amounts",
        ),
        # One open (prepared or awaiting a second approval) statement per provider and month:
        # a rerun adds its new lines to it.
        sa.Index(
            "uq_statements_open",
            "provider_id",
            "month",
            unique=True,
            sqlite_where=sa.text("status IN ('prepared', 'awaiting_second')"),
            postgresql_where=sa.text("status IN ('prepared', 'awaiting_second')"),
        ),
        sa.Index("ix_statements_month_status", "month", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    provider_id: Mapped[int] = mapped_column(sa.ForeignKey("providers.id"), index=True)
    month: Mapped[date] = mapped_column(sa.Date)
    seq: Mapped[int] = mapped_column(default=1)
    status: Mapped[str] = mapped_column(sa.String(16), default="prepared")
    # Totals of the lines (kept by the run; frozen with the lines at approval).
    line_count: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    subsidy_fen: Mapped[int] = mapped_column(sa.BigInteger, default=0)  # owed from the pool
    # Card co-payments the gateway collected on the provider's behalf, net of refunds.
    card_copay_fen: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    # Clawbacks (the provider's receivable) netted against this statement at approval.
    clawback_fen: Mapped[int] = mapped_column(sa.BigInteger, default=0)
    # The payee, copied from the provider when the statement was prepared (and again at
    # approval): the bank file is built from this copy only.
    payee_account_name: Mapped[str] = mapped_column(sa.String(120))
    payee_bank_name: Mapped[str] = mapped_column(sa.String(120))
    payee_account_number: Mapped[str] = mapped_column(sa.String(40))
    # SHA-256 (hex) of the lines and totals, stored at approval; reconciliation recomputes it.
    lines_hash: Mapped[str | None] = mapped_column(sa.String(64))
    prepared_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    prepared_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    approved_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    second_approved_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    second_approved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rejected_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    rejected_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rejection_reason: Mapped[str | None] = mapped_column(sa.Text)
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    @property
    def payable_fen(self) -> int:
        """What the bank transfers: the subsidy less clawbacks, plus the card co-payments."""
        return self.subsidy_fen - self.clawback_fen + self.card_copay_fen


class StatementLine(Base):
    """One redemption in a statement, with its amounts as settled. The redemption id is the
    key: a redemption is in at most one statement, whatever runs at once. A rejected
    statement's lines are deleted (its totals and reason stay), so they can be settled
    again; an approved statement's lines can no longer change (triggers)."""

    __tablename__ = "statement_lines"
    __table_args__ = (sa.Index("ix_statement_lines_statement", "statement_id", "redemption_id"),)

    redemption_id: Mapped[int] = mapped_column(
        sa.ForeignKey("redemptions.id"), primary_key=True, autoincrement=False
    )
    statement_id: Mapped[int] = mapped_column(sa.ForeignKey("statements.id"))
    # The elder's district (of the voucher), for the per-district reconciliation.
    district_id: Mapped[int] = mapped_column(sa.ForeignKey("districts.id"))
    price_fen: Mapped[int] = mapped_column(sa.BigInteger)
    insurance_fen: Mapped[int] = mapped_column(sa.BigInteger)
    subsidy_fen: Mapped[int] = mapped_column(sa.BigInteger)
    copay_fen: Mapped[int] = mapped_column(sa.BigInteger)
    payment_method: Mapped[str] = mapped_column(sa.String(8))  # card / cash / none
    # The part of copay_fen collected by the gateway on the provider's behalf (card), net of
    # refunds; 0 for cash.
    card_copay_fen: Mapped[int] = mapped_column(sa.BigInteger)


class PayeeChange(Base):
    """A provider's request to be paid to another bank account. The provider's bank details
    change only when a bureau officer other than the requester approves it: the classic
    diversion fraud is a changed account just before a payment."""

    __tablename__ = "payee_changes"
    __table_args__ = (
        sa.CheckConstraint(_in("status", PAYEE_CHANGE_STATUSES), name="known_status"),
        sa.CheckConstraint(
            "decided_by_user_id IS NULL OR decided_by_user_id <> requested_by_user_id",
            name="decider_not_requester",
        ),
        # One pending request per provider at a time.
        sa.Index(
            "uq_payee_changes_pending",
            "provider_id",
            unique=True,
            sqlite_where=sa.text("status = 'pending'"),
            postgresql_where=sa.text("status = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    provider_id: Mapped[int] = mapped_column(sa.ForeignKey("providers.id"), index=True)
    account_name: Mapped[str] = mapped_column(sa.String(120))
    bank_name: Mapped[str] = mapped_column(sa.String(120))
    account_number: Mapped[str] = mapped_column(sa.String(40))
    status: Mapped[str] = mapped_column(sa.String(10), default="pending")
    requested_by_user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    decided_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reason: Mapped[str | None] = mapped_column(sa.Text)


class BankBatch(Base):
    """One bank transfer batch file: every approved, unpaid statement and every owed fee
    refund with an account, at the moment it was made."""

    __tablename__ = "bank_batches"

    id: Mapped[int] = mapped_column(primary_key=True)
    # The batch's reference in the file's header and trailer, e.g. "EC20261204001".
    reference: Mapped[str] = mapped_column(sa.String(32), unique=True)
    line_count: Mapped[int] = mapped_column()
    total_fen: Mapped[int] = mapped_column(sa.BigInteger)
    created_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)

    transfers: Mapped[list[BankTransfer]] = relationship(
        back_populates="batch", order_by="BankTransfer.line_no"
    )


class BankTransfer(Base):
    """One line of a batch: a payee, an amount and what it pays (a statement or a fee
    refund). Its payee is copied from the statement's snapshot (or the refund's account)."""

    __tablename__ = "bank_transfers"
    __table_args__ = (
        sa.CheckConstraint(_in("status", TRANSFER_STATUSES), name="known_status"),
        sa.CheckConstraint(_in("kind", TRANSFER_KINDS), name="known_kind"),
        sa.CheckConstraint("amount_fen > 0", name="amount"),
        sa.CheckConstraint(
            "(kind = 'statement') = (statement_id IS NOT NULL) "
            "AND (kind = 'fee_refund') = (fee_refund_id IS NOT NULL)",
            name="pays_one_thing",
        ),
        sa.UniqueConstraint("batch_id", "line_no"),
        # Nothing is paid twice: at most one transfer that has not failed per statement and
        # per fee refund.
        sa.Index(
            "uq_bank_transfers_statement_live",
            "statement_id",
            unique=True,
            sqlite_where=sa.text("status <> 'failed'"),
            postgresql_where=sa.text("status <> 'failed'"),
        ),
        sa.Index(
            "uq_bank_transfers_fee_refund_live",
            "fee_refund_id",
            unique=True,
            sqlite_where=sa.text("status <> 'failed'"),
            postgresql_where=sa.text("status <> 'failed'"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(sa.ForeignKey("bank_batches.id"))
    line_no: Mapped[int] = mapped_column()
    # The line's reference in the file, echoed by the bank's result: "<batch ref>-<line no>".
    reference: Mapped[str] = mapped_column(sa.String(40), unique=True)
    kind: Mapped[str] = mapped_column(sa.String(12))
    statement_id: Mapped[int | None] = mapped_column(sa.ForeignKey("statements.id"))
    fee_refund_id: Mapped[int | None] = mapped_column(sa.ForeignKey("assessment_fee_refunds.id"))
    payee_account_name: Mapped[str] = mapped_column(sa.String(120))
    payee_bank_name: Mapped[str] = mapped_column(sa.String(120))
    payee_account_number: Mapped[str] = mapped_column(sa.String(40))
    amount_fen: Mapped[int] = mapped_column(sa.BigInteger)
    status: Mapped[str] = mapped_column(sa.String(8), default="sent")
    bank_reason: Mapped[str | None] = mapped_column(sa.String(200))  # the bank's, if failed
    result_import_id: Mapped[int | None] = mapped_column(sa.ForeignKey("bank_result_imports.id"))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    batch: Mapped[BankBatch] = relationship(back_populates="transfers")


class BankResultImport(Base):
    """A bank result file imported for a batch. The file's SHA-256 is unique: importing the
    same file again changes nothing."""

    __tablename__ = "bank_result_imports"

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(sa.ForeignKey("bank_batches.id"), index=True)
    file_sha256: Mapped[str] = mapped_column(sa.String(64), unique=True)
    file_name: Mapped[str] = mapped_column(sa.String(200))
    paid_count: Mapped[int] = mapped_column(default=0)
    failed_count: Mapped[int] = mapped_column(default=0)
    exception_count: Mapped[int] = mapped_column(default=0)  # lines sent to the queue
    imported_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)


class ReconciliationRun(Base):
    """One reconciliation of a month (the job, ``flask reconcile`` or the bureau's button):
    the pool identity in total and per district, the gateway, the bank, the statements'
    hashes. ``findings`` is what the page shows; each mismatch is also in the queue."""

    __tablename__ = "reconciliation_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    month: Mapped[date] = mapped_column(sa.Date, index=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ok: Mapped[bool] = mapped_column()
    findings: Mapped[dict] = mapped_column(sa.JSON)
    requested_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))


class SettlementException(Base):
    """One thing that did not match (a bank result line nobody sent, a gateway payment the
    platform does not know, a statement whose lines no longer hash to what was approved...),
    with its evidence, until a bureau officer resolves it with a written resolution
    (audited). The same finding found again is the same row (``fingerprint``)."""

    __tablename__ = "settlement_exceptions"
    __table_args__ = (
        sa.CheckConstraint(_in("status", EXCEPTION_STATUSES), name="known_status"),
        sa.CheckConstraint(
            "(status = 'resolved') = (resolved_at IS NOT NULL AND resolution IS NOT NULL)",
            name="resolved_with_resolution",
        ),
        sa.Index(
            "uq_settlement_exceptions_open",
            "fingerprint",
            unique=True,
            sqlite_where=sa.text("status = 'open'"),
            postgresql_where=sa.text("status = 'open'"),
        ),
        sa.Index("ix_settlement_exceptions_status", "status", "found_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Where it was found: "bank_import" or "reconciliation".
    source: Mapped[str] = mapped_column(sa.String(20))
    # What kind of mismatch, a code rendered in the reader's language
    # (e.g. "bank.unknown_reference", "gateway.unknown_intent", "statement.hash").
    kind: Mapped[str] = mapped_column(sa.String(40))
    # Identifies the finding: found again, it is the same open row.
    fingerprint: Mapped[str] = mapped_column(sa.String(200))
    month: Mapped[date | None] = mapped_column(sa.Date)
    district_id: Mapped[int | None] = mapped_column(sa.ForeignKey("districts.id"))
    evidence: Mapped[dict] = mapped_column(sa.JSON)
    status: Mapped[str] = mapped_column(sa.String(10), default="open")
    found_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    resolution: Mapped[str | None] = mapped_column(sa.Text)
    resolved_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
