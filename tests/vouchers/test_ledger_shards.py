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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eldercare.db import db
from vouchers.errors import InsufficientFunds
from vouchers.models import LedgerAccount, LedgerBalance
from vouchers.pool import ledger

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
    private_app,
):
    """Session A holds for one redemption and keeps its transaction open; session B holds for
    another (another voucher) with a short lock_timeout. Both move vouchers:outstanding and
    vouchers:held: with one row per account B would wait for A's commit and time out."""
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
    # (No voucher rows stand behind these entries: only the books themselves are checked.)
    assert check.unbalanced_entries == check.drifted_accounts == [] and check.total_fen == 0


@pytest.mark.postgres
def test_concurrent_postings_leave_every_balance_equal_to_its_lines(private_app):
    """Threads hold and release on their own vouchers (voucher row and entry in one
    transaction, one commit each) while another thread verifies the books again and again:
    every check sees them balanced, and afterwards each balance (its shards' sum) equals
    its lines."""
    from eldercare.demo import build_demo
    from vouchers.models import Voucher

    with private_app.app_context():
        build_demo()
        db.session.commit()
        vouchers = list(
            db.session.scalars(
                sa.select(Voucher.id)
                .where(Voucher.status == "active", Voucher.balance_fen >= 100)
                .order_by(Voucher.id)
            )
        )[:4]
        db.session.remove()
    assert len(vouchers) >= 2
    rounds = 25
    errors: list[BaseException] = []
    checks: list[ledger.LedgerCheck] = []
    posting_done = threading.Event()

    def move(voucher_id: int, n: int, amount: int, kind: str, to: str, away: str):
        taken = db.session.execute(
            sa.update(Voucher)
            .where(Voucher.id == voucher_id, Voucher.balance_fen >= amount)
            .values(balance_fen=Voucher.balance_fen - amount, held_fen=Voucher.held_fen + amount)
        ).rowcount
        assert taken == 1
        ledger.post(
            kind,
            f"{kind} {n}",
            [(away, -abs(amount)), (to, abs(amount))],
            cause=("redemptions", voucher_id * 1000 + n),
        )

    def poster(voucher_id: int):
        with private_app.app_context():
            try:
                for n in range(rounds):
                    move(voucher_id, n, 7, "hold", "vouchers:held", "vouchers:outstanding")
                    db.session.commit()
                    move(voucher_id, n, -7, "release", "vouchers:outstanding", "vouchers:held")
                    db.session.commit()
                move(voucher_id, rounds, 5, "hold", "vouchers:held", "vouchers:outstanding")
                db.session.commit()
            except BaseException as error:
                errors.append(error)
                db.session.rollback()
            finally:
                db.session.remove()

    def verifier():
        with private_app.app_context():
            try:
                while not posting_done.is_set():
                    checks.append(ledger.verify_ledger())
                    db.session.rollback()
            except BaseException as error:
                errors.append(error)
            finally:
                db.session.remove()

    posters = [threading.Thread(target=poster, args=(v,)) for v in vouchers]
    checking = threading.Thread(target=verifier)
    checking.start()
    for thread in posters:
        thread.start()
    for thread in posters:
        thread.join()
    posting_done.set()
    checking.join()
    assert errors == []
    assert checks and all(c.ok for c in checks), [c for c in checks if not c.ok][:1]
    with private_app.app_context():
        assert _lines_equal_balances() == {}
        check = ledger.verify_ledger()
        held = ledger.balances()["vouchers:held"]
        db.session.remove()
    assert check.ok, check
    assert held == 5 * len(vouchers)


# --- any sequence of posts -----------------------------------------------------------------

ACCOUNTS = ("funding:central", "pool:available", DISTRICT, *HOT)
GUARDED = ("pool:available", DISTRICT)  # one shard each, may not go negative


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    posts=st.lists(
        st.tuples(
            st.sampled_from(ACCOUNTS),
            st.sampled_from(ACCOUNTS),
            st.integers(min_value=1, max_value=5_000),
            st.integers(min_value=0, max_value=10_000),  # the cause: which shard it prefers
        ),
        max_size=25,
    )
)
def test_any_sequence_of_posts_keeps_shards_equal_to_lines(app_ctx, db_session, posts):
    """Moves between any two accounts, sharded or not: each account's shards sum to its
    lines, a guarded account never goes below zero (the posting that would is refused whole
    and changes nothing), and no shard of a guarded account is ever below zero."""
    savepoint = db_session.begin_nested()
    try:
        ledger.account(DISTRICT, create_name="Heping")
        start = ledger.balances()
        model = {code: start.get(code, 0) for code in ACCOUNTS}
        for source, target, amount, cause in posts:
            if source == target:
                continue
            refused = source in GUARDED and model[source] < amount
            try:
                with db_session.begin_nested():
                    ledger.post(
                        "allocation",
                        "move",
                        [(source, -amount), (target, amount)],
                        cause=("test", cause),
                    )
            except InsufficientFunds:
                assert refused
                continue
            assert not refused
            model[source] -= amount
            model[target] += amount
        after = ledger.balances()
        assert {code: after[code] for code in ACCOUNTS} == model
        assert _lines_equal_balances() == {}
        assert all(model[code] >= 0 for code in GUARDED)
        negative_guarded_rows = db_session.scalar(
            sa.select(sa.func.count())
            .select_from(LedgerBalance)
            .where(~LedgerBalance.may_go_negative, LedgerBalance.balance_fen < 0)
        )
        assert negative_guarded_rows == 0
        check = ledger.verify_ledger()
        assert check.unbalanced_entries == [] and check.drifted_accounts == []
        assert check.total_fen == 0
    finally:
        savepoint.rollback()
        db_session.expire_all()


# --- statements ----------------------------------------------------------------------------


class _Statements:
    def __init__(self, engine):
        self.engine, self.seen = engine, []

    def __enter__(self):
        sa.event.listen(self.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *exc):
        sa.event.remove(self.engine, "before_cursor_execute", self._seen)

    def _seen(self, conn, cursor, statement, parameters, context, executemany):
        self.seen.append(" ".join(statement.split()[:3]).upper())


def _set_shards(db_session, code: str, shards: int) -> None:
    account = db_session.scalar(sa.select(LedgerAccount).where(LedgerAccount.code == code))
    for shard in range(account.shards, shards):
        db_session.add(LedgerBalance(account_id=account.id, shard=shard, may_go_negative=True))
    account.shards = shards
    db_session.flush()


@pytest.mark.parametrize("shards", [32, 200])
def test_a_posting_costs_the_same_statements_whatever_the_number_of_shards(
    app_ctx, db_session, shards
):
    """One statement reads the accounts, one writes the entry, one UPDATE per line, one
    writes the lines. Sharded or not, and however many shards: an N+1 over shards cannot
    come back unseen."""
    _fund(10_000)
    _set_shards(db_session, "vouchers:outstanding", shards)
    _set_shards(db_session, "vouchers:held", shards)
    engine = db_session.get_bind()
    with _Statements(engine) as plain:
        ledger.post("topup", "funds", [("funding:central", -100), ("pool:available", 100)])
    with _Statements(engine) as sharded:
        _hold(7)
    with _Statements(engine) as second:
        _hold(8)  # same transaction: it keeps the shards it holds
    ledger_statements = [s for s in plain.seen if "ADVISORY" not in s]
    assert len(ledger_statements) == 5, plain.seen
    assert len(sharded.seen) == len(plain.seen) == len(second.seen), (plain.seen, sharded.seen)
    assert sum(s.startswith("UPDATE LEDGER_BALANCES") for s in sharded.seen) == 2
    assert ledger.balances()["vouchers:held"] == 200
    assert _lines_equal_balances() == {}
