"""On PostgreSQL, with real requests from many threads: a burst of PIN guesses at one card.

Each guess is a request of its own through the app's error handling (a wrong PIN fails the
request, which rolls back). However many arrive at once, at most five PINs a day may be
compared with the card's (issue 13, item 1), and the right PIN must not get in behind them.
"""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa

from eldercare.accounts import User
from eldercare.db import db
from eldercare.demo import build_demo
from eldercare.timeutil import local_today
from tests.vouchers.helpers import give_voucher
from tests.vouchers.test_cards import PIN, _add_card_route
from vouchers.models import Voucher, VoucherCard
from vouchers.pool import funding as pool
from vouchers.pool import ledger
from vouchers.redemption import cards

pytestmark = pytest.mark.postgres

WRONG = 20
BURSTS = 4


def _card(app):
    with app.app_context():
        build_demo()
        wang = db.session.scalar(sa.select(User).where(User.username == "elder.wang"))
        staff = db.session.scalar(sa.select(User).where(User.username == "provider.staff"))
        if "district:210102:available" not in ledger.balances():
            approver = db.session.scalar(sa.select(User).where(User.username == "bureau.approver"))
            pool.top_up(10_000_000, source="central", memo="test", actor=approver)
            pool.allocate(wang.resident.district, 1_000_000, memo="test", actor=approver)
        if not db.session.scalar(sa.select(Voucher).where(Voucher.resident_id == wang.resident_id)):
            give_voucher(wang.resident, local_today())
        card = cards.issue_card(wang.resident_id, PIN, actor=wang)
        db.session.commit()
        result = card.card_code, card.id, staff.id, wang.id
        db.session.remove()
        return result


def test_a_burst_of_guesses_has_at_most_five_judged_and_the_right_pin_not_behind_them(
    private_app, monkeypatch
):
    _add_card_route(private_app)
    private_app.config["WTF_CSRF_ENABLED"] = False  # the stand-in route has no form
    code, card_id, staff_id, wang_id = _card(private_app)

    judged = []  # every PIN compared with the card's, in the order compared
    judged_lock = threading.Lock()
    real_check = cards.check_password_hash

    def counting_check(pin_hash, pin):
        with judged_lock:
            judged.append(pin)
        return real_check(pin_hash, pin)

    monkeypatch.setattr(cards, "check_password_hash", counting_check)

    for burst in range(BURSTS):
        with private_app.app_context():  # the family resets the PIN: a fresh day's five
            cards.set_pin(
                db.session.get(User, wang_id).resident_id,
                PIN,
                actor=db.session.get(User, wang_id),
            )
            db.session.commit()
            db.session.remove()
        judged.clear()
        pins = [f"{100000 + 7919 * (burst * WRONG + i) % 900000:06d}" for i in range(WRONG)]
        pins = [p if p != PIN else "999990" for p in pins]
        pins.insert(WRONG // 2, PIN)
        barrier = threading.Barrier(len(pins))

        def guess(pin, barrier=barrier):
            client = private_app.test_client()
            barrier.wait(timeout=60)
            response = client.post(
                "/test/use-card",
                data={"code": code, "pin": pin, "user_id": staff_id},
                headers={"Accept": "application/json"},
            )
            return "in" if response.status_code == 200 else response.json["error"]["code"]

        with ThreadPoolExecutor(max_workers=len(pins)) as threads:
            outcomes = dict(zip(pins, threads.map(guess, pins), strict=True))
        with private_app.app_context():
            stored = db.session.get(VoucherCard, card_id).failed_pin_count
            db.session.remove()
        wrong_judged = [p for p in judged if p != PIN]
        got_in = outcomes[PIN] == "in"
        assert set(outcomes.values()) <= {"in", "wrong_pin", "card_locked"}, outcomes
        assert stored <= cards.MAX_WRONG_PINS, (burst, stored)
        told_wrong = list(outcomes.values()).count("wrong_pin")
        if got_in:
            # The right PIN came among the first five and reset the count, as the rules
            # say: at most four wrong guesses before it and five after it.
            assert len(wrong_judged) <= 2 * cards.MAX_WRONG_PINS - 1, (burst, judged)
            assert told_wrong <= 2 * (cards.MAX_WRONG_PINS - 1), outcomes
        else:
            assert len(judged) <= cards.MAX_WRONG_PINS, (burst, judged)
            assert told_wrong <= cards.MAX_WRONG_PINS - 1, outcomes
            assert outcomes[PIN] == "card_locked"


def test_a_burst_at_the_scan_api_is_judged_five_at_most(private_app, monkeypatch):
    """The same through ``POST /api/v1/scans`` (where the probe found it): 20 wrong PINs
    and the right one at once, three times."""
    from eldercare.tokens import issue_token

    code, card_id, staff_id, wang_id = _card(private_app)
    with private_app.app_context():
        _token, secret = issue_token(db.session.get(User, staff_id), "burst", ["providers:write"])
        db.session.commit()
        db.session.remove()
    judged = []
    judged_lock = threading.Lock()
    real_check = cards.check_password_hash

    def counting_check(pin_hash, pin):
        with judged_lock:
            judged.append(pin)
        return real_check(pin_hash, pin)

    monkeypatch.setattr(cards, "check_password_hash", counting_check)
    for burst in range(3):
        with private_app.app_context():
            wang = db.session.get(User, wang_id)
            cards.set_pin(wang.resident_id, PIN, actor=wang)
            db.session.commit()
            db.session.remove()
        judged.clear()
        pins = [f"{200000 + 104729 * (burst * WRONG + i) % 700000:06d}" for i in range(WRONG)]
        pins = [p if p != PIN else "999990" for p in pins]
        pins.insert(WRONG // 3, PIN)
        barrier = threading.Barrier(len(pins))

        def scan(pin, barrier=barrier):
            client = private_app.test_client()
            barrier.wait(timeout=60)
            response = client.post(
                "/api/v1/scans",
                json={"code": code, "pin": pin},
                headers={"Authorization": f"Bearer {secret}", "Accept-Language": "en"},
            )
            return "in" if response.status_code < 300 else response.get_json()["error"]["code"]

        with ThreadPoolExecutor(max_workers=len(pins)) as threads:
            outcomes = dict(zip(pins, threads.map(scan, pins), strict=True))
        assert set(outcomes.values()) <= {"in", "wrong_pin", "card_locked"}, outcomes
        if outcomes[PIN] == "in":
            assert len([p for p in judged if p != PIN]) <= 2 * cards.MAX_WRONG_PINS - 1
        else:
            assert len(judged) <= cards.MAX_WRONG_PINS, (burst, judged)
        with private_app.app_context():
            assert db.session.get(VoucherCard, card_id).failed_pin_count <= cards.MAX_WRONG_PINS
            db.session.remove()
