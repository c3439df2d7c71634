"""Redeeming a voucher at a provider, exactly once.

The steps, each its own unit of work:

1. ``check_in``: the staff member has scanned the elder's code; every refusal that does not
   depend on the price is checked here (provider certified, staff qualified, service in the
   voucher's scope, voucher of this month, active and not used up, elder alive, a home
   service checked in near the elder's home) and the proof of service starts (who, where,
   when). The scan's digest is unique, so the same scan submitted twice is one redemption.
2. ``set_price``: the price and any long-term-care insurance part; the split is computed.
3. ``hold``: the subsidy moves from the voucher's balance to ``held`` (a conditional UPDATE:
   two phones racing for the last yuan cannot both win) while the co-payment runs.
4. ``capture`` on success or ``release`` on failure. Both move the redemption out of
   ``pending_payment`` with a conditional UPDATE first, so whichever of the page, the webhook,
   polling or the reconciling job gets there first does it, and the others do nothing.

Cash (or nothing to pay) holds and captures in one transaction (``pay_cash``); card payments
go through ``vouchers.redemption.payments``, which commits between the gateway calls.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Protocol

import sqlalchemy as sa
from flask import g, has_app_context, has_request_context
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from eldercare import audit, stored_text
from eldercare.accounts import User, accounts_acting_for
from eldercare.db import db
from eldercare.errors import DomainError, InvalidInput, PermissionDenied
from eldercare.forms import yuan
from eldercare.notifications import enqueue, enqueue_many, notice, notice_messages
from eldercare.residents import District, Resident
from eldercare.timeutil import format_local, local_today, now_utc
from marketplace import bookings, catalogue
from marketplace.geo import haversine_m
from marketplace.models import Provider, Service
from marketplace.providers import provider_of, require_certified, staff_record
from marketplace.staff import staff_may_deliver
from vouchers.errors import (
    ElderNotEligible,
    InsufficientBalance,
    OutOfScope,
    RedemptionStateError,
    ReversalWindowClosed,
    StaffNotQualified,
    TooFarAway,
    VoucherNotUsable,
)
from vouchers.models import Redemption, Voucher, VoucherPolicy
from vouchers.pool import ledger, memos
from vouchers.pool.policy import pays_for, rules_for, scope_on
from vouchers.redemption import pricing

HOLD_TIMEOUT = timedelta(minutes=15)
# The one conflict check_in expects when it saves: the same scan saved a moment earlier.
SCAN_DIGEST_CONSTRAINT = "uq_redemptions_scan_digest"
CHECK_IN_ATTEMPTS = 3
REVIEW_DRAWS = 10_000  # a redemption's review draw is 0..9999 (basis points)


class SettlementGuardProtocol(Protocol):
    """What a reversal asks settlement (``vouchers.settlement.statements.guard`` sets the hook when
    settlement is registered; redemption never imports settlement)."""

    def is_settled(self, redemption: Redemption) -> bool:
        """Is it a line of an approved or paid statement? (Reads only, no lock: for pages;
        a decision asks ``before_reversal`` or ``hold_out`` under the locks.)"""

    def before_reversal(self, redemption: Redemption, actor: User | None = None) -> str | None:
        """Called with the redemption's row locked: "settled" (reverse as a clawback),
        "open" (its line left an unapproved statement) or None (in no statement)."""

    def hold_out(self, redemption: Redemption, actor: User | None = None) -> str | None:
        """Called with the redemption's row locked, as a flag is raised on it: "settled"
        (in an approved statement: it stays there), "open" (its line left an unapproved
        statement) or None (in no statement)."""

    def clawback(self, redemption: Redemption, actor: User, reason: str) -> None:
        """The books and the audit of a settled redemption's reversal."""


settlement_guard: SettlementGuardProtocol | None = None
# Set by vouchers.integrity (which this package may not import): the anomaly rules judged on
# a redemption in its capture's transaction, under the redemption's row lock.
anomaly_check: Callable[[Redemption], object] | None = None


def month_of(day: date) -> date:
    return day.replace(day=1)


def services_paid_for(provider: Provider, voucher: Voucher, day: date) -> list[Service]:
    """The provider's active services this voucher pays for on ``day``: what the scan page
    and the scanner app offer, by the rule ``check_in`` refuses the others with."""
    scope = scope_on(day).get(voucher.kind, frozenset())
    return [s for s in catalogue.services_of(provider) if s.active and s.category_code in scope]


def usable_problem(voucher: Voucher, today: date) -> str | None:
    """Why the voucher cannot be used today, or None."""
    if voucher.status == "revoked":
        return _l("This voucher has been revoked.")
    if voucher.status == "expired" or voucher.month < month_of(today):
        return _l("This voucher was for an earlier month and has expired.")
    if voucher.month > month_of(today):
        return _l("This voucher is for a later month and cannot be used yet.")
    if voucher.balance_fen <= 0:
        return _l("This month's voucher is used up.")
    return None


def require_alive(resident_id: int, today: date) -> None:
    """The elder's part of the check at redemption. POLICY: a loss of eligibility (a move,
    a new exclusion, a re-assessment below the programme's levels) stops vouchers from the
    next month, so this month's voucher stays usable; only a death voids it at once.
    Eligibility decides issuance (vouchers.issuance.monthly), never a single purchase. The death is
    read from the register itself, so a scan between the death and the feed's revocation
    (which runs every minute) is refused too."""
    resident = _keep(db.session.get(Resident, resident_id))
    if resident.date_of_death is not None and resident.date_of_death <= today:
        raise ElderNotEligible(
            _l("The register records the elder's death; the voucher can no longer be used."),
            details={"reasons": [_("The register records this person as deceased.")]},
        )


def _keep(obj):
    """Hold ``obj`` for the rest of the request. The session's identity map holds objects
    only weakly: the resident or service a check read would be gone, and read again, when
    the audit row or the answer needs it a moment later. Outside a request (jobs, the
    shell) nothing is held: a loop over many redemptions must not keep them all."""
    if obj is not None and has_request_context():
        g.setdefault("_redemption_rows", []).append(obj)
    return obj


def _district_by_id(district_id: int) -> str:
    return db.session.get(District, district_id).code


def _district_account(voucher: Voucher) -> str:
    return ledger.district_account_code(_district_by_id(voucher.district_id))


def _audit(action: str, redemption: Redemption, before: str | None, **after) -> None:
    resident = db.session.get(Resident, redemption.resident_id)  # loaded by then: no query
    audit.record(
        action,
        redemption,
        district_id=resident.district_id,
        before={"status": before} if before else None,
        after={"status": redemption.status, **after},
    )


def lock_row(redemption: Redemption) -> None:
    """The redemption's row, locked first in every money step on it (PostgreSQL: FOR NO
    KEY UPDATE, to the end of the transaction): the lock order of ``vouchers.pool.ledger``
    puts it before the settlement month row, its payment attempts, its voucher and the
    ledger accounts. NO KEY UPDATE excludes every other money step on the row as FOR UPDATE
    did, but not the key-share lock a foreign key takes: a settlement run adding the
    redemption's statement line (under the month lock a reversal waits for) never waits for
    it, so the two cannot deadlock. Pending changes to other rows are written after it,
    never before (no autoflush). On SQLite writers take turns anyway."""
    if db.session.get_bind().dialect.name != "postgresql":
        return
    with db.session.no_autoflush:
        db.session.execute(
            sa.select(Redemption.id)
            .where(Redemption.id == redemption.id)
            .with_for_update(key_share=True)
        )


# --------------------------------------------------------------------------- check-in


def check_in(
    voucher: Voucher,
    *,
    scan_digest: str,
    staff_user: User,
    service_id: int | None = None,
    booking_id: int | None = None,
    latitude: float | None = None,
    longitude: float | None = None,
    client_ip: str | None = None,
    device: str | None = None,
    now: datetime | None = None,
) -> Redemption:
    """``client_ip`` and ``device``: where the check-in came from
    (``vouchers.redemption.origin``), kept for the anomaly rule ``shared_device``."""
    now = now or now_utc()
    today = local_today(now)
    existing = _same_scan(scan_digest, staff_user)
    if existing is not None:
        return existing

    provider = provider_of(staff_user)
    require_certified(provider, today=today)
    staff = staff_record(staff_user)
    booking = None
    if booking_id is not None:
        booking = bookings.booking_of(provider.id, booking_id)
        todays = bookings.bookings_to_serve(provider.id, voucher.resident_id, today)
        if booking not in todays:
            raise InvalidInput(
                details={
                    "booking": _l("That booking is not an accepted booking of this elder today.")
                }
            )
        service_id = booking.service_id
    if service_id is None:
        raise InvalidInput(details={"service": _l("Choose the service you are delivering.")})
    service = _keep(catalogue.service_of(provider, service_id))
    if not service.active:
        raise InvalidInput(details={"service": _l("That service is withdrawn from sale.")})
    if not staff_may_deliver(staff, service.category, today):
        raise StaffNotQualified()

    problem = usable_problem(voucher, today)
    if problem:
        raise VoucherNotUsable(problem)
    in_scope = pays_for(voucher.kind, service.category_code, today)  # what the scan page offers
    rules = rules_for(voucher, today)  # the same version: in force on the day of the service
    if not in_scope:
        raise OutOfScope()
    require_alive(voucher.resident_id, today)

    distance = _check_location(voucher, service, latitude, longitude, rules)
    # Every check above only reads. Only now the voucher as it stands, share-locked
    # (PostgreSQL) to the end of the check-in: a revocation or expiry in progress is waited
    # for and then seen, and cannot start until the check-in commits; checked again. The
    # check-in locks nothing else it did not create (the lock order is in vouchers.pool.ledger).
    db.session.refresh(voucher, with_for_update={"read": True, "of": Voucher})
    problem = usable_problem(voucher, today)
    if problem:
        raise VoucherNotUsable(problem)
    redemption = Redemption(
        voucher_id=voucher.id,
        resident_id=voucher.resident_id,
        provider_id=provider.id,
        staff_user_id=staff_user.id,
        service_id=service.id,
        booking_id=booking.id if booking else None,
        scan_digest=scan_digest,
        status="checked_in",
        checked_in_at=now,
        check_in_latitude=latitude,
        check_in_longitude=longitude,
        check_in_distance_m=distance,
        check_in_ip=client_ip[:45] if client_ip else None,
        check_in_device=device[:64] if device else None,
        review_draw=secrets.randbelow(REVIEW_DRAWS),  # the review sample's draw
    )
    for attempt in range(1, CHECK_IN_ATTEMPTS + 1):
        try:
            with db.session.begin_nested():
                db.session.add(redemption)
            break
        except sa.exc.IntegrityError as error:
            # The same scan submitted at the same moment from a second tab: use the first.
            # Any other constraint is a real error, and so is a conflict that keeps coming.
            if not _is_same_scan_conflict(error) or attempt == CHECK_IN_ATTEMPTS:
                raise
            existing = _same_scan(scan_digest, staff_user)
            if existing is not None:
                return existing
    _audit("redemption.check_in", redemption, None, service=service.id, distance_m=distance)
    return redemption


def _same_scan(scan_digest: str, staff_user: User) -> Redemption | None:
    """The redemption this scan already started, if any (only for the phone that did)."""
    existing = db.session.scalar(sa.select(Redemption).where(Redemption.scan_digest == scan_digest))
    if existing is not None and existing.staff_user_id != staff_user.id:
        raise RedemptionStateError(_l("This code has already been used on another phone."))
    return existing


def _is_same_scan_conflict(error: sa.exc.IntegrityError) -> bool:
    diag = getattr(error.orig, "diag", None)
    if diag is not None:  # psycopg names the constraint
        return diag.constraint_name == SCAN_DIGEST_CONSTRAINT
    return "redemptions.scan_digest" in str(error.orig)  # SQLite names the column


def _check_location(voucher, service, latitude, longitude, rules) -> int | None:
    has_location = all(
        isinstance(v, int | float) and not isinstance(v, bool) for v in (latitude, longitude)
    )
    if has_location and not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        raise InvalidInput(details={"location": _l("The phone's location is not valid.")})
    # Where the service is delivered is the provider's word on the service (issue 14 item 3):
    # only a home visit is proved by the phone's location near the elder's home.
    if not service.is_home_visit:
        return None
    if not has_location:
        raise InvalidInput(
            details={
                "location": _l(
                    "A home service needs the phone's location at check-in. "
                    "Allow location for this page and try again."
                )
            }
        )
    resident = db.session.get(Resident, voucher.resident_id)
    if resident.latitude is None or resident.longitude is None:
        raise TooFarAway(
            _l(
                "The elder's home has no location on record, so a home visit cannot be "
                "verified. The district office can add it."
            )
        )
    distance = round(haversine_m(latitude, longitude, resident.latitude, resident.longitude))
    limit = rules.evv_max_distance_m
    if distance > limit:
        raise TooFarAway(
            _l(
                "You are %(distance)s m from the elder's home; a home service must be "
                "checked in within %(limit)s m of it.",
                distance=distance,
                limit=limit,
            )
        )
    return distance


def check_out(redemption: Redemption, *, staff_user: User, now: datetime | None = None) -> None:
    _require_own(redemption, staff_user)
    if redemption.checked_out_at is None:
        redemption.checked_out_at = now or now_utc()
        _audit("redemption.check_out", redemption, redemption.status)


def _require_own(redemption: Redemption, staff_user: User) -> None:
    staff = staff_record(staff_user)
    if staff is None or staff.provider_id != redemption.provider_id:
        raise PermissionDenied(_l("This redemption belongs to another provider."))


# --------------------------------------------------------------------------- price


def set_price(
    redemption: Redemption,
    *,
    price_fen: int,
    insurance_fen: int = 0,
    quantity: int = 1,
    staff_user: User,
    now: datetime | None = None,
) -> pricing.Split:
    """Record the price of ``quantity`` units and the insurance part; the price is at most
    the quantity times the listed (or booked) unit price. The split uses the voucher's
    balance now and the ratio in force on the day of the service (the check-in's day)."""
    now = now or now_utc()
    _require_own(redemption, staff_user)
    if redemption.status != "checked_in":
        raise RedemptionStateError()
    listed = _listed_price(redemption, now)
    # As it stands now: another phone may have spent it since the check-in.
    voucher = _keep(db.session.get(Voucher, redemption.voucher_id, populate_existing=True))
    problem = usable_problem(voucher, local_today(now))
    if problem:
        raise VoucherNotUsable(problem)
    split = pricing.split_units(
        quantity,
        listed,
        price_fen,
        insurance_fen,
        ratio_bp=rules_for(voucher, service_day(redemption)).ratio_bp,
        remaining_fen=voucher.balance_fen,
    )
    if split.subsidy_fen == 0:
        raise InvalidInput(
            details={"insurance": _l("Nothing is left for the voucher to pay at this price.")}
        )
    if redemption.payment_intent_id:
        # A card was tried at an earlier price and failed: the next try needs a new intent
        # for the new co-payment, never the old one's amount.
        redemption.payment_intent_id = None
        redemption.idempotency_key = None
    # Only now, right before the redemption row is written (the payment may follow at once).
    lock_row(redemption)
    redemption.quantity = split.quantity
    redemption.price_fen = split.price_fen
    redemption.insurance_fen = split.insurance_fen
    redemption.subsidy_fen = split.subsidy_fen
    redemption.copay_fen = split.copay_fen
    redemption.ratio_bp = split.ratio_bp
    db.session.flush()
    return split


def _listed_price(redemption: Redemption, now: datetime) -> int:
    if redemption.booking_id is not None:
        return bookings.booking_of(redemption.provider_id, redemption.booking_id).price_fen
    return catalogue.price_on(redemption.service_id, now)


# --------------------------------------------------------------------------- money


def _move_status(redemption: Redemption, source: str, target: str, **values) -> bool:
    """The exactly-once gate: only one transaction moves a redemption out of ``source``."""
    row = db.session.execute(
        sa.update(Redemption)
        .where(Redemption.id == redemption.id, Redemption.status == source)
        .values(status=target, **values)
        .returning(*_REDEMPTION_COLUMNS.values())
        .execution_options(synchronize_session=False)
    ).first()
    if row is None:
        db.session.refresh(redemption)  # as whoever moved it left it
        return False
    _set_loaded(redemption, _REDEMPTION_COLUMNS, row)  # the row as it is now, fields and all
    return True


def _columns(model) -> dict[str, sa.Column]:
    return {attr.key: attr.columns[0] for attr in sa.inspect(model).column_attrs}


_REDEMPTION_COLUMNS = _columns(Redemption)


def _set_loaded(obj, columns: dict[str, sa.Column], row) -> None:
    """Put what an UPDATE ... RETURNING gave back into the loaded object, as a refresh
    would, without a second statement."""
    for (key, _column), value in zip(columns.items(), row, strict=True):
        set_committed_value(obj, key, value)


def _update_voucher(voucher_id: int, condition, **values) -> bool:
    """A conditional UPDATE of a voucher's money; the loaded voucher, if any, is given the
    row's new balances (RETURNING), so nothing reads it again."""
    row = db.session.execute(
        sa.update(Voucher)
        .where(Voucher.id == voucher_id, *condition)
        .values(**values)
        .returning(Voucher.balance_fen, Voucher.held_fen)
        .execution_options(synchronize_session=False)
    ).first()
    if row is None:
        return False
    loaded = db.session.identity_map.get(identity_key(Voucher, voucher_id))
    if loaded is not None:
        set_committed_value(loaded, "balance_fen", row.balance_fen)
        set_committed_value(loaded, "held_fen", row.held_fen)
    return True


def _post(kind: str, memo: str, lines, *, cause, actor_id=None, keep=()) -> None:
    """``ledger.post``, keeping ``keep`` loaded. ``post`` expires the whole session to have
    the balances it moved in SQL read again; the objects in ``keep`` are not among them
    (their rows are current: the UPDATEs above returned them), so their loaded values are
    put back instead of being read again, one statement each."""
    kept = []
    for obj in keep:
        if obj is None or not sa.inspect(obj).persistent:
            continue
        state = sa.inspect(obj)
        attributes = (a.key for a in state.mapper.attrs)  # columns, and the rows they name
        kept.append((obj, {key: state.dict[key] for key in attributes if key in state.dict}))
    ledger.post(kind, memo, lines, cause=cause, actor_id=actor_id)
    for obj, values in kept:
        for key, value in values.items():
            set_committed_value(obj, key, value)


def _loaded(redemption: Redemption) -> tuple:
    """What a money step has loaded and does not change in SQL, for ``_post``."""
    token = g.get("api_token") if has_app_context() else None
    loaded = db.session.identity_map
    voucher = loaded.get(identity_key(Voucher, redemption.voucher_id))
    resident = loaded.get(identity_key(Resident, redemption.resident_id))
    service = loaded.get(identity_key(Service, redemption.service_id))
    return (
        redemption,
        voucher,
        voucher and loaded.get(identity_key(VoucherPolicy, voucher.policy_id)),
        resident,
        resident and loaded.get(identity_key(District, resident.district_id)),
        service,
        service and loaded.get(identity_key(Provider, service.provider_id)),
        token,
        token and token.user,
    )


def _check_payable(redemption: Redemption, now: datetime) -> Voucher:
    """The refusals of a payment, before any lock (reads only); the voucher."""
    if redemption.subsidy_fen is None:
        raise RedemptionStateError(_l("Enter the price first."))
    voucher = _keep(redemption.voucher)
    today = local_today(now)
    problem = usable_problem(voucher, today)
    if problem:
        raise VoucherNotUsable(problem)
    # Checked again at payment, not only at check-in: a provider suspended, or an elder who
    # died, since the morning's check-in must not be paid for.
    service = _keep(catalogue.service_by_id(redemption.service_id))
    require_certified(_keep(service.provider), today=today)
    require_alive(redemption.resident_id, today)
    return voucher


def hold(redemption: Redemption, *, method: str, now: datetime | None = None) -> None:
    """Take the subsidy off the voucher's balance while the co-payment runs."""
    now = now or now_utc()
    voucher = _check_payable(redemption, now)
    # The checks only read; the locks are taken from here on, right before the writes.
    lock_row(redemption)  # before the voucher row and the accounts (see vouchers.pool.ledger)
    if not _move_status(
        redemption, "checked_in", "pending_payment", held_at=now, payment_method=method
    ):
        raise RedemptionStateError()
    amount = redemption.subsidy_fen
    if not _update_voucher(
        voucher.id,
        (Voucher.status == "active", Voucher.balance_fen >= amount),
        balance_fen=Voucher.balance_fen - amount,
        held_fen=Voucher.held_fen + amount,
    ):
        raise InsufficientBalance()
    _audit("redemption.hold", redemption, "checked_in", subsidy_fen=amount, method=method)
    _post(
        "hold",
        memos.memo("ledger.hold", redemption=redemption.id),
        [("vouchers:outstanding", -amount), ("vouchers:held", amount)],
        cause=("redemptions", redemption.id),
        actor_id=redemption.staff_user_id,
        keep=_loaded(redemption),
    )


def capture(redemption: Redemption, *, now: datetime | None = None) -> bool:
    """The co-payment succeeded: the held subsidy is redeemed. False if already settled."""
    lock_row(redemption)  # before the voucher row and the accounts (see vouchers.pool.ledger)
    now = now or now_utc()
    if not _move_status(redemption, "pending_payment", "redeemed", redeemed_at=now):
        return False
    amount = redemption.subsidy_fen
    _take_held(redemption.voucher_id, amount)
    _audit("redemption.capture", redemption, "pending_payment", subsidy_fen=amount)
    lines = [("vouchers:held", -amount), ("redeemed:unsettled", amount)]
    copay = redemption.copay_fen or 0
    if redemption.payment_method == "card" and copay > 0:
        # The elder's card co-payment is now money the gateway holds for the platform, owed
        # on to the provider at settlement (both accounts sharded: no wait on the ledger).
        lines += [("copay:card", -copay), ("gateway:clearing", copay)]
    _post(
        "capture",
        memos.memo("ledger.capture", redemption=redemption.id),
        lines,
        cause=("redemptions", redemption.id),
        actor_id=redemption.staff_user_id,
        keep=_loaded(redemption),
    )
    _complete_booking(redemption, now)
    _tell_family(redemption)
    if anomaly_check is not None:
        anomaly_check(redemption)  # a finding holds it out of settlement from now
    return True


def release(
    redemption: Redemption,
    *,
    reason: str,
    retry: bool = False,
    now: datetime | None = None,
) -> bool:
    """The co-payment failed or timed out: the held subsidy goes back. With ``retry`` the
    redemption returns to the priced step (a declined card; try another or cash), otherwise
    it ends as failed. False if already settled."""
    lock_row(redemption)  # before the voucher row and the accounts (see vouchers.pool.ledger)
    target = "checked_in" if retry else "failed"
    why = stored_text.clip(reason, 200)  # a code and parameters, or a person's words
    if not _move_status(redemption, "pending_payment", target, failure_reason=why, held_at=None):
        return False
    amount = redemption.subsidy_fen
    _take_held(redemption.voucher_id, amount)
    back_to = _give_back(redemption.voucher_id, amount, now or now_utc())
    ledger.post(
        "release",
        # The reason is the platform's own stored text (vouchers.redemption.failures).
        memos.memo("ledger.release", redemption=redemption.id, reason=stored_text.nested(reason)),
        [("vouchers:held", -amount), (back_to, amount)],
        cause=("redemptions", redemption.id),
    )
    _audit("redemption.release", redemption, "pending_payment", reason=reason)
    return True


def _give_back(voucher_id: int, amount: int, now: datetime) -> str:
    """Subsidy coming back (a failed payment, a reversal) goes onto the voucher while it can
    still be spent this month, otherwise to the district it was reserved from. The account
    it went to, for the journal line.

    One conditional UPDATE decides and writes: a revocation or expiry committing at the same
    moment makes it find no active voucher (PostgreSQL re-checks the condition on the row
    the other transaction left), so the money goes to the district and never onto a closed
    voucher, where nobody could spend or expire it."""
    given = db.session.execute(
        sa.update(Voucher)
        .where(
            Voucher.id == voucher_id,
            Voucher.status == "active",
            Voucher.month == month_of(local_today(now)),
        )
        .values(balance_fen=Voucher.balance_fen + amount)
        .execution_options(synchronize_session=False)
    ).rowcount
    voucher = db.session.get(Voucher, voucher_id)
    db.session.refresh(voucher)
    return "vouchers:outstanding" if given == 1 else _district_account(voucher)


def _take_held(voucher_id: int, amount: int) -> None:
    taken = _update_voucher(
        voucher_id, (Voucher.held_fen >= amount,), held_fen=Voucher.held_fen - amount
    )
    if not taken:  # the ledger and the voucher disagree: stop rather than guess
        raise RuntimeError(f"voucher {voucher_id} holds less than {amount}")


def pay_cash(redemption: Redemption, *, staff_user: User, now: datetime | None = None) -> None:
    """The elder paid the co-payment in cash (or there is nothing to pay): redeem at once."""
    _require_own(redemption, staff_user)
    if redemption.status == "redeemed":
        return  # the same form submitted twice
    method = "cash" if (redemption.copay_fen or 0) > 0 else "none"
    _check_payable(redemption, now or now_utc())  # hold checks again from what is loaded
    hold(redemption, method=method, now=now)
    capture(redemption, now=now)


def new_idempotency_key(redemption: Redemption) -> str:
    if redemption.idempotency_key is None:
        redemption.idempotency_key = f"redemption-{redemption.id}-{uuid.uuid4().hex[:12]}"
        db.session.flush()
    return redemption.idempotency_key


def stale_holds(now: datetime | None = None) -> list[Redemption]:
    cutoff = (now or now_utc()) - HOLD_TIMEOUT
    return list(
        db.session.scalars(
            sa.select(Redemption)
            .where(Redemption.status == "pending_payment", Redemption.held_at < cutoff)
            .order_by(Redemption.id)
        )
    )


def cancel(redemption: Redemption, *, staff_user: User) -> None:
    """Abandon a check-in before any money moved (the elder left, the wrong elder scanned)."""
    lock_row(redemption)
    _require_own(redemption, staff_user)
    if not _move_status(redemption, "checked_in", "cancelled"):
        raise RedemptionStateError()
    _audit("redemption.cancel", redemption, "checked_in")


# --------------------------------------------------------------------------- reversal


def service_day(redemption: Redemption) -> date:
    """The day of the service, whose policy version gives its ratio, scope and rules."""
    return local_today(redemption.checked_in_at)


def reversal_deadline(redemption: Redemption) -> date | None:
    if redemption.redeemed_at is None:
        return None
    days = rules_for(redemption.voucher, service_day(redemption)).reversal_window_days
    return local_today(redemption.redeemed_at) + timedelta(days=days)


def may_reverse(user: User, redemption: Redemption) -> bool:
    if user.has_role("bureau_officer", "bureau_approver"):
        return True
    staff = staff_record(user)
    return staff is not None and staff.provider_id == redemption.provider_id


def is_bureau(user: User) -> bool:
    return user.has_role("bureau_officer", "bureau_approver")


def check_reversal(redemption: Redemption, *, actor: User, reason: str, now: datetime) -> str:
    """Refuse a reversal that may not happen (before any refund is asked for); the cleaned
    reason otherwise."""
    if not may_reverse(actor, redemption):
        raise PermissionDenied(_l("Only the provider or the bureau can reverse a redemption."))
    reason = (reason or "").strip() if isinstance(reason, str) else ""
    if not reason:
        raise InvalidInput(details={"reason": _l("Say why the redemption is reversed.")})
    if redemption.status != "redeemed":
        raise RedemptionStateError(_l("Only a completed redemption can be reversed."))
    # After the window only the bureau may reverse (a settled redemption then becomes a
    # clawback from the provider); providers only within it.
    if local_today(now) > reversal_deadline(redemption) and not is_bureau(actor):
        raise ReversalWindowClosed()
    return reason


def reverse(
    redemption: Redemption,
    *,
    actor: User,
    reason: str,
    refund_card: Callable[[], None] | None = None,
    now: datetime | None = None,
) -> bool:
    """Undo a redemption within the policy window (the bureau: after it too). A redemption
    whose statement is already approved is clawed back from the provider instead
    (``settlement_guard``): nothing goes back onto the voucher and its card co-payment is
    not refunded (the provider was paid it). Otherwise, given ``refund_card`` (the caller,
    ``vouchers.redemption.payments.reverse``, records its decision in it, at its place in
    the lock order: the payment attempts come before the voucher and the ledger, and
    refunds at the gateway after the commit), the card co-payment's refund is booked here.
    Both are decided under the same locks as settlement's (the redemption's row, the month,
    the statement), so an approval either comes first (settled: no refund) or sees the line
    gone (never both). Returns whether the card co-payment is to be refunded."""
    lock_row(redemption)  # before the voucher row and the accounts (see vouchers.pool.ledger)
    now = now or now_utc()
    reason = check_reversal(redemption, actor=actor, reason=reason, now=now)
    settled = settlement_guard is not None and (
        settlement_guard.before_reversal(redemption, actor) == "settled"
    )
    if not _move_status(
        redemption,
        "redeemed",
        "reversed",
        reversed_at=now,
        reversed_by_user_id=actor.id,
        reversal_reason=reason[:2000],
    ):
        raise RedemptionStateError(_l("Only a completed redemption can be reversed."))
    if settled:
        settlement_guard.clawback(redemption, actor, reason)
        return False
    refunded = redemption.copay_fen or 0
    refunding = bool(refund_card and redemption.payment_method == "card" and refunded)
    if refunding:
        refund_card()
    amount = redemption.subsidy_fen
    back_to = _give_back(redemption.voucher_id, amount, now)
    lines = [("redeemed:unsettled", -amount), (back_to, amount)]
    if refunding:
        # The co-payment goes back to the elder's card out of the gateway's clearing.
        lines += [("gateway:clearing", -refunded), ("copay:card", refunded)]
    ledger.post(
        "reverse",
        memos.memo("ledger.reverse", redemption=redemption.id),
        lines,
        cause=("redemptions", redemption.id),
        actor_id=actor.id,
    )
    _audit("redemption.reverse", redemption, "redeemed", reason=reason, to=back_to)
    _tell_family_of_reversal(redemption, back_on_voucher=back_to == "vouchers:outstanding")
    return refunding


# --------------------------------------------------------------------------- telling


def _complete_booking(redemption: Redemption, now: datetime) -> None:
    if redemption.booking_id is None:
        return
    booking = bookings.booking_of(redemption.provider_id, redemption.booking_id)
    if booking.status == "accepted" and now >= booking.slot_start:
        staff_user = db.session.get(User, redemption.staff_user_id)
        try:
            with db.session.begin_nested():
                bookings.complete(booking, staff_user, now=now)
        except DomainError:
            # The staff member has left since: the provider marks it done; the money is
            # redeemed either way.
            pass


# The family's notices (stored as codes, said in the reader's language: eldercare.notifications).
notice_messages(
    "redemption.used",
    _l("Voucher used: %(amount)s"),
    _l(
        "%(amount)s of the voucher was used at %(provider)s for %(service)s "
        "at %(when)s; the elder paid %(copay)s."
    ),
)
notice_messages(
    "redemption.used_many",
    _l("Voucher used: %(amount)s"),
    _l(
        "%(amount)s of the voucher was used at %(provider)s for "
        "%(quantity)s × %(service)s (%(price)s in all) at %(when)s; the elder "
        "paid %(copay)s."
    ),
)
notice_messages(
    "redemption.reversed",
    _l("Voucher amount given back: %(amount)s"),
    _l(
        "%(amount)s of the voucher was given back: %(service)s at "
        "%(provider)s on %(day)s was reversed (%(reason)s). It can be used "
        "again this month."
    ),
)
notice_messages(
    "redemption.reversed_to_programme",
    _l("Voucher amount given back: %(amount)s"),
    _l(
        "%(amount)s of the voucher was given back: %(service)s at "
        "%(provider)s on %(day)s was reversed (%(reason)s). The voucher can "
        "no longer be used, so the amount went back to the programme."
    ),
)


def _tell_family(redemption: Redemption) -> int:
    """ "¥X of the voucher was used at Y for Z at T" (with the quantity when more than one
    unit was bought), to everyone who acts for the elder."""
    recipients = accounts_acting_for(redemption.resident_id)
    if not recipients:
        return 0
    service = catalogue.service_by_id(redemption.service_id)
    when = format_local(redemption.redeemed_at)
    values = {
        "amount": yuan(redemption.subsidy_fen),
        "copay": yuan(redemption.copay_fen),
        "provider": service.provider.name,
        "service": service.title,
        "when": when,
        "quantity": redemption.quantity or 1,
        "price": yuan(redemption.price_fen),
    }
    kind = "redemption.used" if values["quantity"] == 1 else "redemption.used_many"
    subject, body = notice(kind, **values)
    return enqueue_many(
        [(user.id, subject, body, f"redemption:{redemption.id}:{user.id}") for user in recipients]
    )


def _tell_family_of_reversal(redemption: Redemption, *, back_on_voucher: bool) -> int:
    """ "¥X of the voucher was given back: the service at Y on D was reversed (reason)", to
    everyone who acts for the elder, through the same outbox as the redemption notice."""
    service = catalogue.service_by_id(redemption.service_id)
    values = {
        "amount": yuan(redemption.subsidy_fen),
        "provider": service.provider.name,
        "service": service.title,
        "day": service_day(redemption).isoformat(),
        "reason": redemption.reversal_reason,
    }
    kind = "redemption.reversed" if back_on_voucher else "redemption.reversed_to_programme"
    subject, body = notice(kind, **values)
    return sum(
        enqueue(user.id, subject, body, f"reversal:{redemption.id}:{user.id}")
        for user in accounts_acting_for(redemption.resident_id)
    )
