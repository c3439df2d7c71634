"""Issue 15's "done when", on the demo: with the anomaly rules on (as migration 0024 ships
them), seeded redemptions of the settled month trip rules, the officer has cleared one and
rejected one, and the month's settlement left the ones still held out of its statements; the
demo holds a year of settled months for the bureau's charts and reports."""

from __future__ import annotations

import sqlalchemy as sa

from eldercare.timeutil import local_today
from vouchers.integrity.models import AnomalyRule, RedemptionFlag
from vouchers.models import Redemption
from vouchers.settlement.demo import HISTORY_MONTHS, demo_months
from vouchers.settlement.models import Statement, StatementLine


def _demo_flags(db_session, month):
    return db_session.execute(
        sa.select(RedemptionFlag, Redemption)
        .join(Redemption, Redemption.id == RedemptionFlag.redemption_id)
        .where(Redemption.scan_digest.like(f"anomaly-demo-{month:%Y-%m}-%"))
        .order_by(RedemptionFlag.id)
    ).all()


def test_the_demo_trips_rules_decides_two_and_settles_without_the_held(app, db_session):
    db_session.execute(sa.update(AnomalyRule).values(enabled=True))
    # The 5% review sample draws at random: off here, so that only the seeded cases hold.
    db_session.execute(
        sa.update(AnomalyRule).where(AnomalyRule.code == "review_sample").values(enabled=False)
    )
    result = app.test_cli_runner().invoke(args=["demo"])
    assert result.exit_code == 0, result.output
    settled, _ready = demo_months(local_today())

    found = _demo_flags(db_session, settled)
    by_rule = {}
    for flag, redemption in found:
        by_rule.setdefault(flag.rule, []).append((flag, redemption))
    assert {"visit_length", "staff_overlap", "daily_frequency"} <= set(by_rule)

    (short,) = by_rule["visit_length"]
    assert short[0].status == "cleared" and short[0].reason
    # The second visit, flagged at its capture, was rejected (reversed); the first one no
    # longer overlaps anything that stands, so the run before settlement did not flag it.
    ((flag, rejected),) = by_rule["staff_overlap"]
    assert flag.status == "rejected" and rejected.status == "reversed"

    held = {r.id for f, r in found if f.status == "open"}
    assert held and all(r.status == "redeemed" for f, r in found if f.status == "open")
    lined = set(
        db_session.scalars(
            sa.select(StatementLine.redemption_id)
            .join(Statement, Statement.id == StatementLine.statement_id)
            .where(Statement.month == settled)
        )
    )
    assert not held & lined  # the held ones are in no statement
    assert short[1].id in lined  # the cleared one was settled
    assert rejected.id not in lined

    # A year of settled months before the ready one, for the charts and the monthly report.
    months = set(db_session.scalars(sa.select(Statement.month).where(Statement.status == "paid")))
    assert len(months) == HISTORY_MONTHS  # the pilot's policy is in force since 2025-07
