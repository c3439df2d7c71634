"""Rotating QR tokens: signed, short, one minute each, two minutes' grace, used once."""

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from threading import Barrier

import pytest
import sqlalchemy as sa
from flask_babel import force_locale

from eldercare.accounts import User
from eldercare.db import db
from eldercare.demo import build_demo
from eldercare.errors import InvalidInput
from eldercare.timeutil import local_today, now_utc
from tests.vouchers.helpers import give_voucher
from vouchers.errors import (
    TokenExpired,
    TokenForged,
    TokenReplayed,
    VoucherExpired,
    VoucherRevoked,
)
from vouchers.models import TokenUse, Voucher
from vouchers.pool import funding as pool
from vouchers.pool import ledger
from vouchers.redemption import qr_tokens
from vouchers.redemption.qr_tokens import consume_token, make_token, qr_url, read_token

# 12:00:30 UTC: in the middle of a window, so +/- 29 seconds stays in it.
NOON = datetime(2025, 6, 10, 12, 0, 30, tzinfo=UTC)


def english(message) -> str:
    """A lazy message as English readers see it (the app's default language is Chinese)."""
    with force_locale("en"):
        return str(message)


@pytest.fixture
def voucher(scheme):
    scheme.voucher = give_voucher(scheme.elder, scheme.today)
    return scheme


def _uses(session):
    return session.scalar(sa.select(sa.func.count()).select_from(TokenUse))


def test_round_trip_names_the_voucher_and_window(app_ctx):
    token = make_token(4321, now=NOON)
    claim = read_token(token, now=NOON)
    assert claim.voucher_id == 4321
    assert claim.window == int(NOON.timestamp()) // 60
    assert len(token) == qr_tokens.TOKEN_LENGTH == 23
    assert set(token) <= set(qr_tokens.ALPHABET)


def test_a_token_rotates_every_minute_and_holds_still_within_one(app_ctx):
    same_minute = [make_token(7, now=NOON + timedelta(seconds=s)) for s in (-29, 0, 29)]
    assert len(set(same_minute)) == 1
    minutes = {make_token(7, now=NOON + timedelta(minutes=m)) for m in range(10)}
    assert len(minutes) == 10
    # Another voucher in the same minute has another token.
    assert make_token(8, now=NOON) != make_token(7, now=NOON)


def test_accepted_this_minute_and_the_next_then_expired(app_ctx):
    token = make_token(7, now=NOON)
    assert read_token(token, now=NOON + timedelta(seconds=29)).voucher_id == 7
    assert read_token(token, now=NOON + timedelta(seconds=89)).voucher_id == 7
    for later in (timedelta(seconds=90), timedelta(minutes=5), timedelta(days=3)):
        with pytest.raises(TokenExpired) as caught:
            read_token(token, now=NOON + later)
        assert caught.value.code == "qr_code_expired"
        assert "expired" in english(caught.value.message)
    # Far older than the 16 bits of window it carries: no longer provably ours at all.
    with pytest.raises(TokenForged):
        read_token(token, now=NOON + timedelta(days=60))
    # A token from the future (a clock set wrong) is not accepted either.
    with pytest.raises((TokenExpired, TokenForged)):
        read_token(make_token(7, now=NOON + timedelta(minutes=2)), now=NOON)


def _flip(token: str, at: int) -> str:
    alphabet = qr_tokens.ALPHABET
    replacement = alphabet[(alphabet.index(token[at]) + 1) % 4 if at == 0 else 0]
    if replacement == token[at]:
        replacement = alphabet[(alphabet.index(token[at]) + 1) % 32]
    return token[:at] + replacement + token[at + 1 :]


def test_forged_tokens_are_refused_as_not_valid(app, app_ctx):
    token = make_token(7, now=NOON)
    forged = [_flip(token, i) for i in range(len(token))]
    forged += [
        token[:-1],  # truncated
        token + "0",
        "",
        "hello",
        "0" * 23,
        "Z" * 23,  # above the 112 bits a token has
        "7" + "Z" * 22,
        "3" + "Z" * 22,
        token[:10] + "汉" + token[11:],  # not ASCII
        token[:10] + "Ü" + token[11:],
        token[:10] + "U" + token[11:],  # U is not in Crockford's alphabet
        "x" * 10_000,
        None,
        7,
    ]
    for text in forged:
        with pytest.raises(TokenForged) as caught:
            read_token(text, now=NOON)
        assert isinstance(caught.value, InvalidInput)
        assert caught.value.code == "qr_code_invalid"
        assert english(caught.value.message).startswith("This code is not valid")
    # Signed with another key: the same voucher and minute, refused.
    app.config["SECRET_KEY"], saved = "another-key-altogether-0000000000", app.config["SECRET_KEY"]
    try:
        other = make_token(7, now=NOON)
    finally:
        app.config["SECRET_KEY"] = saved
    assert other != token
    with pytest.raises(TokenForged):
        read_token(other, now=NOON)


def test_a_typed_code_in_lower_case_with_dashes_and_lookalikes_is_accepted(app_ctx):
    token = make_token(7, now=NOON)
    typed = "-".join(token[i : i + 4] for i in range(0, 23, 4)).lower()
    assert read_token(typed, now=NOON).voucher_id == 7
    assert read_token(" ".join(qr_tokens.group(token).split()), now=NOON).voucher_id == 7
    looks_alike = token.replace("0", "o").replace("1", "l")
    assert read_token(looks_alike, now=NOON).voucher_id == 7


def test_a_token_carries_no_personal_data(voucher, app_ctx):
    elder = voucher.elder
    token = make_token(voucher.voucher.id)
    assert len(token) <= 32
    # What it carries, decoded, is the voucher id, 16 bits of time and the MAC: nothing else.
    raw = qr_tokens.b32_decode(token).to_bytes(14, "big")
    assert int.from_bytes(raw[:4], "big") == voucher.voucher.id
    for secret in (elder.name, elder.id_number, elder.phone or "13800000000", elder.address):
        assert secret not in token
        assert secret.encode() not in raw
    for fragment in (elder.id_number[-6:], elder.birth_date.strftime("%Y%m%d")):
        assert fragment not in token


def test_consume_once_same_user_gets_the_same_use_other_user_refused(voucher, db_session):
    token = make_token(voucher.voucher.id)
    staff = voucher.market.station_admin
    v, use, fresh = consume_token(token, user=staff)
    assert fresh and v.id == voucher.voucher.id and use.used_by_user_id == staff.id
    assert use.token_digest == qr_tokens.token_digest(token)
    assert token not in use.token_digest
    # The same phone sending the same scan again (typed, even): one scan.
    v2, use2, fresh2 = consume_token(token.lower(), user=staff)
    assert (v2.id, use2.id, fresh2) == (v.id, use.id, False)
    uses = _uses(db_session)
    other = voucher.son
    with pytest.raises(TokenReplayed) as caught:
        consume_token(token, user=other)
    assert caught.value.code == "qr_code_used"
    assert "already been used" in english(caught.value.message)
    assert _uses(db_session) == uses == 1


def test_after_a_scan_the_screen_shows_the_next_unused_code_of_the_minute(voucher):
    """A second service in the same minute need not wait for the next minute's code."""
    vid, staff = voucher.voucher.id, voucher.market.station_admin
    now = now_utc()
    first = qr_tokens.fresh_token(vid, now=now)
    assert first == make_token(vid, now=now) and qr_tokens.fresh_token(vid, now=now) == first
    consume_token(first, user=staff, now=now)
    second = qr_tokens.fresh_token(vid, now=now)
    assert second != first and len(second) == len(first)
    claim = read_token(second, now=now)
    assert (claim.voucher_id, claim.seq) == (vid, 1)
    assert consume_token(second, user=staff, now=now)[2]  # a fresh use
    # Eight codes a minute at most; then the last one is shown (and refused) until it turns.
    for _ in range(6):
        consume_token(qr_tokens.fresh_token(vid, now=now), user=staff, now=now)
    last = qr_tokens.fresh_token(vid, now=now)
    assert read_token(last, now=now).seq == qr_tokens.CODES_PER_MINUTE - 1
    with pytest.raises(TokenReplayed):
        consume_token(last, user=voucher.son, now=now)
    later = now + timedelta(minutes=1)
    assert read_token(qr_tokens.fresh_token(vid, now=later), now=later).seq == 0


def test_a_sequence_number_cannot_be_changed_without_the_key(app_ctx):
    token = make_token(42, seq=3)
    raw = qr_tokens.b32_decode(token).to_bytes(14, "big")
    bumped = raw[:4] + bytes([raw[4] ^ 0b0010_0000]) + raw[5:]  # seq 3 -> 2, same MAC
    forged = qr_tokens.b32_encode(int.from_bytes(bumped, "big"), qr_tokens.TOKEN_LENGTH)
    with pytest.raises(TokenForged):
        read_token(forged)


def test_consuming_a_bad_token_records_nothing(voucher, db_session):
    staff = voucher.market.station_admin
    expired = make_token(voucher.voucher.id, now=now_utc() - timedelta(minutes=3))
    for bad, error in ((expired, TokenExpired), ("garbage", TokenForged)):
        with pytest.raises(error):
            consume_token(bad, user=staff)
    # Signed, but for a voucher that does not exist.
    with pytest.raises(TokenForged):
        consume_token(make_token(voucher.voucher.id + 1000), user=staff)
    assert _uses(db_session) == 0


def test_revoked_or_past_month_voucher_is_refused(voucher, db_session):
    staff = voucher.market.station_admin
    v = voucher.voucher
    v.status = "revoked"
    db_session.flush()
    with pytest.raises(VoucherRevoked) as caught:
        consume_token(make_token(v.id), user=staff)
    assert caught.value.code == "voucher_revoked"
    assert "cancelled" in english(caught.value.message)
    v.status = "expired"
    db_session.flush()
    with pytest.raises(VoucherExpired):
        consume_token(make_token(v.id), user=staff)
    # Still marked active, but of last month: valid only in its own month.
    v.status = "active"
    v.month = (local_today().replace(day=1) - timedelta(days=1)).replace(day=1)
    db_session.flush()
    with pytest.raises(VoucherExpired):
        consume_token(make_token(v.id), user=staff)
    assert _uses(db_session) == 0


def test_qr_url_uses_the_public_base_url_or_the_request_host(app, app_ctx):
    token = make_token(7, now=NOON)
    with app.test_request_context("/", base_url="http://phone.example:8080"):
        assert qr_url(token) == f"http://phone.example:8080/r/{token}"
        app.config["PUBLIC_BASE_URL"] = "https://vouchers.example.cn/"
        try:
            assert qr_url(token) == f"https://vouchers.example.cn/r/{token}"
        finally:
            del app.config["PUBLIC_BASE_URL"]
    with pytest.raises(RuntimeError):
        qr_url(token)


def _demo_voucher(app):
    """The demo city with elder.wang's voucher for this month; two provider accounts."""
    with app.app_context():
        build_demo()
        users = {
            u.username: u
            for u in db.session.scalars(
                sa.select(User).where(
                    User.username.in_(["elder.wang", "provider.staff", "provider.admin"])
                )
            )
        }
        wang = users["elder.wang"]
        if "district:210102:available" not in ledger.balances():
            approver = db.session.scalar(sa.select(User).where(User.username == "bureau.approver"))
            pool.top_up(10_000_000, source="central", memo="test", actor=approver)
            pool.allocate(wang.resident.district, 1_000_000, memo="test", actor=approver)
        voucher = db.session.scalar(
            sa.select(Voucher).where(Voucher.resident_id == wang.resident_id)
        ) or give_voucher(wang.resident, local_today())
        db.session.commit()
        return voucher.id, [users["provider.staff"].id, users["provider.admin"].id]


@pytest.mark.postgres
def test_twenty_taps_from_two_phones_with_one_token_make_one_use(private_app):
    voucher_id, phones = _demo_voucher(private_app)
    with private_app.app_context():
        token = make_token(voucher_id)
    barrier = Barrier(20)

    def tap(i):
        with private_app.app_context():
            try:
                # All at once (before taking a connection: the pool has fewer than 20).
                barrier.wait(timeout=30)
                user = db.session.get(User, phones[i % 2])  # two phones, ten taps each
                _, use, fresh = consume_token(token, user=user)
                db.session.commit()
                return i % 2, use.id, fresh
            except TokenReplayed:
                db.session.rollback()
                return i % 2, "replayed", None
            finally:
                db.session.remove()

    with ThreadPoolExecutor(max_workers=20) as threads:
        results = list(threads.map(tap, range(20)))
    fresh = [r for r in results if r[2] is True]
    assert len(fresh) == 1
    winner, use_id, _ = fresh[0]
    # The winning phone's other taps got the same use back; the other phone was refused.
    assert [r[1] for r in results if r[0] == winner] == [use_id] * 10
    assert [r[1] for r in results if r[0] != winner] == ["replayed"] * 10
    with private_app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(TokenUse)) == 1
