"""The daily reminder that an assessment is about to expire (through the notification outbox)."""

from __future__ import annotations

from datetime import date, timedelta

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from assessment.lifecycle import OPEN_STATUSES, latest_approved
from assessment.models import Assessment
from assessment.policy import policy_on
from eldercare.accounts import accounts_acting_for
from eldercare.db import db
from eldercare.notifications import enqueue, notice, notice_messages
from eldercare.timeutil import local_today

notice_messages(
    "assessment.expiry",
    _l("Assessment expires on %(until)s"),
    _l(
        "The ability assessment of %(name)s expires on %(until)s. Please apply for a new "
        "assessment before then so that the monthly voucher continues."
    ),
)


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
        subject, body = notice(
            "assessment.expiry",
            until=assessment.valid_until.isoformat(),
            name=assessment.resident.masked_name,
        )
        for user in accounts_acting_for(assessment.resident_id):
            queued += enqueue(
                user.id,
                subject=subject,
                body=body,
                dedupe_key=f"assessment-expiry:{assessment.id}:{user.id}",
            )
    return {"expiring": reminded, "queued": queued}
