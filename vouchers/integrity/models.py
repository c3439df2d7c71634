"""Flags on redemptions. An open flag holds its redemption out of settlement until a bureau
officer clears it (it is settled with the next run) or rejects it (the redemption is
reversed, or clawed back if it was already settled), with a reason, audited."""

from __future__ import annotations

from datetime import datetime

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
