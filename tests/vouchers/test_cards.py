"""Printed cards: PIN rules, the right PIN, five wrong PINs lock the card for the day even
though every wrong-PIN request fails (and rolls back), reissue, reset, revoke."""

from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from threading import Barrier

import pytest
import sqlalchemy as sa
from flask_babel import force_locale

from eldercare import create_app
from eldercare.accounts import User
from eldercare.audit import AuditLog
from eldercare.db import db
from eldercare.demo import build_demo
from eldercare.errors import InvalidInput
from eldercare.timeutil import local_today
from tests.conftest import TEST_CONFIG
from tests.vouchers.helpers import give_voucher
from vouchers.errors import CardLocked, CardNotValid, NoVoucherThisMonth, WrongPin
from vouchers.models import TokenUse, Voucher, VoucherCard
from vouchers.pool import funding as pool
from vouchers.pool import ledger
from vouchers.redemption import cards

PIN = "583019"


def _add_card_route(app):
    """A stand-in for the provider's page: one request per PIN, with the app's real error
    handling (an error rolls the request back, a normal return commits)."""
    from flask import request

    def use():
        user = db.session.get(User, int(request.form["user_id"]))
        day = request.form.get("day")
        voucher, digest = cards.use_card(
            request.form["code"],
            request.form["pin"],
            user=user,
            today=date.fromisoformat(day) if day else None,
        )
        return {"voucher_id": voucher.id, "digest": digest}

    app.add_url_rule("/test/use-card", "test_use_card", use, methods=["POST"])


@pytest.fixture(scope="module")
def card_app(database_url):
    """An app of its own (a route cannot be added once the suite's app has served requests)
    on the suite's database; the test's session is shared with it as with the suite's app."""
    app = create_app(
        TEST_CONFIG | {"SQLALCHEMY_DATABASE_URI": database_url, "WTF_CSRF_ENABLED": False}
    )
    _add_card_route(app)
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def carded(scheme, db_session):
    """The elder with this month's voucher and a card, committed as the request that issued
    it would have (in the test's outer transaction, so still undone at the end)."""
    scheme.voucher = give_voucher(scheme.elder, scheme.today)
    scheme.card = cards.issue_card(scheme.elder.id, PIN, actor=scheme.son)
    scheme.staff = scheme.market.station_admin
    db_session.commit()
    return scheme


def _card(session, card_id):
    session.expire_all()
    return session.get(VoucherCard, card_id)


def _audits(session, action):
    return session.scalar(
        sa.select(sa.func.count()).select_from(AuditLog).where(AuditLog.action == action)
    )


@pytest.mark.parametrize(
    "pin",
    [
        "12345",
        "1234567",
        "12a456",
        " 58301",
        "５８３０１９",  # full-width digits
        583019,
        None,
        "000000",
        "999999",
        "123456",
        "654321",
        "890123",
        "121212",
        "111222",
        "123123",
        "520520",
        "440312",  # the elder's birthday (1944-03-12) as YYMMDD
        "031244",  # MMDDYY
        "120344",  # DDMMYY
        "194403",  # YYYYMM
    ],
)
def test_bad_or_guessable_pins_are_refused_and_nothing_is_issued(scheme, db_session, pin):
    audits = _audits(db_session, "voucher_card.issue")
    with pytest.raises(InvalidInput) as caught:
        cards.issue_card(scheme.elder.id, pin, actor=scheme.son)
    assert "pin" in caught.value.details
    assert db_session.scalar(sa.select(sa.func.count()).select_from(VoucherCard)) == 0
    assert _audits(db_session, "voucher_card.issue") == audits


def test_the_end_of_the_id_number_is_refused_as_a_pin(scheme):
    last_six = scheme.elder.id_number[-6:]
    assert last_six.isdigit()
    assert cards.pin_problem(last_six, scheme.elder) is cards.PIN_WEAK_MESSAGE
    assert cards.pin_problem(PIN, scheme.elder) is None


def test_issue_and_use_with_the_right_pin(carded, db_session, app):
    card = carded.card
    assert len(card.card_code) == 16 and PIN not in card.pin_hash
    assert _audits(db_session, "voucher_card.issue") == 1
    voucher, digest = cards.use_card(card.card_code, PIN, user=carded.staff)
    assert voucher.id == carded.voucher.id
    # Typed from the printed number, in lower case with spaces and the prefix: the same card.
    typed = "c " + cards.card_number(card).lower()
    voucher2, digest2 = cards.use_card(typed, PIN, user=carded.staff)
    assert voucher2.id == voucher.id
    assert digest != digest2  # a card is used many times a month: each use is its own scan
    assert {u.token_digest for u in db_session.scalars(sa.select(TokenUse))} == {digest, digest2}
    with app.test_request_context("/", base_url="https://p.example"):
        assert cards.card_url(card) == f"https://p.example/r/c{card.card_code}"


def test_five_wrong_pins_lock_the_card_even_though_each_request_fails(carded, db_session, card_app):
    client = card_app.test_client()
    code = carded.card.card_code

    def attempt(pin, **extra):
        return client.post(
            "/test/use-card",
            data={"code": code, "pin": pin, "user_id": carded.staff.id, **extra},
            # The words are checked in English; the app's default language is Chinese.
            headers={"Accept": "application/json", "Accept-Language": "en"},
        )

    lefts = []
    for _ in range(4):
        response = attempt("111333")
        assert response.status_code == 422
        assert response.json["error"]["code"] == "wrong_pin"
        lefts.append(response.json["error"]["message"])
    assert [m[-2:] for m in lefts] == ["4.", "3.", "2.", "1."]
    response = attempt("111333")
    assert response.status_code == 403 and response.json["error"]["code"] == "card_locked"
    assert _card(db_session, carded.card.id).failed_pin_count == 5
    # Locked: even the right PIN is refused today, and the refusal counts nothing more.
    response = attempt(PIN)
    assert response.json["error"]["code"] == "card_locked"
    assert "locked for today" in response.json["error"]["message"]
    assert _card(db_session, carded.card.id).failed_pin_count == 5
    assert _audits(db_session, "voucher_card.locked") == 1
    assert db_session.scalar(sa.select(sa.func.count()).select_from(TokenUse)) == 0
    # The lock lifts the next day.
    tomorrow = (local_today() + timedelta(days=1)).isoformat()
    response = attempt(PIN, day=tomorrow)
    assert response.status_code == 200 or response.json["error"]["code"] == "no_voucher_this_month"
    assert _card(db_session, carded.card.id).failed_pin_count in (0, 5)
    wrong_tomorrow = attempt("111333", day=tomorrow)
    assert wrong_tomorrow.json["error"]["message"].endswith("4.")


def test_wrong_pins_survive_a_plain_rollback_and_a_savepoint_rollback(carded, db_session):
    code = carded.card.card_code
    for expected_left in (4, 3):
        with pytest.raises(WrongPin) as caught:
            cards.use_card(code, "111333", user=carded.staff)
        assert caught.value.attempts_left == expected_left
        db_session.rollback()  # what the request wrapper does with the error
    for expected_left in (2, 1):
        with pytest.raises(WrongPin) as caught, db_session.begin_nested():
            cards.use_card(code, "111333", user=carded.staff)
        assert caught.value.attempts_left == expected_left
    db_session.commit()
    with pytest.raises(CardLocked):
        cards.use_card(code, "111333", user=carded.staff)
    db_session.rollback()
    assert _card(db_session, carded.card.id).failed_pin_count == 5
    with pytest.raises(CardLocked):
        cards.use_card(code, PIN, user=carded.staff)


def test_the_right_pin_resets_the_count(carded, db_session):
    code = carded.card.card_code
    for _ in range(3):
        with pytest.raises(WrongPin):
            cards.use_card(code, "111333", user=carded.staff)
        db_session.rollback()
    cards.use_card(code, PIN, user=carded.staff)
    db_session.commit()
    assert _card(db_session, carded.card.id).failed_pin_count == 0
    with pytest.raises(WrongPin) as caught:
        cards.use_card(code, "111333", user=carded.staff)
    assert caught.value.attempts_left == 4


def test_a_malformed_pin_is_refused_without_counting(carded, db_session):
    for pin in ("", "12345", "abcdef", None):
        with pytest.raises(InvalidInput) as caught:
            cards.use_card(carded.card.card_code, pin, user=carded.staff)
        assert not isinstance(caught.value, WrongPin)
        db_session.rollback()
    assert _card(db_session, carded.card.id).failed_pin_count == 0


def test_set_pin_unlocks_and_the_old_pin_stops(carded, db_session):
    code = carded.card.card_code
    for _ in range(5):
        with pytest.raises((WrongPin, CardLocked)):
            cards.use_card(code, "111333", user=carded.staff)
        db_session.rollback()
    assert _card(db_session, carded.card.id).failed_pin_count == 5
    cards.set_pin(carded.elder.id, "274810", actor=carded.son)
    db_session.commit()
    assert _audits(db_session, "voucher_card.set_pin") == 1
    with pytest.raises(WrongPin) as caught:
        cards.use_card(code, PIN, user=carded.staff)
    assert caught.value.attempts_left == 4
    db_session.rollback()
    voucher, _ = cards.use_card(code, "274810", user=carded.staff)
    assert voucher.id == carded.voucher.id
    with pytest.raises(InvalidInput):
        cards.set_pin(carded.elder.id, "123456", actor=carded.son)


def test_reissue_kills_the_old_card(carded, db_session):
    old_code = carded.card.card_code
    card = cards.issue_card(carded.elder.id, "274810", actor=carded.son)
    assert card.id == carded.card.id and card.card_code != old_code
    assert _audits(db_session, "voucher_card.reissue") == 1
    with pytest.raises(CardNotValid) as caught:
        cards.use_card(old_code, PIN, user=carded.staff)
    with force_locale("en"):
        assert "not valid" in str(caught.value.message)
    voucher, _ = cards.use_card(card.card_code, "274810", user=carded.staff)
    assert voucher.id == carded.voucher.id


def test_unknown_or_revoked_card_is_refused(carded, db_session):
    for code in ("0" * 16, "garbage", "", "C" + "Z" * 20, None):
        with pytest.raises(CardNotValid):
            cards.use_card(code, PIN, user=carded.staff)
    cards.revoke_card(carded.elder.id, actor=carded.son)
    assert _audits(db_session, "voucher_card.revoke") == 1
    with pytest.raises(CardNotValid):
        cards.use_card(carded.card.card_code, PIN, user=carded.staff)
    assert db_session.scalar(sa.select(sa.func.count()).select_from(TokenUse)) == 0


def test_a_card_without_a_voucher_this_month_is_refused(carded, db_session):
    next_month = (local_today().replace(day=28) + timedelta(days=5)).replace(day=1)
    with pytest.raises(NoVoucherThisMonth):
        cards.use_card(carded.card.card_code, PIN, user=carded.staff, today=next_month)
    carded.voucher.status = "revoked"
    db_session.flush()
    from vouchers.errors import VoucherRevoked

    with pytest.raises(VoucherRevoked):
        cards.use_card(carded.card.card_code, PIN, user=carded.staff)


@pytest.mark.postgres
def test_wrong_pins_at_the_same_moment_are_all_counted(private_app):
    """Four phones type a wrong PIN at once, each in a request that fails: none is lost."""
    _add_card_route(private_app)
    private_app.config["WTF_CSRF_ENABLED"] = False  # the stand-in route has no form
    with private_app.app_context():
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
        code, card_id, staff_id = card.card_code, card.id, staff.id
    barrier = Barrier(4)

    def attempt(_):
        client = private_app.test_client()
        barrier.wait(timeout=30)
        response = client.post(
            "/test/use-card",
            data={"code": code, "pin": "111333", "user_id": staff_id},
            headers={"Accept": "application/json"},
        )
        return response.json["error"]["code"]

    with ThreadPoolExecutor(max_workers=4) as threads:
        outcomes = list(threads.map(attempt, range(4)))
    assert outcomes == ["wrong_pin"] * 4
    with private_app.app_context():
        assert db.session.get(VoucherCard, card_id).failed_pin_count == 4
    assert attempt_once(private_app, code, "111333", staff_id) == "card_locked"
    assert attempt_once(private_app, code, PIN, staff_id) == "card_locked"
    with private_app.app_context():
        assert db.session.get(VoucherCard, card_id).failed_pin_count == 5


def attempt_once(app, code, pin, user_id):
    response = app.test_client().post(
        "/test/use-card",
        data={"code": code, "pin": pin, "user_id": user_id},
        headers={"Accept": "application/json"},
    )
    return response.json["error"]["code"]
