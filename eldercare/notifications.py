"""The notification outbox: messages are written in the business transaction and sent later.

Writing the message row in the same transaction as its cause means a rolled-back change
never notifies anyone, and a committed one is never forgotten. ``dedupe_key`` makes
producers idempotent: a rerun job asks to send the same message and nothing new is queued.
Backends (email now; SMS or WeChat later) drain the outbox.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from eldercare.db import Base, UTCDateTime, db
from eldercare.timeutil import now_utc

STATUSES = ("pending", "sent", "failed")


class Notification(Base):
    __tablename__ = "notifications"
    __table_args__ = (
        sa.CheckConstraint("status IN ('pending', 'sent', 'failed')", name="known_status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    recipient_user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    # Which backend should carry it ("email"; later "sms", "wechat").
    channel: Mapped[str] = mapped_column(sa.String(16), default="email")
    subject: Mapped[str] = mapped_column(sa.String(200))
    body: Mapped[str] = mapped_column(sa.Text)
    # Producer-chosen identity of the message, e.g. "assessment-expiry:12:7".
    dedupe_key: Mapped[str] = mapped_column(sa.String(120), unique=True)
    status: Mapped[str] = mapped_column(sa.String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


def enqueue(recipient_user_id: int, subject: str, body: str, dedupe_key: str) -> bool:
    """Queue a message unless one with the same key exists; True if it was queued."""
    exists = db.session.scalar(
        sa.select(Notification.id).where(Notification.dedupe_key == dedupe_key)
    )
    if exists is not None:
        return False
    db.session.add(
        Notification(
            recipient_user_id=recipient_user_id,
            subject=subject[:200],
            body=body,
            dedupe_key=dedupe_key,
        )
    )
    db.session.flush()
    return True
