"""Issuing the monthly vouchers, expiring them at month end, revoking them when an elder stops
qualifying.

Money: issuing reserves the voucher's face value from the elder's district allocation
(``district:<code>:available`` -> ``vouchers:outstanding``) in the same savepoint as the
Voucher row, so a voucher exists exactly when its money was reserved. Expiry and revocation
send what is left back to the district the voucher came from.

One live voucher per elder per month is a database constraint (a partial unique index: a
revoked voucher does not count); a second run, a second scheduler or the eligibility feed
racing the monthly run ends in that constraint, never in a second voucher.

Re-issue after a revocation: a voucher revoked for a loss of eligibility (a move, an
exclusion, a result below the programme's levels) lets a new voucher be issued for its month
once the elder is eligible again (a move recorded in error, an exclusion lifted, a disputed
result overturned); one revoked for death never does, and one revoked by a bureau decision
only through the bureau's own manual issue. The new voucher's face value is the month's cap
less what the revoked ones of that month already paid (redeemed or being paid), so an elder
never gets more than one cap in a month.

The face value is the cap of the policy version in force on the day of issue (the month's
first day when issued ahead); it never changes afterwards. The ratio and scope of each
service are the version in force on the day of the service (vouchers.policy.rules_for).

Issuing, expiring and revoking transactions also take one PostgreSQL advisory lock before
they touch any row (``serialize_issuance``), so they queue instead of deadlocking on each
other's rows. Against payments, the row lock order of ``vouchers.ledger`` holds: expiry and
revocation lock all the vouchers of a transaction, in id order, before they move any money.

Priority when a district's money cannot cover everyone (documented for the bureau): complete,
then severe, then moderate; within a level, whoever has waited longer (``waiting_since``, the
approval date of the first assessment that made the elder eligible); ties by resident id.
The priority is strict within a district: once an elder cannot be covered, nobody after them
in that district is issued in that run, so money never goes to someone lower on the list
over the head of someone higher. Everyone left out gets a Shortfall row; a rerun after a
top-up issues them in the same order and marks the shortfall resolved.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from assessment.eligibility import Eligibility, candidates_on, eligibility_on
from eldercare import audit
from eldercare.accounts import User
from eldercare.db import db
from eldercare.errors import InvalidInput
from eldercare.residents import District, Resident
from eldercare.timeutil import local_today, now_utc
from vouchers import ledger
from vouchers.errors import InsufficientFunds
from vouchers.kinds import kind_for, kind_of_month
from vouchers.models import LIVE_FIRST, Redemption, Shortfall, Voucher
from vouchers.policy import policy_on

LEVEL_PRIORITY = {"complete": 0, "severe": 1, "moderate": 2, "mild": 3, "intact": 4}
ISSUE_REASONS = ("monthly", "eligibility", "manual")
# death: at once, from the month of death. The others stop vouchers from the next month.
REVOKE_REASONS = (
    "death",
    "moved_out",
    "exclusion",
    "assessment_below_threshold",
    "bureau_decision",
)
# A voucher revoked for one of these does not stop a new one for its month once the elder is
# eligible again; death is final, and a bureau decision is undone only by a manual issue.
REISSUE_AFTER = ("moved_out", "exclusion", "assessment_below_threshold")
REISSUE_AFTER_MANUAL = (*REISSUE_AFTER, "bureau_decision")
OUTSTANDING = "vouchers:outstanding"
# Any constant works; it names the advisory lock that queues issuing transactions.
_ISSUANCE_LOCK_KEY = 8_661_202_501

Progress = Callable[[int], None]


# --- months ---------------------------------------------------------------------------


def month_of(day: date) -> date:
    return day.replace(day=1)


def next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def previous_month(month: date) -> date:
    return date(month.year - (month.month == 1), (month.month - 2) % 12 + 1, 1)


def _check_issuable_month(month: date) -> date:
    """Vouchers are issued for the current month or, ahead of the 1st, the next one: a
    voucher is valid only in its own month, so a past month's would be void on arrival."""
    current = month_of(local_today())
    if not isinstance(month, date) or month.day != 1:
        raise InvalidInput(details={"month": _l("Give the month as YYYY-MM.")})
    if month not in (current, next_month(current)):
        raise InvalidInput(
            details={"month": _l("Vouchers are issued for the current or the next month.")}
        )
    return month


def issuance_day(month: date) -> date:
    """The day eligibility is judged for a month's voucher: its first day, or today when the
    month has already begun (an elder who died on the 3rd gets no voucher on the 10th)."""
    return max(month, local_today())


# --- issuing ----------------------------------------------------------------------------


def serialize_issuance() -> None:
    # Taken before any row is touched and held to the end of the transaction: a monthly run
    # commits every few hundred elders, and the eligibility feed or a second run waits for
    # that batch instead of locking a row the batch needs next. SQLite has one writer at a
    # time anyway.
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(sa.select(sa.func.pg_advisory_xact_lock(_ISSUANCE_LOCK_KEY)))


def _blocking(reason: str = "monthly"):
    """The vouchers that stop a new one for their month: every live one, and a revoked one
    unless it was revoked for a loss of eligibility (or, for a manual issue, by the
    bureau)."""
    reissuable = REISSUE_AFTER_MANUAL if reason == "manual" else REISSUE_AFTER
    return sa.or_(
        Voucher.status != "revoked",
        Voucher.revoked_reason.is_(None),
        Voucher.revoked_reason.not_in(reissuable),
    )


def _voucher_of(resident_id: int, month: date, reason: str = "monthly") -> Voucher | None:
    """The voucher that stops a new one for ``month`` (the live one first), or None."""
    return db.session.scalar(
        sa.select(Voucher)
        .where(Voucher.resident_id == resident_id, Voucher.month == month, _blocking(reason))
        .order_by(*LIVE_FIRST)
        .limit(1)
    )


def _paid_by_revoked(resident_id: int, month: date) -> int:
    """What the elder's revoked vouchers of ``month`` paid or are paying: a re-issued
    voucher covers only the rest of the month's cap."""
    # int(): PostgreSQL sums a bigint column as numeric.
    return int(
        db.session.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(Redemption.subsidy_fen), 0))
            .join(Voucher, Voucher.id == Redemption.voucher_id)
            .where(
                Voucher.resident_id == resident_id,
                Voucher.month == month,
                Voucher.status == "revoked",
                Redemption.status.in_(("redeemed", "pending_payment")),
            )
        )
    )


def _actor(actor_id: int | None) -> User | None:
    return db.session.get(User, actor_id) if actor_id is not None else None


@dataclass
class IssueOutcome:
    status: str  # issued, already_issued, not_eligible, left_out
    voucher: Voucher | None = None
    needed_fen: int = 0
    level: str | None = None


def _face_value(resident_id: int, month: date, level: str | None):
    """(kind, policy) of the voucher this elder would get, or None when the voucher policy
    of the elder's kind does not cover the level. The version in force on the day of issue
    decides (the month's first day when issued ahead)."""
    # The month's first voucher fixed its kind: a re-issue after a revocation keeps it,
    # whatever was set since (a change applies from the next month).
    kind = kind_of_month(resident_id, month) or kind_for(resident_id)
    policy = policy_on(kind, issuance_day(month))
    if level not in policy.level_set:
        return None
    return kind, policy


def _record_shortfall(resident: Resident, month: date, level: str, needed_fen: int) -> None:
    found = db.session.scalar(
        sa.select(Shortfall).where(Shortfall.month == month, Shortfall.resident_id == resident.id)
    )
    if found is not None:
        if found.resolved_at is None:
            found.level, found.needed_fen = level, needed_fen
        return
    try:
        with db.session.begin_nested():
            db.session.add(
                Shortfall(
                    month=month,
                    resident_id=resident.id,
                    district_id=resident.district_id,
                    level=level,
                    needed_fen=needed_fen,
                )
            )
    except sa.exc.IntegrityError:
        pass  # another run recorded the same shortfall a moment ago


def try_issue(
    resident_id: int,
    month: date,
    *,
    actor_id: int | None,
    reason: str,
    eligibility: Eligibility | None = None,
    district_exhausted: bool = False,
) -> IssueOutcome:
    """``issue_for`` with the outcome spelled out; the month is the caller's to check.
    ``eligibility`` spares a second check when the caller just made one for the same day;
    ``district_exhausted`` records the elder as left out without trying (strict priority)."""
    existing = _voucher_of(resident_id, month, reason)
    if existing is not None:
        return IssueOutcome("already_issued", existing)
    resident = db.session.get(Resident, resident_id)
    if resident is None:
        return IssueOutcome("not_eligible")
    if eligibility is None:
        eligibility = eligibility_on(resident.id, issuance_day(month))
    if not eligibility.eligible:
        return IssueOutcome("not_eligible")
    terms = _face_value(resident.id, month, eligibility.level)
    if terms is None:
        return IssueOutcome("not_eligible", level=eligibility.level)
    kind, policy = terms
    face = policy.monthly_cap_fen - _paid_by_revoked(resident.id, month)
    if face <= 0:
        return IssueOutcome("already_issued")  # the month's cap was spent before the revocation
    serialize_issuance()
    if district_exhausted:
        _record_shortfall(resident, month, eligibility.level, face)
        return IssueOutcome("left_out", needed_fen=face, level=eligibility.level)
    district = db.session.get(District, resident.district_id)
    account_code = ledger.district_account_code(district.code)
    ledger.account(account_code, create_name=f"{district.name_zh} allocation")
    try:
        with db.session.begin_nested():
            voucher = Voucher(
                resident_id=resident.id,
                month=month,
                kind=kind,
                policy_id=policy.id,
                district_id=resident.district_id,
                face_value_fen=face,
                balance_fen=face,
                held_fen=0,
                status="active",
            )
            db.session.add(voucher)
            db.session.flush()  # the unique (resident, month) constraint speaks here
            audit.record(
                "voucher.issue",
                voucher,
                district_id=resident.district_id,
                after={
                    "month": month.strftime("%Y-%m"),
                    "kind": kind,
                    "face_value_fen": face,
                    "level": eligibility.level,
                    "reason": reason,
                },
                actor=_actor(actor_id),
            )
            ledger.post(
                "issue",
                f"voucher {month:%Y-%m} resident {resident.id}",
                [(account_code, -face), (OUTSTANDING, face)],
                cause=("vouchers", voucher.id),
                actor_id=actor_id,
            )
            voucher_id = voucher.id
    except sa.exc.IntegrityError:
        existing = _voucher_of(resident.id, month, reason)
        if existing is None:
            raise
        return IssueOutcome("already_issued", existing)
    except InsufficientFunds:
        _record_shortfall(resident, month, eligibility.level, face)
        return IssueOutcome("left_out", needed_fen=face, level=eligibility.level)
    db.session.execute(
        sa.update(Shortfall)
        .where(
            Shortfall.month == month,
            Shortfall.resident_id == resident.id,
            Shortfall.resolved_at.is_(None),
        )
        .values(resolved_at=now_utc())
        .execution_options(synchronize_session=False)
    )
    return IssueOutcome(
        "issued", db.session.get(Voucher, voucher_id), needed_fen=face, level=eligibility.level
    )


def issue_for(
    resident_id: int, month: date, *, actor_id: int | None = None, reason: str = "monthly"
) -> Voucher | None:
    """The elder's voucher for ``month``: the one already issued, a new one, or None when the
    elder is not eligible or the district's money cannot cover it (a Shortfall is recorded)."""
    _check_issuable_month(month)
    if reason not in ISSUE_REASONS:
        raise InvalidInput(details={"reason": _l("Unknown reason for issuing a voucher.")})
    return try_issue(resident_id, month, actor_id=actor_id, reason=reason).voucher


@dataclass
class IssuanceReport:
    month: date
    issued: int = 0
    already_issued: int = 0
    not_eligible: int = 0
    total_fen: int = 0  # reserved by this run
    left_out: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["month"] = self.month.strftime("%Y-%m")
        return data


@dataclass(frozen=True)
class _Candidate:
    resident_id: int
    district_code: str
    level: str
    waiting_since: date
    eligibility: Eligibility

    @property
    def priority(self):
        return (LEVEL_PRIORITY.get(self.level, 99), self.waiting_since, self.resident_id)


def _districts_of(resident_ids: list[int]) -> dict[int, str]:
    found: dict[int, str] = {}
    for start in range(0, len(resident_ids), 500):
        chunk = resident_ids[start : start + 500]
        found.update(
            db.session.execute(
                sa.select(Resident.id, District.code)
                .join(District, District.id == Resident.district_id)
                .where(Resident.id.in_(chunk))
            ).all()
        )
    return found


def _issued_already(month: date) -> set[int]:
    return set(
        db.session.scalars(
            sa.select(Voucher.resident_id).where(Voucher.month == month, _blocking())
        )
    )


def issue_monthly(
    month: date,
    *,
    actor_id: int | None = None,
    limit: int | None = None,
    progress: Progress | None = None,
) -> IssuanceReport:
    """Issue ``month``'s vouchers to every eligible elder who lacks one, in priority order per
    district. Each elder has a savepoint of its own; ``progress(n)`` is called after the
    n-th elder, which is where the CLI and the job commit a batch (a crash loses only the
    uncommitted batch, and a rerun completes the month). ``limit`` caps how many elders this
    run handles."""
    _check_issuable_month(month)
    day = issuance_day(month)
    report = IssuanceReport(month=month)
    holders = _issued_already(month)
    shortlist = candidates_on(day)
    report.already_issued = sum(1 for resident_id, _, _ in shortlist if resident_id in holders)
    waiting = [(rid, since) for rid, _, since in shortlist if rid not in holders]
    districts = _districts_of([rid for rid, _ in waiting])
    by_district: dict[str, list[_Candidate]] = {}
    for resident_id, since in waiting:
        eligibility = eligibility_on(resident_id, day)
        if not eligibility.eligible:
            report.not_eligible += 1
            continue
        candidate = _Candidate(
            resident_id, districts[resident_id], eligibility.level, since, eligibility
        )
        by_district.setdefault(candidate.district_code, []).append(candidate)

    done = 0
    for district_code in sorted(by_district):
        exhausted = False
        for candidate in sorted(by_district[district_code], key=lambda c: c.priority):
            if limit is not None and done >= limit:
                return report
            outcome = try_issue(
                candidate.resident_id,
                month,
                actor_id=actor_id,
                reason="monthly",
                eligibility=candidate.eligibility,
                district_exhausted=exhausted,
            )
            if outcome.status == "issued":
                report.issued += 1
                report.total_fen += outcome.needed_fen
            elif outcome.status == "already_issued":
                report.already_issued += 1
            elif outcome.status == "not_eligible":
                report.not_eligible += 1
            else:
                exhausted = True
                report.left_out.append(
                    {
                        "resident_id": candidate.resident_id,
                        "district": district_code,
                        "level": outcome.level,
                        "needed_fen": outcome.needed_fen,
                    }
                )
            done += 1
            if progress is not None:
                progress(done)
    return report


# --- closing vouchers ---------------------------------------------------------------------


def _close(voucher: Voucher, *, status: str, entry_kind: str, memo: str, actor_id, audit_after):
    """Send what is left of the voucher back to its district and close it. A payment in
    flight keeps its hold: the closed voucher can take no new hold, and when that payment
    ends its money is redeemed or, released, goes to the district (``redemption._give_back``),
    never back onto a closed voucher."""
    returned = voucher.balance_fen
    before = {"status": voucher.status, "balance_fen": returned, "held_fen": voucher.held_fen}
    voucher.balance_fen = 0
    voucher.status, voucher.closed_at = status, now_utc()
    db.session.flush()
    district = db.session.get(District, voucher.district_id)
    if returned:
        ledger.post(
            entry_kind,
            memo,
            [(OUTSTANDING, -returned), (ledger.district_account_code(district.code), returned)],
            cause=("vouchers", voucher.id),
            actor_id=actor_id,
        )
    audit.record(
        f"voucher.{status}",
        voucher,
        district_id=voucher.district_id,
        before=before,
        after={"status": status, "returned_fen": returned, "still_held_fen": voucher.held_fen}
        | audit_after,
        actor=_actor(actor_id),
    )
    return returned


EXPIRY_BATCH = 200  # vouchers per batch of expire_month (its progress is called per batch)


def lock_vouchers(voucher_ids) -> list[Voucher]:
    """The vouchers, locked (PostgreSQL: FOR UPDATE) in id order in one statement and read
    as they stand. A redemption moves balance_fen too; the lock makes expiry or revocation
    see its final amount instead of racing it. Step 3 of the lock order (vouchers.ledger):
    all of a transaction's vouchers before any account."""
    return list(
        db.session.scalars(
            sa.select(Voucher)
            .where(Voucher.id.in_(list(voucher_ids)))
            .order_by(Voucher.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    )


def expire_month(
    month: date, *, progress: Progress | None = None, batch_size: int = EXPIRY_BATCH
) -> dict:
    """Expire every active voucher of a past month and return its balance to its district.
    A voucher with a payment in flight expires too and is reported under "held": that
    payment's money is redeemed or, released, goes to the district. Rerunning changes
    nothing.

    Batches of ``batch_size`` vouchers: each locks its vouchers first, then closes them
    (the lock order of vouchers.ledger). ``progress(done)`` is called after each batch: a
    caller that commits does it there, so no transaction locks a voucher after an account
    (``commit_every`` with the same size)."""
    if not isinstance(month, date) or month.day != 1:
        raise InvalidInput(details={"month": _l("Give the month as YYYY-MM.")})
    if month >= month_of(local_today()):
        raise InvalidInput(details={"month": _l("Only a month that has ended can expire.")})
    ids = list(
        db.session.scalars(
            sa.select(Voucher.id)
            .where(Voucher.month == month, Voucher.status == "active")
            .order_by(Voucher.id)
        )
    )
    result = {"month": month.strftime("%Y-%m"), "expired": 0, "returned_fen": 0, "held": []}
    for start in range(0, len(ids), batch_size):
        batch = ids[start : start + batch_size]
        serialize_issuance()
        for voucher in lock_vouchers(batch):
            if voucher.status != "active":
                continue
            if voucher.held_fen > 0:
                result["held"].append(voucher.id)  # expired; its payment still settling
            result["returned_fen"] += _close(
                voucher,
                status="expired",
                entry_kind="expire",
                memo=f"expiry {month:%Y-%m} voucher {voucher.id}",
                actor_id=None,
                audit_after={},
            )
            result["expired"] += 1
        if progress is not None:
            progress(start + len(batch))
    return result


def revoke_for(
    resident_id: int, *, from_month: date, reason: str, actor_id: int | None = None
) -> dict:
    """Revoke the elder's active vouchers for ``from_month`` and later, returning their
    balances to the districts. Death passes the month of death (the current voucher goes at
    once); the other reasons pass the next month, because the current month's voucher stays
    (POLICY: vouchers stop from the next month) and the next issuance will simply not issue.
    A voucher with a payment in flight is revoked too and reported under "held": that
    payment's money is redeemed or, released, goes to the district."""
    if reason not in REVOKE_REASONS:
        raise InvalidInput(details={"reason": _l("Unknown reason for revoking a voucher.")})
    if not isinstance(from_month, date) or from_month.day != 1:
        raise InvalidInput(details={"from_month": _l("Give the month as YYYY-MM.")})
    serialize_issuance()
    ids = list(
        db.session.scalars(
            sa.select(Voucher.id).where(
                Voucher.resident_id == resident_id,
                Voucher.month >= from_month,
                Voucher.status == "active",
            )
        )
    )
    result = {"revoked": [], "held": [], "returned_fen": 0}
    # All of them locked before any money moves (the lock order of vouchers.ledger).
    for voucher in sorted(lock_vouchers(ids), key=lambda v: v.month):
        if voucher.status != "active":
            continue
        held = voucher.held_fen > 0
        result["returned_fen"] += _close(
            voucher,
            status="revoked",
            entry_kind="revoke",
            memo=f"revoked ({reason}) voucher {voucher.id}",
            actor_id=actor_id,
            audit_after={"reason": reason},
        )
        voucher.revoked_reason = reason
        result["revoked"].append(voucher.id)
        if held:
            result["held"].append(voucher.id)
    return result
