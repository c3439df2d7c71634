"""Two officers deciding one flag at the same moment, on PostgreSQL with real transactions:
one decision is taken, the other is told it was decided (Conflict) and changes nothing."""

import pytest
import sqlalchemy as sa

from eldercare.accounts import User
from eldercare.db import db
from eldercare.demo import build_demo
from eldercare.errors import Conflict
from tests.vouchers.interleave import Interleaving, Pause
from vouchers.integrity import flags
from vouchers.integrity.models import RedemptionFlag
from vouchers.models import Redemption
from vouchers.pool import ledger

pytestmark = pytest.mark.postgres

# The first decider holds the flag's row (its conditional UPDATE done, not yet committed).
AFTER_DECIDING = Pause("after", "UPDATE redemption_flags")
# The second stops before it locks the redemption's flags (``flags._lock_siblings``), so it
# asks for them only once the first holds them. (Stopping before its UPDATE was too late:
# a second that ran ahead took the locks first, and the first, waiting for them, let it go
# on: the second decided and the first was told someone else had, now and then under load.)
ABOUT_TO_DECIDE = Pause("before", "SELECT redemption_flags.id", contains="FOR UPDATE")


def _user(name: str) -> User:
    return db.session.scalar(sa.select(User).where(User.username == name))


@pytest.fixture
def flagged(private_app):
    """The demo city; elder.wang's lunch (redeemed by the demo) held out of settlement."""
    with private_app.app_context():
        build_demo()
        lunch = db.session.scalar(
            sa.select(Redemption).where(
                Redemption.scan_digest.like("demo-%"), Redemption.status == "redeemed"
            )
        )
        flag = flags.raise_flag(
            lunch,
            rule=flags.RULE_BUREAU,
            evidence={"reason": "家属投诉"},
            actor=_user("bureau.officer"),
        )
        db.session.commit()
        ids = (flag.id, lunch.id)
        db.session.remove()
    return private_app, ids


def _decide(action, flag_id, username, reason):
    def work():
        flag = db.session.get(RedemptionFlag, flag_id)
        action(flag, reason=reason, actor=_user(username))
        return "decided"

    return work


def _state(app, flag_id, redemption_id):
    with app.app_context():
        flag = db.session.get(RedemptionFlag, flag_id)
        lunch = db.session.get(Redemption, redemption_id)
        result = (flag.status, flag.reason, lunch.status, ledger.verify_ledger().ok)
        db.session.remove()
    return result


def test_a_clear_and_a_reject_at_once_take_the_first_only(flagged):
    app, (flag_id, lunch_id) = flagged
    results = Interleaving(app, {"clear": AFTER_DECIDING, "reject": ABOUT_TO_DECIDE}).run(
        clear=_decide(flags.clear, flag_id, "bureau.officer", "核实无误"),
        reject=_decide(flags.reject, flag_id, "bureau.approver", "未提供服务"),
    )
    assert results["clear"] == "decided"
    assert isinstance(results["reject"], Conflict), results
    # The rejection changed nothing: no reversal, the clearing officer's reason stands.
    assert _state(app, flag_id, lunch_id) == ("cleared", "核实无误", "redeemed", True)


def test_two_rejections_at_once_reverse_once(flagged):
    app, (flag_id, lunch_id) = flagged
    results = Interleaving(app, {"first": AFTER_DECIDING, "second": ABOUT_TO_DECIDE}).run(
        first=_decide(flags.reject, flag_id, "bureau.officer", "未提供服务"),
        second=_decide(flags.reject, flag_id, "bureau.approver", "重复"),
    )
    assert results["first"] == "decided"
    assert isinstance(results["second"], Conflict), results
    assert _state(app, flag_id, lunch_id) == ("rejected", "未提供服务", "reversed", True)
    with app.app_context():
        reversals = db.session.scalar(
            sa.text(
                "SELECT COUNT(*) FROM journal_entries WHERE kind = 'reverse' "
                "AND cause_type = 'redemptions' AND cause_id = :id"
            ),
            {"id": str(lunch_id)},
        )
        db.session.remove()
    assert reversals == 1
