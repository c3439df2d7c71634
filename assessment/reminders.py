"""The daily reminder that an assessment is about to expire (through the notification outbox)."""

from __future__ import annotations

from datetime import date, timedelta

import sqlalchemy as sa

from assessment.lifecycle import OPEN_STATUSES, latest_approved
from assessment.models import Assessment
from assessment.policy import policy_on
from eldercare.accounts import accounts_acting_for
from eldercare.db import db
from eldercare.notifications import enqueue
from eldercare.timeutil import local_today


def remind_expiring_assessments(today: date | None = None) -> dict:
    """Queue one reminder per recipient per expiring assessment; rerunning queues nothing new."""
    today = today or local_today()
    horizon = today + timedelta(days=policy_on(today).expiry_reminder_days)
    expiring = db.session.scalars(
        sa.select(Assessment)
        .where(
            Assessment.status == "approved",
            Assessment.valid_until >= today,
            Assessment.valid_until <= horizon,
        )
        .order_by(Assessment.id)
    ).all()
    reminded, queued = 0, 0
    for assessment in expiring:
        if latest_approved(assessment.resident_id).id != assessment.id:
            continue  # a newer result already replaced it
        renewal_open = db.session.scalar(
            sa.select(Assessment.id).where(
                Assessment.resident_id == assessment.resident_id,
                Assessment.status.in_(OPEN_STATUSES),
            )
        )
        if renewal_open is not None:
            continue  # the renewal is already under way
        reminded += 1
        until = assessment.valid_until.isoformat()
        for user in accounts_acting_for(assessment.resident_id):
            queued += enqueue(
                user.id,
                subject=f"能力评估将于 {until} 到期 / Assessment expires on {until}",
                body=(
                    f"{assessment.resident.masked_name} 的老年人能力评估将于 {until} 到期。"
                    "请在到期前申请重新评估，以免影响每月的养老服务消费券。\n"
                    f"The ability assessment of {assessment.resident.masked_name} expires on "
                    f"{until}. Please apply for a new assessment before then so that the "
                    "monthly voucher continues."
                ),
                dedupe_key=f"assessment-expiry:{assessment.id}:{user.id}",
            )
    return {"expiring": reminded, "queued": queued}
