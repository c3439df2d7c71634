"""On PostgreSQL, with real commits from threads: two settlement runs of one month at once,
and reversals racing a run. Each redemption ends in exactly one line, or reversed and in
none, never both."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from eldercare.accounts import User
from eldercare.db import db
from tests.vouchers.settlement.conftest import settle_day
from tests.vouchers.test_redemption_race import _attempt, _world
from vouchers.models import Redemption, Voucher
from vouchers.pool import ledger
from vouchers.redemption import steps as redemption
from vouchers.settlement.models import Statement, StatementLine
from vouchers.settlement.statements import approval
from vouchers.settlement.statements.run import run_settlement

pytestmark = pytest.mark.postgres

REDEMPTIONS = 8


def _redeem(app, n, prefix="race"):
    voucher_id, staff_id, meal_id = _world(app)
    results = [_attempt(app, voucher_id, staff_id, meal_id, f"{prefix}-{i}", 100) for i in range(n)]
    assert results == ["redeemed"] * n
    with app.app_context():
        month = db.session.get(Voucher, voucher_id).month
        ids = list(
            db.session.scalars(
                sa.select(Redemption.id).where(Redemption.scan_digest.like(f"{prefix}-%"))
            )
        )
        db.session.remove()
    return month, ids


def _settle(app, month, barrier):
    with app.app_context():
        try:
            barrier.wait()
            report = run_settlement(month, today=settle_day(month))
            db.session.commit()
            return report
        finally:
            db.session.remove()


def _consistent(app):
    """Every statement's totals equal its lines; one open statement per provider-month."""
    with app.app_context():
        totals = (
            sa.select(
                StatementLine.statement_id.label("sid"),
                sa.func.count().label("n"),
                sa.func.sum(StatementLine.subsidy_fen).label("s"),
            )
            .group_by(StatementLine.statement_id)
            .subquery()
        )
        wrong = db.session.scalars(
            sa.select(Statement.id)
            .outerjoin(totals, totals.c.sid == Statement.id)
            .where(
                sa.or_(
                    Statement.line_count != sa.func.coalesce(totals.c.n, 0),
                    Statement.subsidy_fen != sa.func.coalesce(totals.c.s, 0),
                )
            )
        ).all()
        ok = ledger.verify_ledger().ok
        db.session.remove()
        return wrong, ok


def test_two_runs_at_once_settle_each_redemption_once(private_app):
    month, ids = _redeem(private_app, REDEMPTIONS)
    barrier = threading.Barrier(2)
    with ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(lambda _: _settle(private_app, month, barrier), range(2)))
    with private_app.app_context():
        lines = db.session.scalars(
            sa.select(StatementLine.redemption_id).where(StatementLine.redemption_id.in_(ids))
        ).all()
        # This run's lines only: the demo city of ``private_app`` has a settled month too.
        settled = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(StatementLine)
            .join(Statement, Statement.id == StatementLine.statement_id)
            .where(Statement.month == month)
        )
        open_per_provider = db.session.execute(
            sa.select(Statement.provider_id, sa.func.count())
            .where(Statement.status == "prepared")
            .group_by(Statement.provider_id)
        ).all()
        db.session.remove()
    assert sorted(lines) == sorted(ids)  # each once (and the key forbids twice)
    assert sum(r["lines_added"] for r in reports) == settled  # the second added nothing new
    assert sorted(r["lines_added"] for r in reports)[0] == 0
    assert all(n == 1 for _, n in open_per_provider)
    assert _consistent(private_app) == ([], True)


def _reverse_all(app, ids, barrier):
    with app.app_context():
        try:
            approver = db.session.scalar(sa.select(User).where(User.username == "bureau.approver"))
            barrier.wait()
            for rid in ids:
                r = db.session.get(Redemption, rid)
                redemption.reverse(r, actor=approver, reason="race")
                db.session.commit()
            return "reversed"
        finally:
            db.session.remove()


def test_reversals_racing_a_run_are_in_a_line_or_reversed_never_both(private_app):
    month, ids = _redeem(private_app, REDEMPTIONS)
    undo = ids[::2]
    barrier = threading.Barrier(2)
    with ThreadPoolExecutor(2) as pool:
        reversing = pool.submit(_reverse_all, private_app, undo, barrier)
        settling = pool.submit(_settle, private_app, month, barrier)
        assert reversing.result() == "reversed"
        settling.result()
    with private_app.app_context():
        rows = db.session.execute(
            sa.select(Redemption.id, Redemption.status, StatementLine.statement_id)
            .outerjoin(StatementLine, StatementLine.redemption_id == Redemption.id)
            .where(Redemption.id.in_(ids))
        ).all()
        db.session.remove()
    for rid, status, statement_id in rows:
        if rid in undo:
            assert (status, statement_id) == ("reversed", None)
        else:
            assert status == "redeemed" and statement_id is not None
    assert _consistent(private_app) == ([], True)


def _approve(app, statement_id, username, barrier):
    from eldercare.errors import Conflict

    with app.app_context():
        try:
            user = db.session.scalar(sa.select(User).where(User.username == username))
            statement = db.session.get(Statement, statement_id)
            barrier.wait()
            approval.approve(statement, actor=user)
            db.session.commit()
            return "approved"
        except Conflict:
            db.session.rollback()
            return "refused"
        finally:
            db.session.remove()


def test_two_approvers_at_once_approve_once(private_app):
    from eldercare.accounts import UserRole
    from vouchers.models import JournalEntry

    month, _ = _redeem(private_app, 2)
    with private_app.app_context():
        officer = db.session.scalar(sa.select(User).where(User.username == "bureau.officer"))
        run_settlement(month, actor=officer, today=settle_day(month))
        second = User(username="race.approver", display_name="第二审批人")
        second.set_password("race-approver-pass-1")
        second.role_rows = [UserRole(role="bureau_approver")]
        db.session.add(second)
        db.session.commit()
        statement_id = db.session.scalar(
            sa.select(Statement.id).where(Statement.status == "prepared").limit(1)
        )
        db.session.remove()
    barrier = threading.Barrier(2)
    with ThreadPoolExecutor(2) as pool:
        results = list(
            pool.map(
                lambda name: _approve(private_app, statement_id, name, barrier),
                ["bureau.approver", "race.approver"],
            )
        )
    assert sorted(results) == ["approved", "refused"]
    with private_app.app_context():
        entries = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(JournalEntry)
            .where(JournalEntry.kind == "settle", JournalEntry.cause_id == str(statement_id))
        )
        assert db.session.get(Statement, statement_id).status == "approved"
        db.session.remove()
    assert entries == 1
    assert _consistent(private_app) == ([], True)


def test_a_run_waits_for_an_approval_in_progress_and_adds_to_a_new_statement(private_app):
    """The approval has locked the statement and is hashing it; the run of the month must
    not add a line to it meanwhile (the line would be in an approved statement, outside its
    totals and its hash): it waits, then puts the new redemption in statement 2."""
    from tests.vouchers.interleave import Interleaving, Pause
    from vouchers.settlement.statements import hashing

    month, first = _redeem(private_app, 1, "before")
    with private_app.app_context():
        officer = db.session.scalar(sa.select(User).where(User.username == "bureau.officer"))
        run_settlement(month, actor=officer, today=settle_day(month))
        db.session.commit()
        statement_id = db.session.scalar(
            sa.select(StatementLine.statement_id).where(StatementLine.redemption_id == first[0])
        )
        db.session.remove()
    _, late = _redeem(private_app, 1, "late")

    def approve():
        user = db.session.scalar(sa.select(User).where(User.username == "bureau.approver"))
        approval.approve(db.session.get(Statement, statement_id), actor=user)

    locked = Pause("after", "SELECT statements", contains="FOR UPDATE")
    results = Interleaving(private_app, {"approve": locked}).run(
        approve=approve, run=lambda: run_settlement(month, today=settle_day(month))
    )
    errors = {name: repr(r) for name, r in results.items() if isinstance(r, Exception)}
    assert errors == {}, errors
    with private_app.app_context():
        approved = db.session.get(Statement, statement_id)
        assert approved.status == "approved"
        assert approved.lines_hash == hashing.statement_hash(approved)
        line = db.session.get(StatementLine, late[0])
        assert line is not None and line.statement_id != statement_id
        assert db.session.get(Statement, line.statement_id).seq == approved.seq + 1
        db.session.remove()
    assert _consistent(private_app) == ([], True)
