"""Flags on redemptions. An open flag holds its redemption out of settlement until a bureau
officer clears it (it is settled with the next run) or rejects it (the redemption is
reversed, or clawed back if it was already settled), with a reason, audited."""

from __future__ import annotations

from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from eldercare.db import Base, UTCDateTime
from eldercare.timeutil import now_utc

FLAG_STATUSES = ("open", "cleared", "rejected")


class RedemptionFlag(Base):
    __tablename__ = "redemption_flags"
    __table_args__ = (
        sa.CheckConstraint("status IN ('open', 'cleared', 'rejected')", name="known_status"),
        sa.CheckConstraint("(status = 'open') = (decided_at IS NULL)", name="decided_unless_open"),
        # Settlement asks "does this redemption have an open flag?" for every line it takes.
        sa.Index(
            "ix_redemption_flags_open",
            "redemption_id",
            sqlite_where=sa.text("status = 'open'"),
            postgresql_where=sa.text("status = 'open'"),
        ),
        # A rule flags a redemption once, whatever the decision: a cleared finding is not
        # raised again by the next run. An officer's own hold ("bureau") may be raised again.
        sa.Index(
            "uq_redemption_flags_rule",
            "redemption_id",
            "rule",
            unique=True,
            sqlite_where=sa.text("rule <> 'bureau'"),
            postgresql_where=sa.text("rule <> 'bureau'"),
        ),
        sa.Index("ix_redemption_flags_rule_status", "rule", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    redemption_id: Mapped[int] = mapped_column(sa.ForeignKey("redemptions.id"), index=True)
    # Which rule raised it, a code rendered in the reader's language ("bureau" for a flag an
    # officer raised by hand).
    rule: Mapped[str] = mapped_column(sa.String(40))
    # The rule's explanation and its evidence, as data.
    evidence: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    status: Mapped[str] = mapped_column(sa.String(10), default="open")
    raised_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    raised_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    decided_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    reason: Mapped[str | None] = mapped_column(sa.Text)
    # Not stored: set by ``flags.raise_flag`` when the redemption was already in an approved
    # statement (settled), so the page can say so.
    settled = False


class AnomalyRule(Base):
    """One version of an anomaly rule: its thresholds (``params``), whether it runs, and the
    days it is in force (``effective_from`` inclusive, ``effective_to`` exclusive). A
    redemption is judged by the version in force on the day of its service. A bureau approver
    adds a version from a future day; the version before it ends there (as voucher policies)."""

    __tablename__ = "anomaly_rules"
    __table_args__ = (
        sa.CheckConstraint(
            "effective_to IS NULL OR effective_to > effective_from", name="dates_in_order"
        ),
        sa.UniqueConstraint("code", "effective_from"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(sa.String(40))
    params: Mapped[dict] = mapped_column(sa.JSON, default=dict)
    enabled: Mapped[bool] = mapped_column(default=True)
    effective_from: Mapped[date] = mapped_column(sa.Date)
    effective_to: Mapped[date | None] = mapped_column(sa.Date)
    note: Mapped[str | None] = mapped_column(sa.Text)
    created_by_user_id: Mapped[int | None] = mapped_column(sa.ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
