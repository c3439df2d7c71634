"""Issue 14: a newly approved elder's first voucher is told to everyone who acts for the
elder (the elder's account and the family agents), through the notification outbox, whichever
run issued it; once per voucher and person, and not for a voucher the elder already held."""

import sqlalchemy as sa

from eldercare.notifications import Notification
from vouchers.issuance.eligibility_feed import process_eligibility_events
from vouchers.issuance.monthly import issue_monthly, month_of
from vouchers.models import Voucher


def _voucher_notices(db_session):
    return db_session.scalars(
        sa.select(Notification)
        .where(Notification.dedupe_key.like("voucher-issued:%"))
        .order_by(Notification.recipient_user_id)
    ).all()


def _voucher(db_session, elder):
    return db_session.scalar(
        sa.select(Voucher).where(Voucher.resident_id == elder.id, Voucher.status == "active")
    )


def test_the_approved_elders_first_voucher_is_told_to_the_family(scheme, db_session):
    result = process_eligibility_events()  # the approval the scheme fixture made
    voucher = _voucher(db_session, scheme.elder)
    assert voucher is not None and result["issued"] == [voucher.id]
    notices = _voucher_notices(db_session)
    assert {n.recipient_user_id for n in notices} == {scheme.elder_user.id, scheme.son.id}
    body = notices[0].body
    assert "¥" in body and f"{voucher.face_value_fen // 100:,}" in body
    assert f"{voucher.month:%Y-%m}" in body and "消费券已发放" in body and "has been issued" in body
    assert all(n.status == "pending" for n in notices)

    process_eligibility_events()  # a rerun queues nothing more
    assert len(_voucher_notices(db_session)) == 2


def test_the_notice_comes_when_the_monthly_catch_up_issued_it_first(scheme, db_session):
    """The monthly catch-up (every 10 minutes) may issue the approved elder's voucher before
    the feed (every minute) reads the approval: the family is told all the same."""
    issue_monthly(month_of(scheme.today))
    voucher = _voucher(db_session, scheme.elder)
    assert voucher is not None
    result = process_eligibility_events()
    assert result["issued"] == []
    assert {n.recipient_user_id for n in _voucher_notices(db_session)} == {
        scheme.elder_user.id,
        scheme.son.id,
    }


def test_a_reassessment_of_an_elder_holding_the_voucher_tells_nothing_new(scheme, db_session):
    process_eligibility_events()
    db_session.execute(sa.delete(Notification))  # the first voucher's notices, read
    scheme.assess(scheme.elder, "severe", type="immediate")
    result = process_eligibility_events()
    assert result["processed"] == 1 and result["issued"] == []
    assert _voucher_notices(db_session) == []
