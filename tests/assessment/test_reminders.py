from datetime import date, timedelta

import sqlalchemy as sa

from assessment.reminders import remind_expiring_assessments
from eldercare.accounts import FamilyLink
from eldercare.notifications import Notification


def _notifications(db_session):
    return db_session.scalars(sa.select(Notification).order_by(Notification.id)).all()


def test_reminds_elder_and_family_once_thirty_days_before_expiry(
    world, take_through, db_session, app
):
    elder_user = world.factory.user("elder", roles=["elder"], resident=world.elder)
    son = world.factory.user("son", roles=["family_agent"])
    db_session.add(
        FamilyLink(
            agent_user_id=son.id,
            resident_id=world.elder.id,
            relationship="child",
            consent_date=date(2025, 6, 1),
        )
    )
    case = take_through(total=50)
    too_early = case.valid_until - timedelta(days=31)
    assert remind_expiring_assessments(today=too_early) == {"expiring": 0, "queued": 0}

    window = case.valid_until - timedelta(days=30)
    assert remind_expiring_assessments(today=window) == {"expiring": 1, "queued": 2}
    sent = _notifications(db_session)
    assert {n.recipient_user_id for n in sent} == {elder_user.id, son.id}
    assert case.valid_until.isoformat() in sent[0].subject
    assert "王**" in sent[0].body and "王秀英" not in sent[0].body  # no full name in messages

    # The job runs every day; the same reminder is never queued twice.
    assert remind_expiring_assessments(today=window + timedelta(days=1))["queued"] == 0
    assert len(_notifications(db_session)) == 2


def test_no_reminder_once_a_renewal_is_under_way(world, take_through, db_session):
    from assessment import lifecycle

    world.factory.user("elder", roles=["elder"], resident=world.elder)
    case = take_through(total=50)
    window = case.valid_until - timedelta(days=10)
    lifecycle.apply(
        world.elder, type="routine", applied_by=world.officer, via="bureau", today=window
    )
    assert remind_expiring_assessments(today=window) == {"expiring": 0, "queued": 0}


def test_scheduler_job_is_registered(app):
    result = app.test_cli_runner().invoke(args=["scheduler", "list", "--json"])
    assert '"assessment.remind_expiring"' in result.output
