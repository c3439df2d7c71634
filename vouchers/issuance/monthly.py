"""Issuing the monthly vouchers, expiring them at month end, revoking them when an elder stops
qualifying.

Money: issuing reserves the voucher's face value from the elder's district allocation
(``district:<code>:available`` -> ``vouchers:outstanding``) in the same transaction as the
Voucher row, so a voucher exists exactly when its money was reserved: one elder's issue
(the feed, a manual issue) posts one entry for its voucher; the monthly run posts ONE entry
per district and batch carrying the batch's total (cause ``issuance``), with the batch's
vouchers and their audit rows. Expiry and revocation send what is left back to the
district the voucher came from (expiry: one entry per district and batch).

At scale (``issue_monthly``, ``expire_month``) the work is set-based: the eligible set is
one SELECT (``assessment.eligible_set``), staged once per run with each elder's kind, policy
and face value (``issuance_work``), and each batch is a constant number of statements
whatever its size (INSERT … SELECT of vouchers, bulk audit rows, bulk shortfalls).

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
service are the version in force on the day of the service (vouchers.pool.policy.rules_for).

Issuing, expiring and revoking transactions also take one PostgreSQL advisory lock before
they touch any row (``serialize_issuance``), so they queue instead of deadlocking on each
other's rows. Against payments, the row lock order of ``vouchers.pool.ledger`` holds: expiry and
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

import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta

import sqlalchemy as sa
import sqlalchemy.orm
from flask_babel import lazy_gettext as _l
from sqlalchemy.dialects import postgresql, sqlite

from assessment.eligibility import Eligibility, eligibility_on
from assessment.eligible_set import eligible_set, shortlist
from eldercare import audit
from eldercare.accounts import User
from eldercare.db import UTCDateTime, db
from eldercare.errors import InvalidInput, NotFound
from eldercare.residents import District, Resident
from eldercare.timeutil import local_today, now_utc
from vouchers.errors import InsufficientFunds
from vouchers.models import (
    LIVE_FIRST,
    VOUCHER_KINDS,
    IssuanceWork,
    KindChoice,
    Redemption,
    Shortfall,
    Voucher,
    VoucherPolicy,
)
from vouchers.pool import ledger, memos
from vouchers.pool.kinds import DEFAULT_KIND, kind_for, kind_of_month
from vouchers.pool.policy import policy_on

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
                memos.memo("ledger.issue_one", month=f"{month:%Y-%m}", resident=resident.id),
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


# How many elders one batch of a monthly run handles: one INSERT … SELECT of vouchers, one
# journal entry and one bulk write of audit rows. The caller's ``progress`` commits between
# batches, so a crash loses at most one batch and a rerun completes the month.
ISSUE_BATCH = 10_000
# A report lists at most this many of the elders left out for lack of money (all of them are
# counted in ``left_out_count`` and recorded as Shortfall rows, which the bureau's pages list).
LEFT_OUT_LISTED = 1_000
# Scratch rows older than this belong to a run that crashed; the next run deletes them.
STALE_WORK = timedelta(days=1)


@dataclass
class IssuanceReport:
    month: date
    issued: int = 0
    already_issued: int = 0
    not_eligible: int = 0
    total_fen: int = 0  # reserved by this run
    left_out: list[dict] = field(default_factory=list)  # the first LEFT_OUT_LISTED, in order
    left_out_count: int = 0

    def to_dict(self) -> dict:
        data = asdict(self)
        data["month"] = self.month.strftime("%Y-%m")
        return data


def _holders(month: date):
    """Residents whose voucher stops a new one for ``month`` (``_blocking``)."""
    return (
        sa.select(Voucher.resident_id)
        .where(Voucher.month == month, _blocking())
        .group_by(Voucher.resident_id)
        .subquery("holders")
    )


def _shortlist_counts(month: date, day: date) -> tuple[int, int]:
    """(holders, others) among ``candidates_on(day)``'s shortlist: the numbers the report
    gives for elders who already hold a voucher and, with the eligible set, for those who
    turn out not to be eligible."""
    candidates = shortlist(day).subquery("shortlist")
    holders = _holders(month)
    row = db.session.execute(
        sa.select(
            sa.func.count(holders.c.resident_id),
            sa.func.count() - sa.func.count(holders.c.resident_id),
        )
        .select_from(candidates)
        .outerjoin(holders, holders.c.resident_id == candidates.c.resident_id)
    ).one()
    return int(row[0]), int(row[1])


def _policies(day: date) -> dict[str, VoucherPolicy | None]:
    found: dict[str, VoucherPolicy | None] = {}
    for kind in VOUCHER_KINDS:
        try:
            found[kind] = policy_on(kind, day)
        except NotFound:
            found[kind] = None
    return found


def _stage(run_id: int, month: date, day: date, stamp) -> None:
    """Write every eligible elder without a voucher for ``month`` into ``issuance_work``
    (one statement): the voucher each would get, ranked by district and priority.

    The rules are ``try_issue``'s: the kind is the month's first voucher's (a re-issue keeps
    it) or the elder's choice (``kind_for``); the policy is the kind's version in force on
    the day of issue and must cover the level; the face value is its cap less what revoked
    vouchers of the month paid or are paying."""
    eligible = eligible_set(day).subquery("eligible")
    holders = _holders(month)
    latest = (
        sa.select(Voucher.resident_id, sa.func.max(Voucher.id).label("voucher_id"))
        .where(Voucher.month == month)
        .group_by(Voucher.resident_id)
        .subquery("latest")
    )
    month_voucher = sa.orm.aliased(Voucher, name="month_voucher")
    paid = (
        sa.select(
            Voucher.resident_id,
            sa.func.sum(Redemption.subsidy_fen).label("fen"),
        )
        .join(Redemption, Redemption.voucher_id == Voucher.id)
        .where(
            Voucher.month == month,
            Voucher.status == "revoked",
            Redemption.status.in_(("redeemed", "pending_payment")),
        )
        .group_by(Voucher.resident_id)
        .subquery("paid")
    )
    chosen = sa.case(
        (KindChoice.in_institution.is_(True), "institutional"),
        else_=sa.func.coalesce(KindChoice.kind, DEFAULT_KIND),
    )
    kind = sa.func.coalesce(month_voucher.kind, chosen)
    policies = {k: p for k, p in _policies(day).items() if p is not None}
    if policies:
        policy_id = sa.case({k: p.id for k, p in policies.items()}, value=kind, else_=None)
        cap = sa.case({k: p.monthly_cap_fen for k, p in policies.items()}, value=kind, else_=0)
        covered = sa.or_(
            *(
                sa.and_(kind == k, eligible.c.level.in_(sorted(p.level_set)))
                for k, p in policies.items()
            )
        )
    else:
        policy_id, cap, covered = sa.cast(sa.null(), sa.Integer), sa.literal(0), sa.false()
    face = cap - sa.func.coalesce(paid.c.fen, 0)
    terms = (
        sa.select(
            eligible.c.resident_id,
            eligible.c.district_id,
            eligible.c.level,
            eligible.c.waiting_since,
            kind.label("kind"),
            policy_id.label("policy_id"),
            face.label("face"),
            sa.and_(covered, face > 0).label("waiting"),
        )
        .select_from(eligible)
        .outerjoin(holders, holders.c.resident_id == eligible.c.resident_id)
        .outerjoin(latest, latest.c.resident_id == eligible.c.resident_id)
        .outerjoin(month_voucher, month_voucher.id == latest.c.voucher_id)
        .outerjoin(KindChoice, KindChoice.resident_id == eligible.c.resident_id)
        .outerjoin(paid, paid.c.resident_id == eligible.c.resident_id)
        .where(holders.c.resident_id.is_(None))
        .subquery("terms")
    )
    waiting_first = sa.case((terms.c.waiting, 0), else_=1)
    priority = (
        terms.c.district_id,
        waiting_first,
        sa.case(LEVEL_PRIORITY, value=terms.c.level, else_=99),
        terms.c.waiting_since,
        terms.c.resident_id,
    )
    work = IssuanceWork.__table__
    db.session.execute(
        work.insert().from_select(
            [
                "run_id",
                "rank",
                "resident_id",
                "district_id",
                "level",
                "kind",
                "policy_id",
                "waiting",
                "face_value_fen",
                "staged_at",
            ],
            sa.select(
                sa.literal(run_id, sa.BigInteger),
                sa.func.row_number().over(order_by=priority),
                terms.c.resident_id,
                terms.c.district_id,
                terms.c.level,
                terms.c.kind,
                terms.c.policy_id,
                terms.c.waiting,
                terms.c.face,
                sa.literal(stamp, UTCDateTime()),
            ),
        )
    )


def _district_plan(run_id: int) -> list:
    """Per district with staged elders, by code: how many wait, how many are not covered by
    their kind's policy or have nothing left of the cap, the rank range of those waiting,
    and whether any needs a policy that is not in force."""
    work = IssuanceWork
    waiting = sa.case((work.waiting, 1), else_=0)
    return db.session.execute(
        sa.select(
            work.district_id,
            District.code,
            District.name_zh,
            sa.func.sum(waiting).label("waiting"),
            sa.func.sum(
                sa.case((sa.and_(~work.waiting, work.face_value_fen <= 0), 1), else_=0)
            ).label("spent"),
            sa.func.count().label("staged"),
            sa.func.min(sa.case((work.waiting, work.rank))).label("first"),
            sa.func.max(sa.case((work.waiting, work.rank))).label("last"),
            sa.func.sum(sa.case((work.policy_id.is_(None), 1), else_=0)).label("no_policy"),
            sa.func.min(sa.case((work.policy_id.is_(None), work.kind))).label("missing_kind"),
        )
        .join(District, District.id == work.district_id)
        .where(work.run_id == run_id)
        .group_by(work.district_id, District.code, District.name_zh)
        .order_by(District.code)
    ).all()


def _slice(run_id: int, first: int, last: int):
    """The staged rows of ranks first..last."""
    work = IssuanceWork
    return sa.and_(work.run_id == run_id, work.rank >= first, work.rank <= last)


def _unheld(month: date):
    """The staged elder holds no voucher that stops a new one (another run, the feed or a
    manual issue may have issued one since the run staged its rows)."""
    work = IssuanceWork
    return ~(
        sa.select(Voucher.id)
        .where(Voucher.resident_id == work.resident_id, Voucher.month == month, _blocking())
        .exists()
    )


class _Raced(Exception):
    """Someone issued to an elder of the batch since the run staged it: redo the batch
    checking every elder (``careful``)."""


def _cut_off(run_id: int, first: int, last: int, balance: int, unheld) -> tuple[int | None, int]:
    """(the rank of the first elder of ranks first..last whom the district's ``balance``
    cannot cover, or None when it covers them all; the fen it covers before that elder):
    a running sum in priority order over the elders ``unheld`` keeps."""
    work = IssuanceWork
    free = (
        sa.select(
            work.rank,
            sa.func.sum(work.face_value_fen).over(order_by=work.rank).label("running"),
        )
        .where(_slice(run_id, first, last), unheld)
        .subquery("free")
    )
    cut, covered = db.session.execute(
        sa.select(
            sa.func.min(sa.case((free.c.running > balance, free.c.rank))),
            sa.func.max(sa.case((free.c.running <= balance, free.c.running))),
        )
    ).one()
    return cut, int(covered or 0)


def _reserve_voucher_ids(count: int) -> int:
    """The first of ``count`` voucher ids nobody else will use: the batch's vouchers get
    their ids before they are inserted, so that their audit rows are written from the
    staged rows without reading the vouchers back."""
    if db.session.get_bind().dialect.name == "postgresql":
        last = db.session.scalar(
            sa.text(
                "SELECT setval(pg_get_serial_sequence('vouchers', 'id'),"
                " nextval(pg_get_serial_sequence('vouchers', 'id')) + :n - 1)"
            ),
            {"n": count},
        )
        return int(last) - count + 1
    # SQLite: one writer at a time; a new row's id is the largest plus one.
    return int(db.session.scalar(sa.select(sa.func.coalesce(sa.func.max(Voucher.id), 0)))) + 1


def _insert_vouchers(run_id: int, first: int, last: int, month: date, stamp) -> int:
    """INSERT … SELECT the staged rows' vouchers with their reserved ids; the live
    (resident, month) unique index refuses a second voucher (``_Raced`` then)."""
    work = IssuanceWork
    columns = [
        "id",
        "resident_id",
        "month",
        "kind",
        "policy_id",
        "district_id",
        "face_value_fen",
        "balance_fen",
        "held_fen",
        "status",
        "issued_at",
    ]
    rows = sa.select(
        work.voucher_id,
        work.resident_id,
        sa.literal(month, sa.Date),
        work.kind,
        work.policy_id,
        work.district_id,
        work.face_value_fen,
        work.face_value_fen,
        sa.literal(0, sa.BigInteger),
        sa.literal("active"),
        sa.literal(stamp, UTCDateTime()),
    ).where(_slice(run_id, first, last), work.voucher_id.is_not(None))
    dialect = db.session.get_bind().dialect.name
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect]
    return db.session.execute(
        insert(Voucher.__table__)
        .from_select(columns, rows)
        .on_conflict_do_nothing()
        .execution_options(preserve_rowcount=True)  # an INSERT's rowcount, on psycopg too
    ).rowcount


def _audit_issued(run_id, first, last, month: date, stamp, actor_id, reason="monthly") -> int:
    """One ``voucher.issue`` audit row per voucher of the batch, written in bulk from the
    staged rows, with the after-state ``audit.record`` would have written (canonical JSON,
    keys sorted)."""
    work = IssuanceWork
    text = sa.String()
    after = (
        sa.literal('{"face_value_fen":', text)
        + sa.cast(work.face_value_fen, text)
        + sa.literal(',"kind":"', text)
        + work.kind
        + sa.literal('","level":"', text)
        + work.level
        + sa.literal(f'","month":"{month:%Y-%m}","reason":"{reason}"}}', text)
    )
    return audit.insert_from_select(
        sa.select(
            *audit.shared_columns(
                "voucher.issue", "vouchers", occurred_at=stamp, actor=_actor(actor_id)
            ),
            sa.cast(work.voucher_id, text).label("object_id"),
            work.district_id,
            sa.null().label("before_json"),
            after.label("after_json"),
        )
        .where(_slice(run_id, first, last), work.voucher_id.is_not(None))
        .order_by(work.rank)
    )


def _record_left_out(run_id: int, first: int, last: int, month: date, stamp) -> None:
    """Shortfall rows for the staged elders first..last who still have no voucher, in bulk:
    a new row each, or the open one updated; a resolved one stays resolved (as
    ``_record_shortfall``)."""
    work = IssuanceWork
    db.session.execute(
        sa.update(Shortfall)
        .where(
            Shortfall.month == month,
            Shortfall.resolved_at.is_(None),
            Shortfall.resident_id == work.resident_id,
            _slice(run_id, first, last),
            _unheld(month),
        )
        .values(level=work.level, needed_fen=work.face_value_fen)
        .execution_options(synchronize_session=False)
    )
    dialect = db.session.get_bind().dialect.name
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[dialect]
    db.session.execute(
        insert(Shortfall.__table__)
        .from_select(
            ["month", "resident_id", "district_id", "level", "needed_fen", "recorded_at"],
            sa.select(
                sa.literal(month, sa.Date),
                work.resident_id,
                work.district_id,
                work.level,
                work.face_value_fen,
                sa.literal(stamp, UTCDateTime()),
            ).where(_slice(run_id, first, last), _unheld(month)),
        )
        .on_conflict_do_nothing()
    )


def _issue_batch(
    run_id, first, last, month, balance, district_code, actor_id, *, careful: bool
) -> tuple[int | None, int, int, int]:
    """Issue the staged elders first..last up to the cut-off against ``balance``: vouchers
    (one INSERT … SELECT), one journal entry with their total, an audit row each, their
    shortfalls resolved. Returns (the cut-off rank or None, elders handled, vouchers, fen).

    Not ``careful``: the elders are taken as staged, and the insert proves nobody was
    issued a voucher since (else ``_Raced``). ``careful``: each elder is checked first
    (an index probe each), and one who holds a voucher now is skipped."""
    work = IssuanceWork
    unheld = _unheld(month) if careful else sa.true()
    cut, total = _cut_off(run_id, first, last, balance, unheld)
    if cut is not None and not careful:
        raise _Raced()  # where the money ends, only those still without a voucher count
    covered_to = last if cut is None else cut - 1
    if covered_to < first:
        return cut, 0, 0, 0
    handled = covered_to - first + 1
    base = _reserve_voucher_ids(handled)
    count = db.session.execute(
        sa.update(work)
        .where(_slice(run_id, first, covered_to), unheld)
        .values(voucher_id=work.rank - first + base)
        .execution_options(synchronize_session=False)
    ).rowcount
    stamp = now_utc()
    if _insert_vouchers(run_id, first, covered_to, month, stamp) != count:
        raise _Raced()
    if not count:
        return cut, handled, 0, 0
    ledger.post(
        "issue",
        memos.memo(
            "ledger.issue_batch", month=f"{month:%Y-%m}", district=district_code, count=count
        ),
        [(ledger.district_account_code(district_code), -total), (OUTSTANDING, total)],
        cause=("issuance", f"{month:%Y-%m}/{district_code}/{stamp:%H%M%S%f}"),
        actor_id=actor_id,
    )
    _audit_issued(run_id, first, covered_to, month, stamp, actor_id)
    db.session.execute(
        sa.update(Shortfall)
        .where(
            Shortfall.month == month,
            Shortfall.resolved_at.is_(None),
            Shortfall.resident_id.in_(
                sa.select(work.resident_id).where(
                    _slice(run_id, first, covered_to), work.voucher_id.is_not(None)
                )
            ),
        )
        .values(resolved_at=stamp)
        .execution_options(synchronize_session=False)
    )
    return cut, handled, count, total


def _leave_out(run_id, first, last, month, listed: int) -> tuple[int, int, list[dict]]:
    """Record the staged elders first..last who still have no voucher as left out (bulk
    Shortfall rows). Returns (left out, holding a voucher meanwhile, the first ``listed``
    left out as report rows)."""
    work = IssuanceWork
    left_out = int(
        db.session.scalar(
            sa.select(sa.func.count()).where(_slice(run_id, first, last), _unheld(month))
        )
    )
    _record_left_out(run_id, first, last, month, now_utc())
    rows = []
    if listed > 0 and left_out:
        rows = [
            {"resident_id": r.resident_id, "level": r.level, "needed_fen": r.face_value_fen}
            for r in db.session.execute(
                sa.select(work.resident_id, work.level, work.face_value_fen)
                .where(_slice(run_id, first, last), _unheld(month))
                .order_by(work.rank)
                .limit(listed)
            )
        ]
    return left_out, last - first + 1 - left_out, rows


def issue_monthly(
    month: date,
    *,
    actor_id: int | None = None,
    limit: int | None = None,
    progress: Progress | None = None,
    batch_size: int = ISSUE_BATCH,
) -> IssuanceReport:
    """Issue ``month``'s vouchers to every eligible elder who lacks one, in priority order per
    district, set-based: the eligible set and each elder's voucher are computed in SQL and
    staged once (``issuance_work``); then per district, batch by batch of ``batch_size``
    elders, one INSERT … SELECT of vouchers up to the strict cut-off against the district's
    balance, ONE journal entry carrying the batch's total (cause ``issuance`` with the
    month, the district and the batch's stamp), the audit rows in bulk, and the shortfalls
    of whoever is left out. ``progress(n)`` is called after each batch with the number of
    elders handled so far: the CLI and the job commit there (a crash loses only the
    uncommitted batch, and a rerun completes the month). ``limit`` caps how many elders
    this run handles. The statements per batch do not depend on its size."""
    _check_issuable_month(month)
    day = issuance_day(month)
    report = IssuanceReport(month=month)
    work = IssuanceWork
    db.session.execute(
        sa.delete(work)
        .where(work.staged_at < now_utc() - STALE_WORK)
        .execution_options(synchronize_session=False)
    )
    serialize_issuance()
    holders, others = _shortlist_counts(month, day)
    run_id = secrets.randbits(62)
    _stage(run_id, month, day, now_utc())
    plan = _district_plan(run_id)
    staged = sum(d.staged for d in plan)
    report.already_issued = holders + sum(d.spent for d in plan)
    report.not_eligible = others - staged + sum(d.staged - d.waiting - d.spent for d in plan)
    for district in plan:
        if district.no_policy:
            policy_on(district.missing_kind, day)  # raises NotFound, as try_issue would
    done = 0
    for district in plan:
        if not district.waiting:
            continue
        account_code = ledger.district_account_code(district.code)
        first = district.first
        while first <= district.last:
            if limit is not None and done >= limit:
                break
            last = min(district.last, first + batch_size - 1)
            if limit is not None:
                last = min(last, first + limit - done - 1)
            serialize_issuance()
            ledger.account(account_code, create_name=f"{district.name_zh} allocation")
            # Locked to the batch's commit: a withdrawal from the district committing while
            # the batch is sized to its money would make the batch's entry overdraw it.
            balance = ledger.locked_balance(account_code)
            savepoint = db.session.begin_nested()
            try:
                batch = _issue_batch(
                    run_id, first, last, month, balance, district.code, actor_id, careful=False
                )
                savepoint.commit()
            except _Raced:
                savepoint.rollback()
                batch = _issue_batch(
                    run_id, first, last, month, balance, district.code, actor_id, careful=True
                )
            cut, handled, count, total = batch
            report.issued += count
            report.already_issued += handled - count  # got one meanwhile
            report.total_fen += total
            done += handled
            if cut is not None:
                # Strict priority: the first elder the district cannot cover, and everyone
                # after them in the district, are left out of this run.
                out_to = district.last
                if limit is not None:
                    out_to = min(out_to, cut + limit - done - 1)
                listed = LEFT_OUT_LISTED - len(report.left_out)
                left_out, holding, rows = _leave_out(run_id, cut, out_to, month, listed)
                report.left_out += [row | {"district": district.code} for row in rows]
                report.left_out_count += left_out
                report.already_issued += holding
                done += out_to - cut + 1
                last = district.last
            first = last + 1
            if progress is not None:
                progress(done)
    db.session.execute(
        sa.delete(work).where(work.run_id == run_id).execution_options(synchronize_session=False)
    )
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


def lock_vouchers(voucher_ids) -> list[Voucher]:
    """The vouchers, locked (PostgreSQL: FOR UPDATE) in id order in one statement and read
    as they stand. A redemption moves balance_fen too; the lock makes expiry or revocation
    see its final amount instead of racing it. Step 3 of the lock order (vouchers.pool.ledger):
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


EXPIRE_BATCH = 10_000  # vouchers per batch of an expiry: one UPDATE, one entry, bulk audit


def _audit_expired(month: date, district_id: int, after_id: int, last_id: int, stamp) -> int:
    """One ``voucher.expired`` audit row per voucher of the batch, in bulk, with the before
    and after states ``_close`` would have written (canonical JSON, keys sorted). Read
    before the UPDATE: the before-state is the row as it is now."""
    text = sa.String()
    balance = sa.cast(Voucher.balance_fen, text)
    held = sa.cast(Voucher.held_fen, text)
    before = (
        sa.literal('{"balance_fen":', text)
        + balance
        + sa.literal(',"held_fen":', text)
        + held
        + sa.literal(',"status":"active"}', text)
    )
    after = (
        sa.literal('{"returned_fen":', text)
        + balance
        + sa.literal(',"status":"expired","still_held_fen":', text)
        + held
        + sa.literal("}", text)
    )
    return audit.insert_from_select(
        sa.select(
            *audit.shared_columns("voucher.expired", "vouchers", occurred_at=stamp),
            sa.cast(Voucher.id, text).label("object_id"),
            Voucher.district_id,
            before.label("before_json"),
            after.label("after_json"),
        )
        .where(_expiring(month, district_id, after_id, last_id))
        .order_by(Voucher.id)
    )


def _expiring(month: date, district_id: int, after_id: int, last_id: int):
    return sa.and_(
        Voucher.month == month,
        Voucher.status == "active",
        Voucher.district_id == district_id,
        Voucher.id > after_id,
        Voucher.id <= last_id,
    )


def expire_month(
    month: date, *, progress: Progress | None = None, batch_size: int = EXPIRE_BATCH
) -> dict:
    """Expire every active voucher of a past month and return its balance to its district,
    set-based: per district, batch by batch of ``batch_size`` vouchers (by id), the rows
    locked, their audit rows written in bulk, one UPDATE, and ONE journal entry returning
    the batch's balances to the district. A voucher with a payment in flight expires too
    (its hold stays, ``_close``'s rule) and is reported under "held": that payment's money
    is redeemed or, released, goes to the district. ``progress(n)`` is called after each
    batch with the vouchers handled so far. Rerunning changes nothing."""
    if not isinstance(month, date) or month.day != 1:
        raise InvalidInput(details={"month": _l("Give the month as YYYY-MM.")})
    if month >= month_of(local_today()):
        raise InvalidInput(details={"month": _l("Only a month that has ended can expire.")})
    result = {"month": month.strftime("%Y-%m"), "expired": 0, "returned_fen": 0, "held": []}
    districts = db.session.execute(
        sa.select(District.id, District.code)
        .where(
            District.id.in_(
                sa.select(Voucher.district_id)
                .where(Voucher.month == month, Voucher.status == "active")
                .distinct()
            )
        )
        .order_by(District.code)
    ).all()
    done = 0
    for district_id, district_code in districts:
        after_id = 0
        while True:
            # The lock order (vouchers.pool.ledger): the issuance lock, then every voucher row of
            # the batch (in id order, one statement) before the ledger's rows.
            serialize_issuance()
            rows = db.session.execute(
                sa.select(Voucher.id, Voucher.balance_fen, Voucher.held_fen)
                .where(
                    Voucher.month == month,
                    Voucher.status == "active",
                    Voucher.district_id == district_id,
                    Voucher.id > after_id,
                )
                .order_by(Voucher.id)
                .limit(batch_size)
                .with_for_update()
            ).all()
            if not rows:
                break
            last_id = rows[-1].id
            returned = sum(row.balance_fen for row in rows)
            stamp = now_utc()
            _audit_expired(month, district_id, after_id, last_id, stamp)
            db.session.execute(
                sa.update(Voucher)
                .where(_expiring(month, district_id, after_id, last_id))
                .values(status="expired", balance_fen=0, closed_at=stamp)
                .execution_options(synchronize_session=False)
            )
            if returned:
                ledger.post(
                    "expire",
                    memos.memo(
                        "ledger.expire_batch",
                        month=f"{month:%Y-%m}",
                        district=district_code,
                        count=len(rows),
                    ),
                    [
                        (OUTSTANDING, -returned),
                        (ledger.district_account_code(district_code), returned),
                    ],
                    cause=("expiry", f"{month:%Y-%m}/{district_code}/{stamp:%H%M%S%f}"),
                )
            result["held"] += [row.id for row in rows if row.held_fen > 0]
            result["expired"] += len(rows)
            result["returned_fen"] += returned
            done += len(rows)
            after_id = last_id
            if progress is not None:
                progress(done)
    db.session.expire_all()  # vouchers changed in SQL; reload them when next read
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
    # All of them locked before any money moves (the lock order of vouchers.pool.ledger).
    for voucher in sorted(lock_vouchers(ids), key=lambda v: v.month):
        if voucher.status != "active":
            continue
        held = voucher.held_fen > 0
        result["returned_fen"] += _close(
            voucher,
            status="revoked",
            entry_kind="revoke",
            memo=memos.memo(
                "ledger.revoke", reason=memos.revoke_reason(reason), voucher=voucher.id
            ),
            actor_id=actor_id,
            audit_after={"reason": reason},
        )
        voucher.revoked_reason = reason
        result["revoked"].append(voucher.id)
        if held:
            result["held"].append(voucher.id)
    return result
