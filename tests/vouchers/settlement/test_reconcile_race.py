"""On PostgreSQL, with real commits: reconciliations running at once (the daily job, the
command line and the bureau's button) queue each finding once."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from eldercare.db import db
from eldercare.demo import build_demo
from eldercare.timeutil import local_today
from vouchers.settlement.models import ReconciliationRun, SettlementException
from vouchers.settlement.reconcile import reconcile

pytestmark = pytest.mark.postgres


def _reconcile(app):
    with app.app_context():
        try:
            run = reconcile.reconcile_month(local_today())
            db.session.commit()
            return run.ok
        finally:
            db.session.remove()


def test_reconciliations_at_once_queue_a_finding_once(private_app):
    with private_app.app_context():
        build_demo()
        db.session.commit()
        connection = db.session.connection()
        connection.exec_driver_sql("SET session_replication_role = replica")
        connection.exec_driver_sql(
            "UPDATE ledger_balances SET balance_fen = balance_fen + 1 WHERE shard = 0 AND "
            "account_id = (SELECT id FROM ledger_accounts WHERE code = 'pool:available')"
        )
        connection.exec_driver_sql("SET session_replication_role = DEFAULT")
        db.session.commit()
        # The demo reconciles its settled month itself: count only the runs made here.
        before = db.session.scalar(sa.select(sa.func.count()).select_from(ReconciliationRun))
        db.session.remove()
    with ThreadPoolExecutor(max_workers=4) as threads:
        results = list(threads.map(lambda _: _reconcile(private_app), range(4)))
    assert results == [False] * 4
    with private_app.app_context():
        rows = db.session.scalars(
            sa.select(SettlementException).where(SettlementException.kind == "identity.total")
        ).all()
        runs = db.session.scalar(sa.select(sa.func.count()).select_from(ReconciliationRun))
        db.session.remove()
    assert [r.status for r in rows] == ["open"] and runs == before + 4
