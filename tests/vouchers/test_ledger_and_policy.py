from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eldercare.db import db
from eldercare.errors import Conflict, InvalidInput
from eldercare.timeutil import local_today
from vouchers.errors import InsufficientFunds
from vouchers.models import JournalEntry, LedgerAccount, LedgerBalance, VoucherPolicy
from vouchers.pool import funding as pool
from vouchers.pool import ledger
from vouchers.pool.policy import add_version, policy_on

CATEGORIES = {"meal_help", "bathing", "cleaning", "long_term_stay", "day_care"}


@pytest.fixture
def bureau(app_ctx, factory):
    heping = factory.district("210102", "和平区")
    shenhe = factory.district("210103", "沈河区")
    approver = factory.user("approver", roles=["bureau_approver"])
    return heping, shenhe, approver


def _entries(session):
    return session.scalar(sa.select(sa.func.count()).select_from(JournalEntry))


def test_top_up_keeps_central_and_local_apart_and_books_balance(bureau, db_session):
    _, _, approver = bureau
    pool.top_up(4_795_200_000, source="central", memo="中央资金 2025-1", actor=approver)
    pool.top_up(532_800_000, source="local", memo="市本级配套", actor=approver)
    balances = ledger.balances()
    assert balances["funding:central"] == -4_795_200_000
    assert balances["funding:local"] == -532_800_000
    assert balances["pool:available"] == 5_328_000_000  # 53.28 million yuan
    assert ledger.verify_ledger().ok


def test_allocation_beyond_the_pool_is_refused_and_changes_nothing(bureau, db_session):
    heping, _, approver = bureau
    pool.top_up(100_000, source="central", memo="m", actor=approver)
    pool.allocate(heping, 60_000, memo="first", actor=approver)
    entries = _entries(db_session)
    with pytest.raises(InsufficientFunds), db_session.begin_nested():
        pool.allocate(heping, 50_000, memo="too much", actor=approver)
    assert ledger.balances()["pool:available"] == 40_000
    assert ledger.balances()["district:210102:available"] == 60_000
    assert _entries(db_session) == entries
    pool.allocate(heping, -10_000, memo="take back", actor=approver)
    assert ledger.balances()["pool:available"] == 50_000


@pytest.mark.parametrize("amount", [0, -1, 1.5, "100", True, 10**13])
def test_bad_amounts_are_refused(bureau, amount):
    _, _, approver = bureau
    with pytest.raises(InvalidInput):
        pool.top_up(amount, source="central", memo="m", actor=approver)


def test_unbalanced_entries_cannot_be_written(bureau):
    with pytest.raises(ValueError, match="unbalanced"):
        ledger.post("topup", "x", [("funding:central", -10), ("pool:available", 9)])
    with pytest.raises(ValueError, match="whole fen"):
        ledger.post("topup", "x", [("funding:central", "-10"), ("pool:available", 10)])
    with pytest.raises(ValueError, match="whole fen"):
        ledger.post("topup", "x", [("funding:central", -1.5), ("pool:available", 1.5)])


def _shards_of(code: str):
    return sa.select(LedgerAccount.id).where(LedgerAccount.code == code).scalar_subquery()


def test_the_database_refuses_a_negative_balance(bureau, db_session):
    with pytest.raises(sa.exc.IntegrityError), db_session.begin_nested():
        db_session.execute(
            sa.update(LedgerBalance)
            .where(LedgerBalance.account_id == _shards_of("pool:available"))
            .values(balance_fen=-1)
        )


def test_a_shard_of_an_account_every_redemption_moves_may_go_negative(bureau, db_session):
    """Money held on one shard may be captured from another: the voucher rows guard it, and
    verify_ledger proves the account's sum (never below zero) against them."""
    with db_session.begin_nested():
        db_session.execute(
            sa.update(LedgerBalance)
            .where(
                LedgerBalance.account_id == _shards_of("vouchers:held"), LedgerBalance.shard == 0
            )
            .values(balance_fen=-1)
        )
    check = ledger.verify_ledger()
    assert check.negative_accounts == ["vouchers:held"] and not check.ok


def test_verify_names_an_account_whose_balance_drifted(bureau, db_session):
    _, _, approver = bureau
    pool.top_up(1000, source="local", memo="m", actor=approver)
    db_session.execute(
        sa.update(LedgerBalance)
        .where(LedgerBalance.account_id == _shards_of("pool:available"))
        .values(balance_fen=1001)
    )
    check = ledger.verify_ledger()
    assert not check.ok and check.drifted_accounts == ["pool:available"]


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["topup", "allocate", "take_back"]),
            st.integers(1, 50_000),
            st.booleans(),
        ),
        max_size=25,
    )
)
def test_any_sequence_of_pool_movements_balances_to_the_fen(bureau, db_session, steps):
    heping, shenhe, approver = bureau
    savepoint = db_session.begin_nested()
    try:
        funded = 0
        for action, amount, to_heping in steps:
            district = heping if to_heping else shenhe
            try:
                with db_session.begin_nested():
                    if action == "topup":
                        pool.top_up(amount, source="central", memo="m", actor=approver)
                        funded += amount
                    elif action == "allocate":
                        pool.allocate(district, amount, memo="m", actor=approver)
                    else:
                        pool.allocate(district, -amount, memo="m", actor=approver)
            except InsufficientFunds:
                pass  # refused: the savepoint took back the whole attempt
            balances = ledger.balances()
            assert all(v >= 0 for k, v in balances.items() if not k.startswith("funding:"))
        check = ledger.verify_ledger()
        assert check.ok, check
        held = sum(v for k, v in ledger.balances().items() if not k.startswith("funding:"))
        assert held == funded
    finally:
        savepoint.rollback()


def test_pilot_policy_is_seeded_as_data(app_ctx, db_session):
    home = policy_on("home_community", date(2025, 7, 1))
    assert (home.monthly_cap_fen, home.ratio_bp) == (50_000, 4000)
    assert "meal_help" in home.category_set and "long_term_stay" not in home.category_set
    institutional = policy_on("institutional", date(2025, 12, 31))
    assert (institutional.monthly_cap_fen, institutional.ratio_bp) == (80_000, 4000)


def test_a_new_version_changes_the_rule_on_its_date_without_code(bureau, db_session):
    _, _, approver = bureau
    start = local_today() + timedelta(days=10)
    add_version(
        "home_community",
        effective_from=start,
        monthly_cap_fen=50_000,
        ratio_bp=5000,
        in_scope_categories=["meal_help", "bathing", "cleaning"],
        eligible_levels=["moderate", "severe", "complete"],
        evv_max_distance_m=500,
        reversal_window_days=7,
        note="2026 national rules",
        actor=approver,
        known_categories=CATEGORIES,
    )
    assert policy_on("home_community", start - timedelta(days=1)).ratio_bp == 4000
    assert policy_on("home_community", start).ratio_bp == 5000
    with pytest.raises(Conflict):
        add_version(
            "home_community",
            effective_from=start,
            monthly_cap_fen=1,
            ratio_bp=1,
            in_scope_categories=["meal_help"],
            eligible_levels=["severe"],
            evv_max_distance_m=1,
            reversal_window_days=0,
            note="dup",
            actor=approver,
            known_categories=CATEGORIES,
        )


@pytest.mark.parametrize(
    "change",
    [
        {"effective_from": date(2025, 1, 1)},
        {"ratio_bp": 0},
        {"ratio_bp": 10_001},
        {"monthly_cap_fen": -5},
        {"in_scope_categories": ["juggling"]},
        {"note": " "},
    ],
)
def test_bad_policy_versions_are_refused(bureau, db_session, change):
    _, _, approver = bureau
    args = (
        dict(
            effective_from=local_today() + timedelta(days=3),
            monthly_cap_fen=50_000,
            ratio_bp=5000,
            in_scope_categories=["meal_help"],
            eligible_levels=["moderate"],
            evv_max_distance_m=500,
            reversal_window_days=7,
            note="n",
            actor=approver,
            known_categories=CATEGORIES,
        )
        | change
    )
    count = db_session.scalar(sa.select(sa.func.count()).select_from(VoucherPolicy))
    with pytest.raises(InvalidInput):
        add_version("home_community", **args)
    assert db_session.scalar(sa.select(sa.func.count()).select_from(VoucherPolicy)) == count


@pytest.mark.postgres
def test_twenty_allocations_race_for_ten_shares_of_the_pool(private_app):
    from eldercare.account_service import create_user
    from eldercare.residents import District

    with private_app.app_context():
        district = District(code="210102", name_zh="和平区", name_en="Heping")
        db.session.add(district)
        approver = create_user(
            "racer", display_name="r", password="long-password-1", roles=["bureau_approver"]
        )
        db.session.flush()
        pool.top_up(10 * 5_000, source="central", memo="m", actor=approver)
        db.session.commit()
        district_id, approver_id = district.id, approver.id

    def allocate(_):
        from eldercare.accounts import User

        with private_app.app_context():
            try:
                pool.allocate(
                    db.session.get(District, district_id),
                    5_000,
                    memo="race",
                    actor=db.session.get(User, approver_id),
                )
                db.session.commit()
                return True
            except InsufficientFunds:
                db.session.rollback()
                return False
            finally:
                db.session.remove()

    with ThreadPoolExecutor(max_workers=20) as threads:
        results = list(threads.map(allocate, range(20)))
    with private_app.app_context():
        balances = ledger.balances()
        check = ledger.verify_ledger()
        db.session.remove()
    assert results.count(True) == 10
    assert balances["pool:available"] == 0
    assert balances["district:210102:available"] == 50_000
    assert check.ok
