"""On PostgreSQL, with real commits from many threads: one voucher, many redemptions at once."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from eldercare.accounts import User
from eldercare.db import db
from eldercare.demo import build_demo
from eldercare.timeutil import local_today
from marketplace import catalogue
from marketplace.providers import provider_of
from tests.vouchers.helpers import give_voucher
from tests.vouchers.interleave import Interleaving, Pause
from vouchers.errors import InsufficientBalance, RedemptionStateError, VoucherNotUsable
from vouchers.models import Redemption, Voucher
from vouchers.pool import funding as pool
from vouchers.pool import ledger
from vouchers.redemption import steps as redemption

pytestmark = pytest.mark.postgres


def _world(app):
    """The demo city with elder.wang's voucher for this month and the station's caregiver."""
    with app.app_context():
        build_demo()
        wang = db.session.scalar(sa.select(User).where(User.username == "elder.wang"))
        staff = db.session.scalar(sa.select(User).where(User.username == "provider.staff"))
        if "district:210102:available" not in ledger.balances():
            approver = db.session.scalar(sa.select(User).where(User.username == "bureau.approver"))
            pool.top_up(10_000_000, source="central", memo="test", actor=approver)
            pool.allocate(wang.resident.district, 1_000_000, memo="test", actor=approver)
        voucher = db.session.scalar(
            sa.select(Voucher).where(Voucher.resident_id == wang.resident_id)
        ) or give_voucher(wang.resident, local_today())
        meal = next(
            s for s in catalogue.services_of(provider_of(staff)) if s.category_code == "meal_help"
        )
        db.session.commit()
        return voucher.id, staff.id, meal.id


def _attempt(app, voucher_id, staff_id, service_id, digest, price_fen):
    with app.app_context():
        try:
            staff = db.session.get(User, staff_id)
            voucher = db.session.get(Voucher, voucher_id)
            r = redemption.check_in(
                voucher, scan_digest=digest, staff_user=staff, service_id=service_id
            )
            db.session.commit()
            if r.status == "checked_in" and r.subsidy_fen is None:
                redemption.set_price(r, price_fen=price_fen, staff_user=staff)
            redemption.pay_cash(r, staff_user=staff)
            db.session.commit()
            return "redeemed"
        except (InsufficientBalance, RedemptionStateError, VoucherNotUsable) as error:
            db.session.rollback()
            return error.code
        except sa.exc.OperationalError:  # a serialisation failure is a refusal too
            db.session.rollback()
            return "retry"
        finally:
            db.session.remove()


def _outcome(app, voucher_id):
    with app.app_context():
        voucher = db.session.get(Voucher, voucher_id)
        redeemed = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(Redemption)
            .where(
                Redemption.voucher_id == voucher_id,
                Redemption.status == "redeemed",
                Redemption.scan_digest.not_like("demo-%"),  # the demo's own lunch
            )
        )
        result = (voucher.balance_fen, voucher.held_fen, redeemed, ledger.verify_ledger().ok)
        db.session.remove()
        return result


def test_fifty_threads_with_the_same_scan_redeem_once(private_app):
    voucher_id, staff_id, meal_id = _world(private_app)
    with private_app.app_context():
        before = db.session.get(Voucher, voucher_id).balance_fen
        db.session.remove()
    with ThreadPoolExecutor(max_workers=50) as threads:
        results = list(
            threads.map(
                lambda _: _attempt(private_app, voucher_id, staff_id, meal_id, "one-scan", 1500),
                range(50),
            )
        )
    balance, held, redeemed, ok = _outcome(private_app, voucher_id)
    assert redeemed == 1 and ok and held == 0
    assert balance == before - 600
    assert results.count("redeemed") >= 1  # the others found it redeemed or lost the race


def test_fifty_phones_racing_for_the_last_yuan_redeem_once(private_app):
    voucher_id, staff_id, meal_id = _world(private_app)
    with private_app.app_context():
        voucher = db.session.get(Voucher, voucher_id)
        # Leave ¥6.00: exactly one meal's subsidy.
        spent = voucher.balance_fen - 600
        ledger.post(
            "hold",
            "test: earlier purchases",
            [("vouchers:outstanding", -spent), ("vouchers:held", spent)],
        )
        voucher.balance_fen, voucher.held_fen = 600, spent
        db.session.commit()
    with ThreadPoolExecutor(max_workers=50) as threads:
        results = list(
            threads.map(
                lambda i: _attempt(private_app, voucher_id, staff_id, meal_id, f"scan-{i}", 1500),
                range(50),
            )
        )
    balance, held, redeemed, ok = _outcome(private_app, voucher_id)
    assert results.count("redeemed") == 1
    assert redeemed == 1 and balance == 0 and ok


def test_a_scan_saved_by_another_tab_meanwhile_is_taken_as_the_same_redemption(private_app):
    """The first tab has checked everything and is about to save when the second tab saves
    the same scan: the first's save meets the unique scan digest (the one conflict check_in
    expects) and returns the second's redemption instead of a second one."""
    voucher_id, staff_id, meal_id = _world(private_app)

    def check_in():
        return redemption.check_in(
            db.session.get(Voucher, voucher_id),
            scan_digest="double-tab",
            staff_user=db.session.get(User, staff_id),
            service_id=meal_id,
        ).id

    results = Interleaving(private_app, {"first": Pause("before", "INSERT INTO redemptions")}).run(
        first=check_in, second=check_in
    )
    assert isinstance(results["first"], int), results
    assert results["first"] == results["second"]
    with private_app.app_context():
        saved = db.session.scalars(
            sa.select(Redemption.id).where(Redemption.scan_digest == "double-tab")
        ).all()
        db.session.remove()
    assert saved == [results["first"]]
