"""Tables of the vouchers domain: policy versions, the subsidy-pool ledger, vouchers."""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from eldercare.db import Base, UTCDateTime
from eldercare.timeutil import now_utc

VOUCHER_KINDS = ("home_community", "institutional")
VOUCHER_STATUSES = ("active", "expired", "revoked")
ENTRY_KINDS = (
    "topup",
    "allocation",
    "issue",
    "hold",
    "capture",
    "release",
    "reverse",
    "expire",
    "revoke",
    "settle",
    "pay",
    "fee_refund",
)


def _in(column: str, values) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class VoucherPolicy(Base):
    """One version of a voucher kind's rules; code asks which version held on a date."""

    __tablename__ = "voucher_policies"
    __table_args__ = (
        sa.CheckConstraint(_in("kind", VOUCHER_KINDS), name="known_kind"),
        sa.CheckConstraint("monthly_cap_fen > 0", name="cap"),
        sa.CheckConstraint("ratio_bp > 0 AND ratio_bp <= 10000", name="ratio"),
        sa.CheckConstraint("effective_to IS NULL OR effective_to > effective_from", name="period"),
        sa.CheckConstraint("evv_max_distance_m > 0 AND reversal_window_days >= 0", name="limits"),
        sa.UniqueConstraint("kind", "effective_from"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(20))
    effective_from: Mapped[date] = mapped_column(sa.Date)
    effective_to: Mapped[date | None] = mapped_column(sa.Date)  # exclusive
    # The voucher's face value each month, in fen (500 yuan = 50000).
    monthly_cap_fen: Mapped[int] = mapped_column(sa.BigInteger)
    # Share of the in-scope out-of-pocket price the voucher pays, in basis points (40% = 4000).
    ratio_bp: Mapped[int] = mapped_column()
    # Space-separated marketplace category codes the voucher covers.
    in_scope_categories: Mapped[str] = mapped_column(sa.String(400))
    # Space-separated assessment levels that receive this voucher.
    eligible_levels: Mapped[str] = mapped_column(sa.String(100))
    # Electronic visit verification: how far from the elder's home a home-service check-in
    # may be.
    evv_max_distance_m: Mapped[int] = mapped_column(default=500)
    # How many days after a redemption it may still be reversed.
    reversal_window_days: Mapped[int] = mapped_column(default=7)
    note: Mapped[str | None] = mapped_column(sa.Text)
    created_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)

    @property
    def category_set(self) -> frozenset[str]:
        return frozenset(self.in_scope_categories.split())

    @property
    def level_set(self) -> frozenset[str]:
        return frozenset(self.eligible_levels.split())


class LedgerAccount(Base):
    """A bucket of the subsidy pool's money. Every movement is a balanced journal entry;
    ``balance_fen`` is its running total, which the database keeps from going negative for
    every account but the outside funding sources."""

    __tablename__ = "ledger_accounts"
    __table_args__ = (
        sa.CheckConstraint("may_go_negative OR balance_fen >= 0", name="not_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # e.g. "pool:available", "district:210102:available", "vouchers:outstanding",
    # "funding:central".
    code: Mapped[str] = mapped_column(sa.String(60), unique=True)
    name: Mapped[str] = mapped_column(sa.String(120))
    # Only the funding sources: money that comes from outside the pool.
    may_go_negative: Mapped[bool] = mapped_column(default=False)
    balance_fen: Mapped[int] = mapped_column(sa.BigInteger, default=0)


class JournalEntry(Base):
    """One money movement, with the change that caused it; its lines sum to zero."""

    __tablename__ = "journal_entries"
    __table_args__ = (sa.CheckConstraint(_in("kind", ENTRY_KINDS), name="known_kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(20), index=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    memo: Mapped[str] = mapped_column(sa.String(200))
    # What caused it, e.g. ("vouchers", "42"), so reconciliation can follow every fen back.
    cause_type: Mapped[str | None] = mapped_column(sa.String(40))
    cause_id: Mapped[str | None] = mapped_column(sa.String(40))
    created_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))

    lines: Mapped[list[JournalLine]] = relationship(back_populates="entry")


class JournalLine(Base):
    __tablename__ = "journal_lines"
    __table_args__ = (sa.CheckConstraint("amount_fen <> 0", name="not_zero"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    entry_id: Mapped[int] = mapped_column(sa.ForeignKey("journal_entries.id"), index=True)
    account_id: Mapped[int] = mapped_column(sa.ForeignKey("ledger_accounts.id"), index=True)
    # Positive adds to the account, negative takes from it.
    amount_fen: Mapped[int] = mapped_column(sa.BigInteger)

    entry: Mapped[JournalEntry] = relationship(back_populates="lines")
    account: Mapped[LedgerAccount] = relationship()


class Voucher(Base):
    """An elder's voucher for one natural month (Asia/Shanghai), of one kind."""

    __tablename__ = "vouchers"
    __table_args__ = (
        sa.UniqueConstraint("resident_id", "month"),  # one voucher per elder per month
        sa.CheckConstraint(_in("kind", VOUCHER_KINDS), name="known_kind"),
        sa.CheckConstraint(_in("status", VOUCHER_STATUSES), name="known_status"),
        sa.CheckConstraint(
            "balance_fen >= 0 AND held_fen >= 0 AND balance_fen + held_fen <= face_value_fen",
            name="amounts",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    resident_id: Mapped[int] = mapped_column(sa.ForeignKey("residents.id"), index=True)
    # The first day of the month it is valid in.
    month: Mapped[date] = mapped_column(sa.Date, index=True)
    kind: Mapped[str] = mapped_column(sa.String(20))
    policy_id: Mapped[int] = mapped_column(sa.ForeignKey("voucher_policies.id"))
    # The district allocation it was reserved from.
    district_id: Mapped[int] = mapped_column(sa.ForeignKey("districts.id"))
    face_value_fen: Mapped[int] = mapped_column(sa.BigInteger)
    balance_fen: Mapped[int] = mapped_column(sa.BigInteger)  # spendable now
    held_fen: Mapped[int] = mapped_column(sa.BigInteger, default=0)  # held during payments
    status: Mapped[str] = mapped_column(sa.String(12), default="active")
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    policy: Mapped[VoucherPolicy] = relationship()
