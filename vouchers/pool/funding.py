"""Funding the pool and allocating it to districts (bureau approvers' decisions)."""

from __future__ import annotations

from flask_babel import lazy_gettext as _l

from eldercare import audit, stored_text
from eldercare.accounts import User
from eldercare.errors import InvalidInput
from eldercare.residents import District
from vouchers.pool import ledger, memos

FUNDING_SOURCES = {"central": "funding:central", "local": "funding:local"}
MAX_MOVEMENT_FEN = 10_000_000_000  # 100 million yuan: more than a whole pilot's funds


def _check_amount(amount_fen) -> None:
    if (
        isinstance(amount_fen, bool)
        or not isinstance(amount_fen, int)
        or not 0 < amount_fen <= MAX_MOVEMENT_FEN
    ):
        raise InvalidInput(details={"amount_fen": ledger.AMOUNT_MESSAGE})


def top_up(amount_fen: int, *, source: str, memo: str, actor: User):
    """Money arrives from central or local funds; the two are kept apart."""
    _check_amount(amount_fen)
    if source not in FUNDING_SOURCES:
        raise InvalidInput(details={"source": _l("Choose central or local funds.")})
    if not (memo or "").strip():
        raise InvalidInput(details={"memo": _l("Name the funding document.")})
    entry = ledger.post(
        "topup",
        stored_text.typed(memo.strip()),  # the funding document's number, as typed
        [(FUNDING_SOURCES[source], -amount_fen), ("pool:available", amount_fen)],
        actor_id=actor.id,
    )
    audit.record(
        "pool.topup",
        entry,
        after={"amount_fen": amount_fen, "source": source, "memo": memo.strip()},
    )
    return entry


def allocate(district: District, amount_fen: int, *, memo: str, actor: User):
    """Move unallocated pool money to a district (negative to take some back)."""
    if isinstance(amount_fen, int) and not isinstance(amount_fen, bool) and amount_fen < 0:
        _check_amount(-amount_fen)
    else:
        _check_amount(amount_fen)
    code = ledger.district_account_code(district.code)
    ledger.account(code, create_name=f"{district.name_zh} allocation")
    entry = ledger.post(
        "allocation",
        stored_text.typed((memo or "").strip())
        or memos.memo("ledger.allocation", district=district.code),
        [("pool:available", -amount_fen), (code, amount_fen)],
        actor_id=actor.id,
    )
    audit.record(
        "pool.allocate",
        entry,
        district_id=district.id,
        after={"amount_fen": amount_fen, "district": district.code},
    )
    return entry
