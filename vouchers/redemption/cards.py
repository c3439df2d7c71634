"""Printed voucher cards for elders without a phone: a static QR plus the elder's PIN.

The card's QR holds only a random card code (80 bits, 16 Crockford base32 characters; a
reissued card gets a new one, so a lost card stops working). Using it needs the elder's
6-digit PIN, typed on the provider's phone. Five wrong PINs lock the card until the end of
the day (Asia/Shanghai); the family or the bureau can reset the PIN, which also unlocks it.

On PostgreSQL, where the card's row is committed (always, in production), every guess
first takes one of the day's five attempts on a connection of its own, committed before the
PIN is compared (card_attempts.py): guesses sent at once are judged five at most, whatever
the concurrency, and a right PIN arriving behind them is refused as locked.

Elsewhere, wrong PINs must still be counted even though the request that typed one ends in
an error, and every error path rolls the unit of work back (eldercare/errors.py). Counting
on a connection of its own would survive the rollback, but it waits for the request's own
transaction on SQLite (whose readers block a writer's commit) and cannot see a card that
is not committed yet (the test suite's transactions). So the count is written in the
request's transaction *and* remembered on the session; if a rollback undoes it, a session
hook writes it again straight after the rollback, in the transaction that the request then
commits (the request wrapper commits after an error page too). A savepoint rolled back
around a wrong PIN leaves it to be written again at the next commit or card use. A caller
that catches WrongPin and carries on simply commits the first write. A CLI command or job
that rolls back and stops without committing loses the count; none of them takes PINs.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import date, datetime
from types import SimpleNamespace

import sqlalchemy as sa
from flask import current_app
from flask_babel import lazy_gettext as _l
from sqlalchemy.orm import Session, SessionTransaction
from werkzeug.security import check_password_hash, generate_password_hash

from eldercare import audit
from eldercare.accounts import User
from eldercare.db import db
from eldercare.errors import Conflict, InvalidInput, NotFound
from eldercare.residents import Resident
from eldercare.timeutil import local_today, now_utc
from vouchers.errors import CardLocked, CardNotValid, NoVoucherThisMonth, WrongPin
from vouchers.models import LIVE_FIRST, TokenUse, Voucher, VoucherCard
from vouchers.redemption import card_attempts
from vouchers.redemption.qr_tokens import (
    b32_encode,
    check_voucher_usable,
    normalise_code,
    public_base_url,
)

CARD_CODE_LENGTH = 16  # 80 random bits
CARD_PREFIX = "C"  # tells a card code from a rotating token (which starts with 0-3)
MAX_WRONG_PINS = 5
PIN_LENGTH = 6

PIN_FORMAT_MESSAGE = _l("The PIN must be exactly 6 digits.")
PIN_WEAK_MESSAGE = _l(
    "This PIN is too easy to guess. Do not use a birthday, the end of the ID number, a "
    "sequence or repeated digits."
)
TYPE_PIN_MESSAGE = _l("Type the elder's 6-digit PIN.")


# -- PIN rules -----------------------------------------------------------------------------


def _is_run(pin: str) -> bool:
    steps = {(int(b) - int(a)) % 10 for a, b in zip(pin, pin[1:], strict=False)}
    return steps in ({1}, {9})  # 123456, 890123, 654321...


def _guessable_pins(resident: Resident) -> set[str]:
    """What a thief holding the card, or knowing the elder, would try first."""
    birth = resident.birth_date
    pins = {birth.strftime(f) for f in ("%y%m%d", "%m%d%y", "%d%m%y", "%Y%m", "%m%Y")}
    number = resident.id_number or ""
    if number[-6:].isdigit():
        pins.add(number[-6:])  # 身份证后六位, the most common choice of all
    return pins


def pin_problem(pin, resident: Resident) -> str | None:
    """Why a new PIN is refused, or None."""
    if not isinstance(pin, str) or not re.fullmatch(r"[0-9]{6}", pin):
        return PIN_FORMAT_MESSAGE
    if (
        len(set(pin)) <= 2  # 000000, 111222, 121212
        or pin[:3] * 2 == pin  # 123123, 520520
        or _is_run(pin)
        or pin in _guessable_pins(resident)
    ):
        return PIN_WEAK_MESSAGE
    return None


def _hash_pin(pin: str) -> str:
    return generate_password_hash(
        pin, method=current_app.config.get("PASSWORD_HASH_METHOD", "scrypt")
    )


# -- issuing and managing cards ------------------------------------------------------------


def new_card_code() -> str:
    return b32_encode(secrets.randbits(CARD_CODE_LENGTH * 5), CARD_CODE_LENGTH)


def _summary(card: VoucherCard) -> dict:
    # The audit trail keeps the code's last four characters: enough to tell cards apart,
    # not enough to print a working copy.
    return {
        "card_ending": card.card_code[-4:],
        "status": card.status,
        "failed_pin_count": card.failed_pin_count,
    }


def _resident(resident_id: int) -> Resident:
    resident = db.session.get(Resident, resident_id)
    if resident is None:
        raise NotFound()
    return resident


def _card_of(resident_id: int) -> VoucherCard | None:
    return db.session.scalar(
        sa.select(VoucherCard).where(VoucherCard.resident_id == resident_id).with_for_update()
    )


def issue_card(resident_id: int, pin: str, *, actor: User) -> VoucherCard:
    """A new card for the elder, or a replacement: the old card's code stops working."""
    resident = _resident(resident_id)
    problem = pin_problem(pin, resident)
    if problem:
        raise InvalidInput(details={"pin": problem})
    card = _card_of(resident.id)
    before = _summary(card) if card is not None else None
    if card is None:
        card = VoucherCard(resident_id=resident.id)
        db.session.add(card)
    card.card_code = new_card_code()
    card.pin_hash = _hash_pin(pin)
    card.status = "active"
    card.failed_pin_count = 0
    card.failed_pin_day = None
    card.issued_by_user_id = actor.id
    card.issued_at = now_utc()
    try:
        with db.session.begin_nested():
            db.session.flush()
    except sa.exc.IntegrityError as error:
        # Someone issued this elder's first card at the same moment.
        raise Conflict() from error
    audit.record(
        "voucher_card.reissue" if before else "voucher_card.issue",
        card,
        before=before,
        after=_summary(card),
        district_id=resident.district_id,
        actor=actor,
    )
    return card


def set_pin(resident_id: int, pin: str, *, actor: User) -> VoucherCard:
    """The family or the bureau sets a new PIN; a card locked today works again."""
    resident = _resident(resident_id)
    card = _card_of(resident.id)
    if card is None or card.status != "active":
        raise NotFound()
    problem = pin_problem(pin, resident)
    if problem:
        raise InvalidInput(details={"pin": problem})
    before = _summary(card)
    card.pin_hash = _hash_pin(pin)
    card.failed_pin_count = 0
    card.failed_pin_day = None
    audit.record(
        "voucher_card.set_pin",
        card,
        before=before,
        after=_summary(card),
        district_id=resident.district_id,
        actor=actor,
    )
    return card


def revoke_card(resident_id: int, *, actor: User) -> VoucherCard:
    """A lost card the family does not want replaced yet."""
    resident = _resident(resident_id)
    card = _card_of(resident.id)
    if card is None or card.status != "active":
        raise NotFound()
    before = _summary(card)
    card.status = "revoked"
    audit.record(
        "voucher_card.revoke",
        card,
        before=before,
        after=_summary(card),
        district_id=resident.district_id,
        actor=actor,
    )
    return card


def card_url(card: VoucherCard) -> str:
    """The link in the card's QR: ``/r/c<code>``; tokens start with 0-3, cards with c."""
    return f"{public_base_url()}/r/c{card.card_code}"


def card_number(card: VoucherCard) -> str:
    """The code as printed under the QR, for typing when the camera will not read it."""
    code = card.card_code
    return " ".join(code[i : i + 4] for i in range(0, len(code), 4))


def normalise_card_code(text: str) -> str | None:
    """A typed or scanned card code without its prefix, or None if it cannot be one."""
    code = normalise_code(text)
    if code and len(code) == CARD_CODE_LENGTH + 1 and code.startswith(CARD_PREFIX):
        code = code[1:]
    if code is None or len(code) != CARD_CODE_LENGTH:
        return None
    return code


# -- using a card --------------------------------------------------------------------------


@dataclass
class _WrongPin:
    """One wrong PIN to write again if a rollback undoes it."""

    card_id: int
    pin_hash: str  # a PIN set since then makes the old failure moot
    day: date
    actor_id: int
    actor_label: str
    transaction: SessionTransaction | None


_PENDING = "voucher_card_wrong_pins"


def _count_wrong_pin(session: Session, failure: _WrongPin) -> int:
    """Add one wrong PIN to the card's count for the day; return the new count."""
    count = session.execute(
        sa.update(VoucherCard)
        .where(
            VoucherCard.id == failure.card_id,
            VoucherCard.pin_hash == failure.pin_hash,
            sa.or_(VoucherCard.failed_pin_day.is_(None), VoucherCard.failed_pin_day <= failure.day),
        )
        .values(
            failed_pin_count=sa.case(
                (VoucherCard.failed_pin_day == failure.day, VoucherCard.failed_pin_count + 1),
                else_=1,
            ),
            failed_pin_day=failure.day,
        )
        .returning(VoucherCard.failed_pin_count)
        .execution_options(synchronize_session=False)
    ).scalar()
    if count == MAX_WRONG_PINS:
        actor = SimpleNamespace(id=failure.actor_id, username=failure.actor_label)
        audit.record(
            "voucher_card.locked",
            object_type=VoucherCard.__tablename__,
            object_id=failure.card_id,
            after={"failed_pin_count": count, "day": failure.day.isoformat()},
            actor=actor,
        )
    failure.transaction = session.get_nested_transaction() or session.get_transaction()
    return count or 0


def _count_pending(session: Session) -> None:
    """Write again the wrong PINs that a rollback undid."""
    for failure in session.info.get(_PENDING, ()):
        if failure.transaction is None:
            _count_wrong_pin(session, failure)


def _undone_by(made_in: SessionTransaction | None, rolled_back: SessionTransaction) -> bool:
    while made_in is not None:
        if made_in is rolled_back:
            return True
        made_in = made_in.parent
    return False


@sa.event.listens_for(Session, "after_soft_rollback")
def _count_again_after_rollback(session: Session, previous_transaction: SessionTransaction):
    pending = session.info.get(_PENDING)
    if not pending:
        return
    for failure in pending:
        if _undone_by(failure.transaction, previous_transaction):
            failure.transaction = None
    # After the whole transaction is rolled back (what the request wrapper does on an
    # error), write them straight away, in the transaction the wrapper commits next. After a
    # savepoint's rollback the block that opened it is still closing, so they wait for the
    # next commit (or the next card use), see below.
    if previous_transaction.parent is None and session.is_active:
        try:
            _count_pending(session)
        except sa.exc.InvalidRequestError:
            pass  # inside a context manager that is still closing: the commit will do it


@sa.event.listens_for(Session, "before_commit")
def _count_before_commit(session: Session):
    _count_pending(session)


@sa.event.listens_for(Session, "after_commit")
def _forget_committed_counts(session: Session):
    session.info.pop(_PENDING, None)


def _voucher_this_month(resident_id: int, today: date) -> Voucher:
    voucher = db.session.scalar(
        sa.select(Voucher)
        .where(Voucher.resident_id == resident_id, Voucher.month == today.replace(day=1))
        .order_by(*LIVE_FIRST)  # a month may hold a revoked voucher and its re-issue
        .limit(1)
    )
    if voucher is None:
        raise NoVoucherThisMonth()
    check_voucher_usable(voucher, today)
    return voucher


def use_card(
    card_code: str,
    pin: str,
    *,
    user: User,
    today: date | None = None,
    now: datetime | None = None,
    _again: bool = False,
) -> tuple[Voucher, str]:
    """Check the card and its PIN; return this month's voucher and a digest for this use
    (unique per use: a card is used many times a month, unlike a rotating token)."""
    now = now or now_utc()
    today = today or local_today(now)
    _count_pending(db.session())  # an earlier wrong PIN whose savepoint was rolled back
    code = normalise_card_code(card_code)
    card = None
    if code is not None:
        card = db.session.scalar(
            sa.select(VoucherCard)
            .where(VoucherCard.card_code == code)
            .execution_options(populate_existing=True)
        )
    if card is None or card.status != "active":
        raise CardNotValid()
    if card.failed_pin_day == today and card.failed_pin_count >= MAX_WRONG_PINS:
        raise CardLocked()
    if not isinstance(pin, str) or not re.fullmatch(r"[0-9]{6}", pin.strip()):
        # Not a PIN at all (empty, a letter, five digits): a slip, not a guess; not counted.
        raise InvalidInput(details={"pin": TYPE_PIN_MESSAGE})
    # The attempt is taken, and committed on its own, before the PIN is compared: guesses
    # sent at once cannot all pass the lock check (card_attempts.py).
    attempt = card_attempts.reserve(card.id, card.pin_hash, today, MAX_WRONG_PINS)
    if attempt == card_attempts.STALE and not _again:
        return use_card(card_code, pin, user=user, today=today, now=now, _again=True)
    if attempt is not None:
        return _judge_reserved(card, code, pin.strip(), attempt, user=user, today=today, now=now)
    if not check_password_hash(card.pin_hash, pin.strip()):
        failure = _WrongPin(
            card_id=card.id,
            pin_hash=card.pin_hash,
            day=today,
            actor_id=user.id,
            actor_label=user.username,
            transaction=None,
        )
        session = db.session()
        count = _count_wrong_pin(session, failure)
        session.info.setdefault(_PENDING, []).append(failure)
        db.session.expire(card)
        if count >= MAX_WRONG_PINS:
            raise CardLocked()
        raise WrongPin(attempts_left=MAX_WRONG_PINS - count)
    # Guesses sent at the same moment all pass the lock check above before any is counted;
    # read the count again, row-locked, after the slow hash, so that a right guess arriving
    # behind five counted wrong ones is refused like any other.
    db.session.refresh(card, with_for_update=True)
    if card.failed_pin_day == today and card.failed_pin_count >= MAX_WRONG_PINS:
        raise CardLocked()
    if card.failed_pin_count:
        card.failed_pin_count = 0
        card.failed_pin_day = None
    return _record_use(card, code, user=user, today=today, now=now)


def _judge_reserved(
    card: VoucherCard, code: str, pin: str, attempt: int, *, user: User, today: date, now
) -> tuple[Voucher, str]:
    """Compare the PIN of an attempt already counted (``card_attempts.reserve``)."""
    if attempt in (card_attempts.LOCKED, card_attempts.STALE):
        raise CardLocked()
    pin_hash = card.pin_hash
    if not check_password_hash(pin_hash, pin):
        db.session.expire(card)  # counted on another connection
        if attempt >= MAX_WRONG_PINS:
            card_attempts.record_lock(card.id, attempt, today, user.id, user.username)
            raise CardLocked()
        raise WrongPin(attempts_left=MAX_WRONG_PINS - attempt)
    card_attempts.reset(card.id, pin_hash, today)
    db.session.expire(card)
    return _record_use(card, code, user=user, today=today, now=now)


def _record_use(
    card: VoucherCard, code: str, *, user: User, today: date, now
) -> tuple[Voucher, str]:
    voucher = _voucher_this_month(card.resident_id, today)
    digest = hashlib.sha256(f"card:{code}:{uuid.uuid4().hex}".encode("ascii")).hexdigest()
    db.session.add(
        TokenUse(token_digest=digest, voucher_id=voucher.id, used_by_user_id=user.id, used_at=now)
    )
    db.session.flush()
    return voucher, digest
