"""Rotating QR tokens: short, signed, single use, and free of personal data.

A token names a voucher and a one-minute window, and nothing else. Its layout, 14 bytes
written as 23 Crockford base32 characters (so a provider can also type it, in any case,
with spaces or dashes, and with O/I/L read as 0/1):

    voucher id (4 bytes) | sequence (3 bits), window mod 2**13 (13 bits) | HMAC-SHA256, 8 bytes

The window is ``floor(unix time / 60)``. Only its low 13 bits travel (5.7 days); the reader
rebuilds the full window as the latest one with those bits, and the MAC covers the full
window, so an old token cannot pass for a new one. The sequence (0-7) gives a voucher up to
eight different codes in one minute: once the elder's code has been scanned, the page shows
the next unused one (``fresh_token``) instead of making the elder wait for the next minute
for a second service. The current and the previous window are accepted (about two
minutes, for a slow scan). The MAC key is derived from SECRET_KEY with a label of its own, so
a token can never be mistaken for a session cookie or any other thing the app signs; 64 bits
of MAC are plenty when every guess has to go through the server.

A token is used once: its SHA-256 goes into ``qr_token_uses`` (unique). The same phone sending
the same scan again gets the first use back; anyone else is told the code was used.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import date, datetime

import sqlalchemy as sa
from flask import current_app, has_request_context, request
from sqlalchemy.orm import joinedload

from eldercare.accounts import User
from eldercare.db import db
from eldercare.timeutil import local_today, now_utc
from vouchers.errors import (
    TokenExpired,
    TokenForged,
    TokenReplayed,
    VoucherExpired,
    VoucherRevoked,
)
from vouchers.models import TokenUse, Voucher

WINDOW_SECONDS = 60
ACCEPTED_WINDOWS = 2  # the current one and the one before it
_KEY_LABEL = b"voucher-qr-v1"
_ID_BYTES, _WINDOW_BYTES, _MAC_BYTES = 4, 2, 8
_SEQ_BITS = 3
_WINDOW_BITS = _WINDOW_BYTES * 8 - _SEQ_BITS
CODES_PER_MINUTE = 2**_SEQ_BITS
_TOKEN_BYTES = _ID_BYTES + _WINDOW_BYTES + _MAC_BYTES
TOKEN_LENGTH = -(-_TOKEN_BYTES * 8 // 5)  # 23 characters
MAX_VOUCHER_ID = 2 ** (_ID_BYTES * 8) - 1
# Anything longer than this is not worth normalising: no code of ours comes close.
_MAX_TYPED = 64

# -- Crockford base32 ----------------------------------------------------------------------

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_VALUE = {c: i for i, c in enumerate(ALPHABET)}
# What people type by mistake for a character that looks the same (Crockford's rule).
_LOOKALIKES = str.maketrans({"O": "0", "I": "1", "L": "1"})
_SEPARATORS = re.compile(r"[\s\-_.]+")


def b32_encode(value: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(ALPHABET[value & 31])
        value >>= 5
    if value:
        raise ValueError("value does not fit")
    return "".join(reversed(chars))


def normalise_code(text: str) -> str | None:
    """A typed or scanned code in canonical form (upper case, no separators, 0/1 for O/I/L),
    or None when it holds a character that is not in the alphabet."""
    if not isinstance(text, str) or len(text) > _MAX_TYPED:
        return None
    code = _SEPARATORS.sub("", text).upper().translate(_LOOKALIKES)
    if not code or any(c not in _VALUE for c in code):
        return None
    return code


def b32_decode(code: str) -> int:
    value = 0
    for c in code:
        value = value * 32 + _VALUE[c]
    return value


def group(code: str, size: int = 4) -> str:
    """A code in groups for reading aloud or printing: ``0A1B 2C3D ...``."""
    return " ".join(code[i : i + size] for i in range(0, len(code), size))


# -- making and reading tokens -------------------------------------------------------------


@dataclass(frozen=True)
class TokenClaim:
    voucher_id: int
    window: int
    seq: int = 0


def _window(now: datetime | None) -> int:
    return int((now or now_utc()).timestamp()) // WINDOW_SECONDS


def _key() -> bytes:
    secret = current_app.config["SECRET_KEY"]
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    return hmac.new(secret, _KEY_LABEL, hashlib.sha256).digest()


def _mac(voucher_id: int, window: int, seq: int) -> bytes:
    message = voucher_id.to_bytes(_ID_BYTES, "big") + window.to_bytes(8, "big") + bytes([seq])
    return hmac.new(_key(), message, hashlib.sha256).digest()[:_MAC_BYTES]


def make_token(voucher_id: int, *, now: datetime | None = None, seq: int = 0) -> str:
    """The ``seq``-th token for this voucher in the current minute (the same all minute)."""
    if isinstance(voucher_id, bool) or not isinstance(voucher_id, int):
        raise ValueError("voucher_id must be an int")
    if not 0 < voucher_id <= MAX_VOUCHER_ID:
        raise ValueError("voucher_id out of range")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < CODES_PER_MINUTE:
        raise ValueError("seq out of range")
    window = _window(now)
    middle = (seq << _WINDOW_BITS) | (window % 2**_WINDOW_BITS)
    raw = (
        voucher_id.to_bytes(_ID_BYTES, "big")
        + middle.to_bytes(_WINDOW_BYTES, "big")
        + _mac(voucher_id, window, seq)
    )
    return b32_encode(int.from_bytes(raw, "big"), TOKEN_LENGTH)


def is_token(code: str | None) -> bool:
    """Whether a normalised code has a rotating token's shape (not whether it is valid):
    23 characters for 112 bits leave the first one's top 3 bits zero, so it is 0-3."""
    return code is not None and len(code) == TOKEN_LENGTH and code[0] in "0123"


def read_token(token: str, *, now: datetime | None = None) -> TokenClaim:
    """Check the token's signature and age; raise TokenForged or TokenExpired."""
    code = normalise_code(token)
    if not is_token(code):
        raise TokenForged()
    raw = b32_decode(code).to_bytes(_TOKEN_BYTES, "big")
    voucher_id = int.from_bytes(raw[:_ID_BYTES], "big")
    middle = int.from_bytes(raw[_ID_BYTES : _ID_BYTES + _WINDOW_BYTES], "big")
    seq, low = middle >> _WINDOW_BITS, middle % 2**_WINDOW_BITS
    mac = raw[_ID_BYTES + _WINDOW_BYTES :]
    current = _window(now)
    window = current - ((current - low) % 2**_WINDOW_BITS)
    # The signature first: a stranger's string is "not valid", never "expired".
    if voucher_id == 0 or not hmac.compare_digest(mac, _mac(voucher_id, window, seq)):
        raise TokenForged()
    if current - window >= ACCEPTED_WINDOWS:
        raise TokenExpired()
    return TokenClaim(voucher_id=voucher_id, window=window, seq=seq)


def is_used(token: str) -> bool:
    digest = token_digest(normalise_code(token))
    return (
        db.session.scalar(sa.select(TokenUse.id).where(TokenUse.token_digest == digest)) is not None
    )


def fresh_token(voucher_id: int, *, now: datetime | None = None) -> str:
    """The first of this minute's codes not yet scanned, for the elder's screen: after a
    scan the next service need not wait for the next minute. After eight scans in one minute
    the last code is shown again (and refused as used) until the minute turns."""
    for seq in range(CODES_PER_MINUTE):
        token = make_token(voucher_id, now=now, seq=seq)
        if not is_used(token):
            return token
    return token


def token_digest(code: str) -> str:
    """What ``qr_token_uses`` keeps of a code: its SHA-256, never the live code."""
    return hashlib.sha256(code.encode("ascii")).hexdigest()


def check_voucher_usable(voucher: Voucher, today: date) -> None:
    """A revoked voucher, or one of another month (valid only in its own month, even before
    the month-end job has marked it), cannot be used."""
    if voucher.status == "revoked":
        raise VoucherRevoked()
    if voucher.status == "expired" or voucher.month != today.replace(day=1):
        raise VoucherExpired()


def _insert_ignoring_duplicate(model, column: str):
    """INSERT ... ON CONFLICT (column) DO NOTHING, on PostgreSQL or SQLite."""
    if db.session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(model).on_conflict_do_nothing(index_elements=[column])


def consume_token(
    token: str, *, user: User, now: datetime | None = None
) -> tuple[Voucher, TokenUse, bool]:
    """Use a scanned token once: (voucher, the use, whether this call made the use)."""
    now = now or now_utc()
    claim = read_token(token, now=now)
    # With its policy: the scanner's answer shows its rules.
    voucher = db.session.get(Voucher, claim.voucher_id, options=[joinedload(Voucher.policy)])
    if voucher is None:  # signed by us for a voucher that is gone: nothing to redeem
        raise TokenForged()
    check_voucher_usable(voucher, local_today(now))
    digest = token_digest(normalise_code(token))
    # One statement in the usual case: the insert that claims the token. When it is there
    # already (a retry, or another scanner first), nothing is inserted and the existing use
    # is read; a racing insert of the same digest makes this one wait for it, then do
    # nothing, so the loser reads the winner's row. No savepoint needed.
    use = db.session.scalars(
        _insert_ignoring_duplicate(TokenUse, "token_digest")
        .values(token_digest=digest, voucher_id=voucher.id, used_by_user_id=user.id, used_at=now)
        .returning(TokenUse)
    ).one_or_none()
    if use is not None:
        return voucher, use, True
    use = db.session.scalar(sa.select(TokenUse).where(TokenUse.token_digest == digest))
    if use.used_by_user_id != user.id:
        raise TokenReplayed()
    # The same phone sending the same scan again (a double tap, a retry): one scan.
    return voucher, use, False


# -- URLs ----------------------------------------------------------------------------------


def public_base_url() -> str:
    """PUBLIC_BASE_URL from the config when set: a QR is printed or shown long after the
    request that made it, and must not carry whatever Host header that request came with.
    Otherwise (development, tests) the current request's host."""
    base = current_app.config.get("PUBLIC_BASE_URL")
    if base:
        return str(base).rstrip("/")
    if has_request_context():
        return request.host_url.rstrip("/")
    raise RuntimeError("set PUBLIC_BASE_URL to build QR links outside a request")


def qr_url(token: str) -> str:
    """The absolute ``/r/<token>`` link a rotating QR encodes."""
    return f"{public_base_url()}/r/{token}"
