"""Two officers deciding two flags of one redemption at the same moment, on PostgreSQL with
real transactions: both lock the redemption's flags in id order first, so they queue instead
of deadlocking; the redemption is reversed once and every flag ends decided once."""

import pytest
import sqlalchemy as sa

from eldercare.accounts import User
from eldercare.audit import AuditLog
from eldercare.db import db
from eldercare.demo import build_demo
from eldercare.errors import Conflict
from tests.vouchers.interleave import Interleaving, Pause, set_deadlock_timeout
from vouchers.integrity import flags
from vouchers.integrity.models import RedemptionFlag
from vouchers.models import Redemption
from vouchers.pool import ledger

pytestmark = pytest.mark.postgres

# The first decider holds the redemption's flags (locked, nothing decided yet).
HOLDING = Pause("after", "SELECT redemption_flags.id", contains="FOR UPDATE")
# The second asks for the same locks once the first holds them.
ASKING = Pause("before", "SELECT redemption_flags.id", contains="FOR UPDATE")


def _user(name: str) -> User:
    return db.session.scalar(sa.select(User).where(User.username == name))


@pytest.fixture
def two_flags(private_app):
    """The demo city; elder.wang's lunch flagged by two rules."""
    set_deadlock_timeout(private_app)
    with private_app.app_context():
        build_demo()
        lunch = db.session.scalar(
            sa.select(Redemption).where(
                Redemption.scan_digest.like("demo-%"), Redemption.status == "redeemed"
            )
        )
        ids = [
            flags.raise_flag(lunch, rule=rule, evidence={}, actor=None).id
            for rule in ("high_value", "review_sample")
        ]
        db.session.commit()
        result = (private_app, ids, lunch.id)
        db.session.remove()
    return result


def _decide(action, flag_id, username, reason):
    def work():
        action(db.session.get(RedemptionFlag, flag_id), reason=reason, actor=_user(username))
        return "decided"

    return work


def _state(app, flag_ids, redemption_id):
    with app.app_context():
        found = [
            (f.status, f.reason)
            for f in (db.session.get(RedemptionFlag, flag_id) for flag_id in flag_ids)
        ]
        lunch = db.session.get(Redemption, redemption_id)
        reversals = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(AuditLog)
            .where(AuditLog.action == "redemption.reverse", AuditLog.object_id == str(lunch.id))
        )
        result = (found, lunch.status, reversals, ledger.verify_ledger().ok)
        db.session.remove()
    return result


def test_two_rejections_of_two_flags_reverse_once(two_flags):
    app, (first, second), lunch_id = two_flags
    results = Interleaving(app, {"a": HOLDING, "b": ASKING}).run(
        a=_decide(flags.reject, first, "bureau.officer", "未送餐"),
        b=_decide(flags.reject, second, "bureau.approver", "家属投诉"),
    )
    assert results["a"] == "decided"
    # The second found its flag already rejected with the first: told, nothing of its kept.
    assert isinstance(results["b"], Conflict), results
    found, status, reversals, balanced = _state(app, (first, second), lunch_id)
    assert found == [("rejected", "未送餐"), ("rejected", "未送餐")]
    assert (status, reversals, balanced) == ("reversed", 1, True)


def test_a_clear_of_one_flag_and_a_reject_of_the_other_at_once(two_flags):
    app, (first, second), lunch_id = two_flags
    results = Interleaving(app, {"clear": HOLDING, "reject": ASKING}).run(
        clear=_decide(flags.clear, second, "bureau.officer", "抽查无误"),
        reject=_decide(flags.reject, first, "bureau.approver", "未送餐"),
    )
    assert results == {"clear": "decided", "reject": "decided"}, results
    found, status, reversals, balanced = _state(app, (first, second), lunch_id)
    # The clearing came first and stands; the rejection then closed nothing else.
    assert found == [("rejected", "未送餐"), ("cleared", "抽查无误")]
    assert (status, reversals, balanced) == ("reversed", 1, True)
