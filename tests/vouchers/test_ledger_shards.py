"""The ledger has no row that every redemption in the city must lock (issue 11).

The accounts every redemption moves (``vouchers:outstanding``, ``vouchers:held``,
``redeemed:unsettled``) keep their balance in shard rows; a posting takes a shard no other
open transaction holds. These tests prove it with real concurrent sessions on PostgreSQL,
prove that the books still balance (shards against lines) after concurrent and arbitrary
posts, and count the statements of one posting."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from eldercare import audit
from eldercare.db import db
from vouchers import ledger

DISTRICT = "district:210102:available"
HOT = ("vouchers:outstanding", "vouchers:held", "redeemed:unsettled")


def _fund(amount: int) -> None:
    """Money on vouchers:outstanding, the way issuance puts it there."""
    ledger.account(DISTRICT, create_name="Heping")
    ledger.post("topup", "funds", [("funding:central", -amount), ("pool:available", amount)])
    ledger.post("allocation", "alloc", [("pool:available", -amount), (DISTRICT, amount)])
    ledger.post("issue", "issue", [(DISTRICT, -amount), ("vouchers:outstanding", amount)])


def _hold(redemption_id: int, amount: int = 100):
    """A redemption-like entry: subsidy moved from outstanding to held."""
    return ledger.post(
        "hold",
        f"hold {redemption_id}",
        [("vouchers:outstanding", -amount), ("vouchers:held", amount)],
        cause=("redemptions", redemption_id),
    )


def _lines_equal_balances() -> dict:
    """Each account's balance against the sum of its lines: {} when they all agree."""
    lines = dict(
        db.session.execute(
            sa.text(
                "SELECT a.code, COALESCE(SUM(l.amount_fen), 0) FROM ledger_accounts a "
                "LEFT JOIN journal_lines l ON l.account_id = a.id GROUP BY a.code"
            )
        ).all()
    )
    balances = ledger.balances()
    return {
        code: (balances.get(code, 0), int(total))
        for code, total in lines.items()
        if balances.get(code, 0) != total
    }


@pytest.mark.postgres
def test_a_second_redemption_does_not_wait_for_the_first_ones_open_transaction(
    private_app, monkeypatch
):
    """Session A holds for one redemption and keeps its transaction open; session B holds for
    another (another voucher) with a short lock_timeout. Both move vouchers:outstanding and
    vouchers:held: with one row per account B would wait for A's commit and time out.

    The audit chain's global lock is taken out of the way here (branch i11-audit removes it
    from every path): what is tested is that the ledger's own rows do not serialise."""
    monkeypatch.setattr(audit, "lock_chain", lambda: None)
    with private_app.app_context():
        _fund(10_000)
        db.session.commit()
        db.session.remove()

    a_holds_its_locks, b_is_done = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def session_a():
        with private_app.app_context():
            try:
                _hold(1)
                a_holds_its_locks.set()
                b_is_done.wait(60)
                db.session.commit()
                outcome["a"] = "committed"
            except Exception as error:  # reported by the assertion below
                outcome["a"] = error
                a_holds_its_locks.set()
            finally:
                db.session.remove()

    thread = threading.Thread(target=session_a)
    thread.start()
    try:
        assert a_holds_its_locks.wait(60)
        with private_app.app_context():
            try:
                db.session.execute(sa.text("SET LOCAL lock_timeout = '1s'"))
                _hold(2)
                db.session.commit()
                outcome["b"] = "committed"
            except Exception as error:
                db.session.rollback()
                outcome["b"] = error
            finally:
                db.session.remove()
    finally:
        b_is_done.set()
        thread.join()
    assert outcome == {"a": "committed", "b": "committed"}, outcome
    with private_app.app_context():
        balances = ledger.balances()
        check = ledger.verify_ledger()
        db.session.remove()
    assert balances["vouchers:held"] == 200 and balances["vouchers:outstanding"] == 9_800
    assert check.ok, check
