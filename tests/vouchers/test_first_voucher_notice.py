"""Issue 14: a newly approved elder's first voucher is told to everyone who acts for the
elder (the elder's account and the family agents), through the notification outbox, whichever
run issued it; once per voucher and person, and not for a voucher the elder already held."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from eldercare import stored_text
from eldercare.accounts import User, accounts_acting_for
from eldercare.db import db
from eldercare.demo import build_demo
from eldercare.notifications import Notification
from eldercare.timeutil import local_today
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
    # Stored as a code with parameters, said in each reader's language (eldercare.stored_text).
    chinese = stored_text.render(notices[0].body, "zh_Hans_CN")
    english = stored_text.render(notices[0].body, "en")
    for body in (chinese, english):
        assert "¥" in body and f"{voucher.face_value_fen // 100:,}" in body
        assert f"{voucher.month:%Y-%m}" in body
    assert "消费券已发放" in chinese and "has been issued" not in chinese
    assert "has been issued" in english and "消费券" not in english
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


@pytest.mark.postgres
def test_the_feed_and_the_monthly_catch_up_at_once_tell_each_family_once(private_app):
    """The scheduler runs both every few minutes, in threads of its own: whichever issues the
    demo's newly approved elders' vouchers, both runs succeed and every person who acts for
    an elder is told once of that elder's voucher."""
    with private_app.app_context():
        build_demo()  # approvals not yet read by the feed
        db.session.commit()
        db.session.remove()
    start = threading.Barrier(2)

    def run(work):
        with private_app.app_context():
            try:
                start.wait()
                work()
                db.session.commit()
            finally:
                db.session.remove()

    with ThreadPoolExecutor(2) as threads:
        done = [
            threads.submit(run, process_eligibility_events),
            threads.submit(run, lambda: issue_monthly(month_of(local_today()))),
        ]
        for future in done:
            future.result()  # neither run failed
    with private_app.app_context():
        run_again = process_eligibility_events()  # nothing left to tell
        vouchers = db.session.scalars(
            sa.select(Voucher).where(Voucher.month == month_of(local_today()))
        ).all()
        expected = {
            f"voucher-issued:{voucher.id}:{user.id}"
            for voucher in vouchers
            for user in accounts_acting_for(voucher.resident_id)
        }
        keys = [n.dedupe_key for n in _voucher_notices(db.session)]
        wang = db.session.scalar(sa.select(User).where(User.username == "family.zhang"))
        assert run_again["processed"] == 0
        assert len(vouchers) >= 2 and sorted(keys) == sorted(expected)
        assert any(key.endswith(f":{wang.id}") for key in keys)  # the son is told
        db.session.rollback()
        db.session.remove()
