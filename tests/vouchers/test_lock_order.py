"""One global lock order for money transactions (see ``vouchers.pool.ledger``): pairs of money
transactions that touch the same rows, run at the same moment on PostgreSQL, never deadlock
and leave the books and every sub-ledger balanced.

Each pair runs in two threads interleaved at their first ledger row lock (see
``tests/vouchers/interleave.py``): on code that locks in different orders the interleaving
is exactly the one that deadlocks."""

import pytest
import sqlalchemy as sa

from eldercare.accounts import User
from eldercare.db import db
from eldercare.demo import build_demo
from eldercare.timeutil import local_today
from marketplace import catalogue
from marketplace.providers import provider_of
from tests.vouchers.interleave import Interleaving, Pause, set_deadlock_timeout
from vouchers.errors import VoucherNotUsable
from vouchers.issuance import monthly as issuance
from vouchers.models import LedgerAccount, Redemption, Voucher
from vouchers.pool import ledger
from vouchers.redemption import payments
from vouchers.redemption import steps as redemption

pytestmark = pytest.mark.postgres

AT_FIRST_ACCOUNT = Pause("after", "UPDATE ledger_balances")
DISTRICT = "district:210102:available"


def _user(name: str) -> User:
    return db.session.scalar(sa.select(User).where(User.username == name))


def _meal(staff: User):
    return next(
        s for s in catalogue.services_of(provider_of(staff)) if s.category_code == "meal_help"
    )


def _priced(voucher: Voucher, digest: str) -> Redemption:
    """A check-in at the community station, priced: ready to hold."""
    staff = _user("provider.staff")
    r = redemption.check_in(
        voucher, scan_digest=digest, staff_user=staff, service_id=_meal(staff).id
    )
    redemption.set_price(r, price_fen=1500, staff_user=staff)
    return r


@pytest.fixture
def city(private_app):
    """The demo city on a private database: this month's vouchers issued, elder.wang's lunch
    redeemed. Returns the app and the ids of two vouchers of Heping elders."""
    set_deadlock_timeout(private_app)
    with private_app.app_context():
        build_demo()
        wang = _user("elder.wang")
        month = local_today().replace(day=1)
        vouchers = list(
            db.session.scalars(
                sa.select(Voucher)
                .where(Voucher.month == month, Voucher.status == "active")
                .order_by(Voucher.resident_id != wang.resident_id, Voucher.id)
            )
        )
        # A second voucher the station can take: the same kind and scope as elder.wang's.
        other = next(v for v in vouchers[1:] if v.kind == vouchers[0].kind)
        db.session.commit()
        ids = (vouchers[0].id, other.id)
        db.session.remove()
    return private_app, ids


def _assert_clean(results: dict, app) -> None:
    errors = {name: repr(r) for name, r in results.items() if isinstance(r, Exception)}
    assert errors == {}, errors
    with app.app_context():
        check = ledger.verify_ledger()
        db.session.remove()
    assert check.ok, check


def _redemption(digest_like: str) -> Redemption:
    return db.session.scalar(sa.select(Redemption).where(Redemption.scan_digest.like(digest_like)))


def test_hold_and_release_on_two_vouchers_do_not_deadlock(city):
    app, (wang_voucher, other_voucher) = city
    with app.app_context():
        _priced(db.session.get(Voucher, wang_voucher), "hold-me")
        to_release = _priced(db.session.get(Voucher, other_voucher), "release-me")
        redemption.hold(to_release, method="card")
        db.session.commit()
        db.session.remove()

    results = Interleaving(app, {"hold": AT_FIRST_ACCOUNT, "release": AT_FIRST_ACCOUNT}).run(
        hold=lambda: redemption.hold(_redemption("hold-me"), method="card"),
        release=lambda: redemption.release(_redemption("release-me"), reason="declined"),
    )
    _assert_clean(results, app)
    with app.app_context():
        assert _redemption("hold-me").status == "pending_payment"
        assert _redemption("release-me").status == "failed"
        db.session.remove()


def test_issue_and_expire_entries_do_not_deadlock(city):
    """The two entries move the same two accounts in opposite directions."""
    app, _ = city
    results = Interleaving(app, {"issue": AT_FIRST_ACCOUNT, "expire": AT_FIRST_ACCOUNT}).run(
        issue=lambda: ledger.post(
            "issue", "test issue", [(DISTRICT, -100), ("vouchers:outstanding", 100)]
        ),
        expire=lambda: ledger.post(
            "expire", "test expiry", [("vouchers:outstanding", -100), (DISTRICT, 100)]
        ),
    )
    errors = {name: repr(r) for name, r in results.items() if isinstance(r, Exception)}
    assert errors == {}, errors


def test_issuing_and_holding_do_not_deadlock(city):
    """Issuing next month's voucher reserves from the district into vouchers:outstanding
    while a payment holds from vouchers:outstanding."""
    app, (wang_voucher, other_voucher) = city
    with app.app_context():
        _priced(db.session.get(Voucher, other_voucher), "hold-me")
        resident_id = db.session.get(Voucher, wang_voucher).resident_id
        next_month = issuance.next_month(local_today().replace(day=1))
        db.session.commit()
        db.session.remove()

    results = Interleaving(app, {"issue": AT_FIRST_ACCOUNT, "hold": AT_FIRST_ACCOUNT}).run(
        issue=lambda: issuance.issue_for(resident_id, next_month, reason="manual"),
        hold=lambda: redemption.hold(_redemption("hold-me"), method="card"),
    )
    _assert_clean(results, app)
    with app.app_context():
        issued = db.session.scalar(
            sa.select(Voucher).where(
                Voucher.resident_id == resident_id, Voucher.month == next_month
            )
        )
        assert issued is not None and _redemption("hold-me").status == "pending_payment"
        db.session.remove()


def test_hold_and_capture_against_a_reversal_do_not_deadlock(city):
    app, (_, other_voucher) = city
    with app.app_context():
        _priced(db.session.get(Voucher, other_voucher), "cash-lunch")
        db.session.commit()
        approver_id = _user("bureau.approver").id
        staff_id = _user("provider.staff").id
        db.session.remove()

    def pay_cash():
        r = _redemption("cash-lunch")
        redemption.pay_cash(r, staff_user=db.session.get(User, staff_id))

    def reverse():
        r = _redemption("demo-%")  # elder.wang's lunch, redeemed by the demo
        redemption.reverse(r, actor=db.session.get(User, approver_id), reason="核查")

    results = Interleaving(app, {"pay": AT_FIRST_ACCOUNT, "reverse": AT_FIRST_ACCOUNT}).run(
        pay=pay_cash, reverse=reverse
    )
    _assert_clean(results, app)
    with app.app_context():
        assert _redemption("cash-lunch").status == "redeemed"
        assert _redemption("demo-%").status == "reversed"
        db.session.remove()


def test_a_late_charge_settled_under_the_redemption_lock_and_a_release_do_not_deadlock(city):
    """A path settling a succeeded card charge (webhook, poll, job) locks the redemption row
    to decide, then captures; the request whose attempt failed releases the same hold at the
    same moment. Both lock the redemption's row first (before the voucher and the accounts)."""
    app, (_, other_voucher) = city
    with app.app_context():
        held = _priced(db.session.get(Voucher, other_voucher), "late-charge")
        redemption.hold(held, method="card")
        db.session.commit()
        db.session.remove()

    def settle():
        r = _redemption("late-charge")
        payments._lock(r)  # what _settle_succeeded does before it decides
        return redemption.capture(r)

    def release():
        r = _redemption("late-charge")
        redemption.release(r, reason="declined", retry=True)

    locked_row = Pause("after", "SELECT redemptions", contains="FOR UPDATE")
    results = Interleaving(app, {"settle": locked_row}).run(settle=settle, release=release)
    _assert_clean(results, app)
    with app.app_context():
        # Whichever came first decided; the other found nothing left to do.
        assert _redemption("late-charge").status in ("redeemed", "checked_in")  # retry=True
        db.session.remove()


def test_an_expiry_batch_and_a_capture_in_that_month_do_not_deadlock(city):
    """The batch expires two vouchers of a month that has ended; a card payment on the
    second one, held before the month ended, succeeds at the same moment."""
    app, ids = city
    first, second = sorted(ids)  # the batch goes in id order: the payment is on the second
    with app.app_context():
        pending = _priced(db.session.get(Voucher, second), "late-card")
        redemption.hold(pending, method="card")
        ended = issuance.previous_month(local_today().replace(day=1))
        # The two vouchers belong to the month that has just ended (set up directly: issuing
        # for a past month is refused, rightly).
        db.session.execute(
            sa.update(Voucher).where(Voucher.id.in_([first, second])).values(month=ended)
        )
        db.session.commit()
        db.session.remove()

    results = Interleaving(app, {"expire": AT_FIRST_ACCOUNT, "capture": AT_FIRST_ACCOUNT}).run(
        expire=lambda: issuance.expire_month(ended),
        capture=lambda: redemption.capture(_redemption("late-card")),
    )
    _assert_clean(results, app)
    with app.app_context():
        statuses = db.session.scalars(
            sa.select(Voucher.status).where(Voucher.id.in_([first, second]))
        ).all()
        assert statuses == ["expired", "expired"]
        assert _redemption("late-card").status == "redeemed"
        assert db.session.get(Voucher, second).held_fen == 0
        db.session.remove()


def test_a_reversal_racing_a_death_revocation_sends_the_money_to_the_district(city):
    """The reversal has read the voucher; before it takes any lock, the elder's death revokes
    the voucher and commits. The subsidy must end in the district, never on
    the revoked voucher, where nobody could spend or expire it."""
    app, (wang_voucher, _) = city
    with app.app_context():
        voucher = db.session.get(Voucher, wang_voucher)
        lunch = _redemption("demo-%")
        subsidy, left = lunch.subsidy_fen, voucher.balance_fen
        district_before = ledger.balances()[DISTRICT]
        resident_id, month = voucher.resident_id, voucher.month
        approver_id = _user("bureau.approver").id
        db.session.remove()

    def reverse():
        lunch = _redemption("demo-%")
        assert lunch.voucher.status == "active"  # read before the revocation: stale after it
        redemption.reverse(lunch, actor=db.session.get(User, approver_id), reason="核查")

    # The reversal has read the voucher (active) and stops before its first lock; the
    # revocation runs and commits meanwhile; then the reversal writes.
    before_locking = Pause("before", "SELECT redemptions.id", contains="KEY UPDATE")
    results = Interleaving(app, {"reverse": before_locking}).run(
        reverse=reverse,
        revoke=lambda: issuance.revoke_for(resident_id, from_month=month, reason="death"),
    )
    _assert_clean(results, app)
    with app.app_context():
        voucher = db.session.get(Voucher, wang_voucher)
        assert (voucher.status, voucher.balance_fen, voucher.held_fen) == ("revoked", 0, 0)
        assert _redemption("demo-%").status == "reversed"
        assert ledger.balances()[DISTRICT] == district_before + left + subsidy
        db.session.remove()


def test_a_check_in_and_a_death_revocation_do_not_deadlock(city):
    """The check-in share-locks the voucher (and saving it locks the voucher row for its
    foreign key); the revocation holds the issuance lock and wants that row for update. The
    check-in locks nothing else that exists, so whichever goes first, the other either
    waits or, coming second, is refused because the voucher is revoked: never a deadlock."""
    app, (_, other_voucher) = city
    with app.app_context():
        voucher = db.session.get(Voucher, other_voucher)
        resident_id, month = voucher.resident_id, voucher.month
        staff_id = _user("provider.staff").id
        db.session.remove()

    def check_in():
        staff = db.session.get(User, staff_id)
        return redemption.check_in(
            db.session.get(Voucher, other_voucher),
            scan_digest="check-in-vs-death",
            staff_user=staff,
            service_id=_meal(staff).id,
        ).id

    pauses = {
        "check_in": Pause("after", "INSERT INTO redemptions"),
        # The revocation holds the issuance lock here and waits for the check-in's row.
        "revoke": Pause("before", "SELECT vouchers", contains="FOR UPDATE"),
    }
    results = Interleaving(app, pauses).run(
        check_in=check_in,
        revoke=lambda: issuance.revoke_for(resident_id, from_month=month, reason="death"),
    )
    if isinstance(results["check_in"], VoucherNotUsable):
        results.pop("check_in")  # came second: refused, as it should be
    _assert_clean(results, app)
    with app.app_context():
        assert db.session.get(Voucher, other_voucher).status == "revoked"
        db.session.remove()


def test_ledger_rows_are_locked_in_account_order_whatever_the_sign(app_ctx, db_session):
    """An expiry takes from vouchers:outstanding and adds to a district, whose code sorts
    first: the district row is updated first all the same."""
    codes = []

    def seen(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("UPDATE LEDGER_BALANCES"):
            codes.append(context.compiled_parameters[0]["account_id_1"])

    ledger.account(DISTRICT, create_name="Heping")
    ledger.post("topup", "t", [("funding:central", -500), ("pool:available", 500)])
    ledger.post("allocation", "a", [("pool:available", -500), (DISTRICT, 500)])
    ledger.post("issue", "i", [(DISTRICT, -300), ("vouchers:outstanding", 300)])
    engine = db_session.get_bind()
    ids = dict(db_session.execute(sa.select(LedgerAccount.id, LedgerAccount.code)).all())
    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        ledger.post("expire", "e", [("vouchers:outstanding", -300), (DISTRICT, 300)])
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)
    assert [ids[i] for i in codes] == [DISTRICT, "vouchers:outstanding"]


def test_an_expiry_batch_and_a_release_in_that_month_do_not_deadlock(city):
    """The batch expires two vouchers of a month that has ended; a card payment held on the
    second one before the month ended fails at the same moment, and its subsidy goes back to
    the district, whose account the batch moved for the first voucher. Without a lock every
    money transaction takes, only the batch locking both vouchers before any account keeps
    the two from waiting for each other."""
    app, ids = city
    first, second = sorted(ids)
    with app.app_context():
        pending = _priced(db.session.get(Voucher, second), "late-decline")
        redemption.hold(pending, method="card")
        ended = issuance.previous_month(local_today().replace(day=1))
        db.session.execute(
            sa.update(Voucher).where(Voucher.id.in_([first, second])).values(month=ended)
        )
        district_before = ledger.balances()[DISTRICT]
        db.session.commit()
        db.session.remove()

    results = Interleaving(app, {"expire": AT_FIRST_ACCOUNT, "release": AT_FIRST_ACCOUNT}).run(
        expire=lambda: issuance.expire_month(ended),
        release=lambda: redemption.release(_redemption("late-decline"), reason="declined"),
    )
    _assert_clean(results, app)
    with app.app_context():
        vouchers = [db.session.get(Voucher, i) for i in (first, second)]
        assert [v.status for v in vouchers] == ["expired", "expired"]
        assert _redemption("late-decline").status == "failed"
        assert vouchers[1].held_fen == 0
        assert ledger.balances()[DISTRICT] > district_before
        db.session.remove()


def test_a_feed_run_revoking_two_elders_and_a_release_do_not_deadlock(city):
    """One run of the eligibility feed handles the deaths of two elders; the second one's
    card payment fails at the same moment. The run must lock both vouchers before it moves
    money for the first death: the release holds the second voucher and wants
    vouchers:outstanding, which the first revocation moved."""
    from assessment.eligibility import record_death
    from eldercare.residents import Resident
    from vouchers.issuance.eligibility_feed import process_eligibility_events

    app, (wang_voucher, other_voucher) = city
    with app.app_context():
        process_eligibility_events()  # the demo's own events, out of the way
        held = _priced(db.session.get(Voucher, other_voucher), "dying-card")
        redemption.hold(held, method="card")
        for voucher_id in (wang_voucher, other_voucher):
            resident = db.session.get(Resident, db.session.get(Voucher, voucher_id).resident_id)
            record_death(resident, local_today(), today=local_today())
        db.session.commit()
        db.session.remove()

    # The feed has moved the first elder's money (its audit row comes after the accounts);
    # the release holds the second voucher.
    pauses = {
        "feed": Pause("after", "INSERT INTO audit_logs"),
        "release": Pause("after", "UPDATE vouchers"),
    }
    results = Interleaving(app, pauses).run(
        feed=process_eligibility_events,
        release=lambda: redemption.release(_redemption("dying-card"), reason="declined"),
    )
    _assert_clean(results, app)
    with app.app_context():
        statuses = [db.session.get(Voucher, i).status for i in (wang_voucher, other_voucher)]
        assert statuses == ["revoked", "revoked"]
        assert _redemption("dying-card").status == "failed"
        assert db.session.get(Voucher, other_voucher).held_fen == 0
        db.session.remove()


def test_two_check_ins_on_different_vouchers_do_not_wait_for_each_other(city):
    """A check-in keeps its transaction open (a slow phone); a check-in of another elder at
    the same station goes through at once. Before, both queued on the audit chain's lock."""
    app, (wang_voucher, other_voucher) = city
    with app.app_context():
        engine = db.engine
        staff_id = _user("provider.staff").id
        db.session.remove()
    from sqlalchemy.orm import Session

    from tests.test_audit import _as_session

    with app.app_context(), Session(engine) as slow, Session(engine) as quick:
        for session, voucher_id, digest in (
            (slow, wang_voucher, "slow-phone"),
            (quick, other_voucher, "quick-phone"),
        ):
            with _as_session(session):
                if session is quick:
                    session.execute(sa.text("SET LOCAL lock_timeout = '2s'"))
                staff = session.get(User, staff_id)
                redemption.check_in(
                    session.get(Voucher, voucher_id),
                    scan_digest=digest,
                    staff_user=staff,
                    service_id=_meal(staff).id,
                )
        quick.commit()  # while the slow one is still open
        slow.commit()
    with app.app_context():
        assert _redemption("quick-phone").status == _redemption("slow-phone").status
        assert _redemption("quick-phone").status == "checked_in"
        db.session.remove()


HOT_ACCOUNTS = ("redeemed:unsettled", "vouchers:held", "vouchers:outstanding")


def _two_shards_each() -> None:
    """The hot accounts down to shards 0 and 1, their balances kept (on shard 0)."""
    for code in HOT_ACCOUNTS:
        account_id = db.session.scalar(
            sa.select(LedgerAccount.id).where(LedgerAccount.code == code)
        )
        params = {"a": account_id}
        db.session.execute(
            sa.text(
                "UPDATE ledger_balances SET balance_fen = (SELECT sum(balance_fen) FROM "
                "ledger_balances WHERE account_id = :a) WHERE account_id = :a AND shard = 0"
            ),
            params,
        )
        db.session.execute(
            sa.text(
                "UPDATE ledger_balances SET balance_fen = 0 WHERE account_id = :a AND shard > 0"
            ),
            params,
        )
        db.session.execute(
            sa.text("DELETE FROM ledger_balances WHERE account_id = :a AND shard > 1"), params
        )
        db.session.execute(sa.text("UPDATE ledger_accounts SET shards = 2 WHERE id = :a"), params)


def test_a_cash_payment_and_a_capture_do_not_deadlock_when_every_shard_is_taken(city):
    """Found in review: a cash payment holds then captures in one transaction, so after its
    hold (vouchers:held, vouchers:outstanding) it reaches back in code order for
    redeemed:unsettled, while a card capture takes redeemed:unsettled then vouchers:held.
    While a free shard exists neither waits; when a burst holds every shard, waiting for one
    closed the cycle (DeadlockDetected). Here a third session holds shard 1 of each hot
    account, the two transactions take shard 0 of their first account and then want each
    other's: an account with no free shard gets a new one instead of waiting."""
    app, (wang_voucher, other_voucher) = city
    with app.app_context():
        _two_shards_each()
        _priced(db.session.get(Voucher, other_voucher), "cash-lunch")
        card = _priced(db.session.get(Voucher, wang_voucher), "card-lunch")
        redemption.hold(card, method="card")
        db.session.commit()
        staff_id = _user("provider.staff").id
        db.session.remove()
        blocker = db.engine.connect()
        held = blocker.execute(
            sa.text(
                "SELECT b.shard FROM ledger_balances b JOIN ledger_accounts a ON a.id = "
                "b.account_id WHERE a.code IN :codes AND b.shard = 1 FOR UPDATE OF b"
            ).bindparams(sa.bindparam("codes", expanding=True)),
            {"codes": list(HOT_ACCOUNTS)},
        ).all()
        assert len(held) == 3

    def pay():
        redemption.pay_cash(_redemption("cash-lunch"), staff_user=db.session.get(User, staff_id))

    try:
        results = Interleaving(app, {"pay": AT_FIRST_ACCOUNT, "capture": AT_FIRST_ACCOUNT}).run(
            pay=pay, capture=lambda: redemption.capture(_redemption("card-lunch"))
        )
    finally:
        blocker.rollback()
        blocker.close()
    _assert_clean(results, app)
    with app.app_context():
        assert _redemption("cash-lunch").status == "redeemed"
        assert _redemption("card-lunch").status == "redeemed"
        opened = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(sa.table("ledger_balances", sa.column("shard")))
            .where(sa.column("shard") > 1)
        )
        assert opened >= 2  # each of the two opened a shard rather than wait
        db.session.remove()


def test_a_check_in_share_locks_a_voucher_loaded_with_its_policy(city):
    """Found running bench/redeem_http.py: the scanner API loads the voucher with its policy
    (one statement), a refresh repeats that load, and PostgreSQL refuses FOR SHARE on the
    nullable side of the outer join (a 500 on every check-in in a fresh process). The lock
    names the voucher's table only."""
    from sqlalchemy.orm import joinedload

    app, (wang_voucher, _other) = city
    with app.app_context():
        voucher = db.session.scalar(
            sa.select(Voucher).options(joinedload(Voucher.policy)).where(Voucher.id == wang_voucher)
        )
        r = _priced(voucher, "loaded-with-policy")
        assert r.status == "checked_in"
        db.session.rollback()
        db.session.remove()
