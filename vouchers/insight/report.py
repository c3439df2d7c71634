"""The bureau's monthly (or yearly) report: ``report_for(period, district_id) -> Report``.

The figures the bureau's own reports publish, for a month (``YYYY-MM``) or a year (``YYYY``),
city-wide or for one district:

- funds received: top-ups posted to ``funding:central`` / ``funding:local`` in the period
  (Asia/Shanghai days), and the allocations to districts in the period (net of take-backs).
  Funding is the city's: a district's report shows **its allocations only** and leaves the
  central and local figures out (``Funds.scope == "district"``), as the pool page does.
- vouchers of the period's months (``Voucher.month``): issued (every voucher issued for
  them, revoked ones included: they were issued; count and face value), redeemed (redemptions
  of those vouchers now ``redeemed``: count and subsidy) and reversed (count); by month, a
  year has its 12 months.
- elders served: distinct residents with a redeemed redemption on the period's vouchers, by
  the level of their latest approved assessment in force by the period's end (the voucher
  does not carry one), and by the voucher's district.
- certified providers and assessment agencies: active, and certified through the period's
  last day (today's, for a period not over yet). Statuses have no history: a provider
  suspended since counts as it stands now. A district counts those located in it.
- assessments approved in the period (by level), fee refunds paid in the period (count, fen).
- flags raised, cleared and rejected in the period (``redemption_flags``), by rule.
- each month's reconciliation: the last run, green or red (as the reconciliation page
  judges it for the same reader), its open exceptions.

Every figure is one set-based query (GROUP BY / COUNT / SUM); none reads rows one by one.
Money is integer fen; the caller formats it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time

import sqlalchemy as sa
from flask_babel import LazyString
from flask_babel import lazy_gettext as _l

from assessment.models import Agency, Assessment, FeeRefund
from eldercare.db import db
from eldercare.errors import InvalidInput
from eldercare.residents import District, Resident
from eldercare.timeutil import SHANGHAI, local_today, now_utc
from marketplace.models import Provider
from vouchers.integrity.flags import rule_label
from vouchers.integrity.models import RedemptionFlag
from vouchers.models import JournalEntry, JournalLine, LedgerAccount, Redemption, Voucher
from vouchers.pool import ledger
from vouchers.pool.funding import FUNDING_SOURCES
from vouchers.settlement.models import ReconciliationRun, SettlementException

# The city the report is titled with (the statements are the Shenyang bureau's too).
CITY = ("沈阳市", "Shenyang")
YEARS = range(2000, 2100)  # the programme's months, as settlement reads them
LEVELS = ("intact", "mild", "moderate", "severe", "complete")
UNKNOWN_LEVEL = "unknown"  # served, but no approved assessment found (imported history)
RECONCILIATION_STATUSES = ("green", "red", "not_run")

_PERIOD = re.compile(r"\A([0-9]{4})(?:-([0-9]{2}))?\Z")
PERIOD_MESSAGE = _l(
    "Give the period as a month (YYYY-MM, for example 2026-03) or a year (YYYY, for "
    "example 2026), between 2000 and 2099."
)


class BadPeriod(InvalidInput):
    """A period that is not a month or a year of the programme: a request error (400)."""

    status = 400
    code = "invalid_period"


def _next_month(month: date) -> date:
    return date(month.year + (month.month == 12), month.month % 12 + 1, 1)


@dataclass(frozen=True)
class Period:
    kind: str  # "month" or "year"
    start: date  # the first day
    end: date  # the day after the last (exclusive)

    @property
    def text(self) -> str:
        return f"{self.start:%Y-%m}" if self.kind == "month" else f"{self.start:%Y}"

    @property
    def last_day(self) -> date:
        return date.fromordinal(self.end.toordinal() - 1)

    @property
    def months(self) -> list[date]:
        out, month = [], self.start
        while month < self.end:
            out.append(month)
            month = _next_month(month)
        return out

    @property
    def label_zh(self) -> str:
        if self.kind == "month":
            return f"{self.start.year}年{self.start.month}月"
        return f"{self.start.year}年"

    @property
    def label_en(self) -> str:
        return self.start.strftime("%B %Y") if self.kind == "month" else str(self.start.year)

    def bounds(self) -> tuple[datetime, datetime]:
        """The period's Shanghai days as aware datetimes, for the UTC timestamps."""
        return (
            datetime.combine(self.start, time(0), tzinfo=SHANGHAI),
            datetime.combine(self.end, time(0), tzinfo=SHANGHAI),
        )


def previous_month(today: date | None = None) -> date:
    first = (today or local_today()).replace(day=1)
    return date(first.year - (first.month == 1), (first.month - 2) % 12 + 1, 1)


def parse_period(text: str | None, *, today: date | None = None) -> Period:
    """``YYYY-MM`` or ``YYYY`` (years 2000-2099); nothing given: last month (the last one
    complete). Anything else is ``BadPeriod`` with a message in the reader's language."""
    text = (text or "").strip()
    if not text:
        month = previous_month(today)
        return Period("month", month, _next_month(month))
    match = _PERIOD.match(text)
    if match is None or int(match.group(1)) not in YEARS:
        raise BadPeriod(PERIOD_MESSAGE, details={"period": PERIOD_MESSAGE})
    year = int(match.group(1))
    if match.group(2) is None:
        return Period("year", date(year, 1, 1), date(year + 1, 1, 1))
    month = int(match.group(2))
    if not 1 <= month <= 12:
        raise BadPeriod(PERIOD_MESSAGE, details={"period": PERIOD_MESSAGE})
    return Period("month", date(year, month, 1), _next_month(date(year, month, 1)))


# --------------------------------------------------------------------------- the figures


@dataclass(frozen=True)
class DistrictRef:
    id: int
    code: str
    name_zh: str
    name_en: str

    def display_name(self, locale: str) -> str:
        return self.name_zh if locale.startswith("zh") else self.name_en


@dataclass(frozen=True)
class Funds:
    scope: str  # "city": central and local received; "district": its allocations only
    central_fen: int | None
    local_fen: int | None
    allocated_fen: int  # to the districts in scope, net of take-backs
    allocations: list[tuple[DistrictRef, int]]  # per district in scope, in code order


@dataclass(frozen=True)
class MonthFigures:
    month: date
    issued: int = 0
    issued_fen: int = 0
    redeemed: int = 0
    redeemed_fen: int = 0  # subsidy paid by the vouchers
    reversed: int = 0
    elders_served: int = 0


@dataclass(frozen=True)
class FlagFigures:
    rule: str
    label: object  # lazy text, in the reader's language when shown
    raised: int
    cleared: int
    rejected: int


@dataclass(frozen=True)
class Reconciliation:
    month: date
    status: str  # green / red / not_run
    last_run_at: datetime | None
    open_exceptions: int


@dataclass(frozen=True)
class Report:
    period: Period
    district: DistrictRef | None  # None: the whole city
    generated_at: datetime
    funds: Funds
    months: list[MonthFigures]
    totals: MonthFigures  # the period's (elders served: distinct over the whole period)
    elders_by_level: list[tuple[str, int]]  # LEVELS order, then unknown; only levels served
    elders_by_district: list[tuple[DistrictRef, int]]  # every district in scope
    providers_certified: int
    agencies_certified: int
    certified_as_of: date
    assessments_approved: int
    assessments_by_level: list[tuple[str, int]]
    fee_refunds_paid: int
    fee_refunds_paid_fen: int
    flags: list[FlagFigures] = field(default_factory=list)
    reconciliation: list[Reconciliation] = field(default_factory=list)

    @property
    def flags_raised(self) -> int:
        return sum(f.raised for f in self.flags)

    @property
    def flags_cleared(self) -> int:
        return sum(f.cleared for f in self.flags)

    @property
    def flags_rejected(self) -> int:
        return sum(f.rejected for f in self.flags)


def _ref(d: District) -> DistrictRef:
    return DistrictRef(d.id, d.code, d.name_zh, d.name_en)


def _scoped(statement, column, district_id: int | None):
    return statement if district_id is None else statement.where(column == district_id)


def _funds(period: Period, districts: list[DistrictRef], district_id: int | None) -> Funds:
    start, end = period.bounds()
    codes = {ledger.district_account_code(d.code): d for d in districts}
    wanted = list(codes) + ([] if district_id is not None else list(FUNDING_SOURCES.values()))
    # One query: the period's top-up and allocation lines, summed per account.
    sums = dict(
        db.session.execute(
            sa.select(LedgerAccount.code, sa.func.sum(JournalLine.amount_fen))
            .join(JournalLine, JournalLine.account_id == LedgerAccount.id)
            .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
            .where(
                LedgerAccount.code.in_(wanted),
                JournalEntry.kind.in_(("topup", "allocation")),
                JournalEntry.occurred_at >= start,
                JournalEntry.occurred_at < end,
            )
            .group_by(LedgerAccount.code)
        ).all()
    )
    allocations = [(d, int(sums.get(code) or 0)) for code, d in codes.items()]
    if district_id is not None:
        return Funds("district", None, None, sum(a for _, a in allocations), allocations)
    # A funding account's lines are negative: money arriving from it.
    return Funds(
        "city",
        -int(sums.get(FUNDING_SOURCES["central"]) or 0),
        -int(sums.get(FUNDING_SOURCES["local"]) or 0),
        sum(a for _, a in allocations),
        allocations,
    )


def _months(period: Period, district_id: int | None) -> tuple[list[MonthFigures], MonthFigures]:
    in_period = sa.and_(Voucher.month >= period.start, Voucher.month < period.end)
    issued = {
        month: (count, int(fen or 0))
        for month, count, fen in db.session.execute(
            _scoped(
                sa.select(Voucher.month, sa.func.count(), sa.func.sum(Voucher.face_value_fen))
                .where(in_period)
                .group_by(Voucher.month),
                Voucher.district_id,
                district_id,
            )
        ).all()
    }
    redeemed = Redemption.status == "redeemed"
    used_q = _scoped(
        sa.select(
            Voucher.month,
            sa.func.sum(sa.case((redeemed, 1), else_=0)),
            sa.func.sum(sa.case((redeemed, Redemption.subsidy_fen), else_=0)),
            sa.func.sum(sa.case((Redemption.status == "reversed", 1), else_=0)),
            sa.func.count(sa.distinct(sa.case((redeemed, Redemption.resident_id)))),
        )
        .join(Voucher, Voucher.id == Redemption.voucher_id)
        .where(in_period, Redemption.status.in_(("redeemed", "reversed")))
        .group_by(Voucher.month),
        Voucher.district_id,
        district_id,
    )
    used = {row[0]: [int(v or 0) for v in row[1:]] for row in db.session.execute(used_q).all()}
    months = []
    for month in period.months:
        count, fen = issued.get(month, (0, 0))
        r, r_fen, rev, served = used.get(month, (0, 0, 0, 0))
        months.append(MonthFigures(month, count, fen, r, r_fen, rev, served))
    served_total = db.session.scalar(
        _scoped(
            sa.select(sa.func.count(sa.distinct(Redemption.resident_id)))
            .join(Voucher, Voucher.id == Redemption.voucher_id)
            .where(in_period, redeemed),
            Voucher.district_id,
            district_id,
        )
    )
    totals = MonthFigures(
        period.start,
        sum(m.issued for m in months),
        sum(m.issued_fen for m in months),
        sum(m.redeemed for m in months),
        sum(m.redeemed_fen for m in months),
        sum(m.reversed for m in months),
        int(served_total or 0),
    )
    return months, totals


def _served(period: Period, district_id: int | None):
    """(voucher district, resident) pairs of the period's redeemed redemptions, distinct."""
    return (
        _scoped(
            sa.select(Voucher.district_id, Redemption.resident_id)
            .join(Voucher, Voucher.id == Redemption.voucher_id)
            .where(
                Voucher.month >= period.start,
                Voucher.month < period.end,
                Redemption.status == "redeemed",
            ),
            Voucher.district_id,
            district_id,
        )
        .distinct()
        .subquery()
    )


def _latest_levels(period: Period):
    """Each resident's level from the latest approved assessment in force by the period's
    end (by the day it counts from, then the newest), as a subquery."""
    _, end = period.bounds()
    ranked = (
        sa.select(
            Assessment.resident_id,
            Assessment.level,
            sa.func.row_number()
            .over(
                partition_by=Assessment.resident_id,
                order_by=(
                    sa.func.coalesce(Assessment.effective_from, date(1900, 1, 1)).desc(),
                    Assessment.id.desc(),
                ),
            )
            .label("n"),
        )
        .where(
            Assessment.status == "approved",
            sa.or_(Assessment.reviewed_at.is_(None), Assessment.reviewed_at < end),
            sa.or_(Assessment.effective_from.is_(None), Assessment.effective_from < period.end),
        )
        .subquery()
    )
    return sa.select(ranked.c.resident_id, ranked.c.level).where(ranked.c.n == 1).subquery()


def _ordered_levels(counts: dict) -> list[tuple[str, int]]:
    order = [*LEVELS, UNKNOWN_LEVEL]
    return [(level, counts[level]) for level in order if counts.get(level)]


def _elders_by_level(period: Period, district_id: int | None) -> list[tuple[str, int]]:
    served = _served(period, district_id)
    latest = _latest_levels(period)
    level = sa.func.coalesce(latest.c.level, UNKNOWN_LEVEL)
    people = (
        sa.select(served.c.resident_id).distinct().subquery()
    )  # an elder served in two districts is one elder
    rows = db.session.execute(
        sa.select(level, sa.func.count())
        .select_from(people)
        .outerjoin(latest, latest.c.resident_id == people.c.resident_id)
        .group_by(level)
    ).all()
    return _ordered_levels({lvl: count for lvl, count in rows})


def _elders_by_district(
    period: Period, districts: list[DistrictRef], district_id: int | None
) -> list[tuple[DistrictRef, int]]:
    served = _served(period, district_id)
    counts = dict(
        db.session.execute(
            sa.select(served.c.district_id, sa.func.count()).group_by(served.c.district_id)
        ).all()
    )
    return [(d, int(counts.get(d.id, 0))) for d in districts]


def _certified_as_of(period: Period, today: date) -> date:
    return min(period.last_day, today)


def _certified(model: type[Provider] | type[Agency], as_of: date, district_id: int | None) -> int:
    """How many providers (or assessment agencies: the same columns) are active and
    certified on ``as_of``."""
    return int(
        db.session.scalar(
            _scoped(
                sa.select(sa.func.count()).where(
                    model.status == "active", model.certified_until >= as_of
                ),
                model.district_id,
                district_id,
            )
        )
    )


def _assessments(period: Period, district_id: int | None) -> list[tuple[str, int]]:
    start, end = period.bounds()
    level = sa.func.coalesce(Assessment.level, UNKNOWN_LEVEL)
    rows = db.session.execute(
        _scoped(
            sa.select(level, sa.func.count())
            .join(Resident, Resident.id == Assessment.resident_id)
            .where(
                Assessment.status == "approved",
                Assessment.reviewed_at >= start,
                Assessment.reviewed_at < end,
            )
            .group_by(level),
            Resident.district_id,
            district_id,
        )
    ).all()
    return _ordered_levels(dict(rows))


def _fee_refunds(period: Period, district_id: int | None) -> tuple[int, int]:
    start, end = period.bounds()
    count, fen = db.session.execute(
        _scoped(
            sa.select(sa.func.count(), sa.func.sum(FeeRefund.amount_fen)).where(
                FeeRefund.status == "paid", FeeRefund.paid_at >= start, FeeRefund.paid_at < end
            ),
            FeeRefund.district_id,
            district_id,
        )
    ).one()
    return int(count), int(fen or 0)


def _flags(period: Period, district_id: int | None) -> list[FlagFigures]:
    start, end = period.bounds()
    raised = sa.and_(RedemptionFlag.raised_at >= start, RedemptionFlag.raised_at < end)
    decided = sa.and_(RedemptionFlag.decided_at >= start, RedemptionFlag.decided_at < end)

    def count_of(condition):
        return sa.func.sum(sa.case((condition, 1), else_=0))

    rows = db.session.execute(
        _scoped(
            sa.select(
                RedemptionFlag.rule,
                count_of(raised),
                count_of(sa.and_(decided, RedemptionFlag.status == "cleared")),
                count_of(sa.and_(decided, RedemptionFlag.status == "rejected")),
            )
            .join(Redemption, Redemption.id == RedemptionFlag.redemption_id)
            .join(Voucher, Voucher.id == Redemption.voucher_id)
            .where(sa.or_(raised, decided))
            .group_by(RedemptionFlag.rule)
            .order_by(RedemptionFlag.rule),
            Voucher.district_id,
            district_id,
        )
    ).all()
    return [
        # Lazy: the PDF says it in Chinese, then in English.
        FlagFigures(rule, LazyString(rule_label, rule), int(r or 0), int(c or 0), int(j or 0))
        for rule, r, c, j in rows
    ]


def _run_is_green(run: ReconciliationRun, district_id: int | None) -> bool:
    """As the reconciliation page judges a run for the same reader: the city reads every
    check; a district its own findings, its identity row and whether the gateway answered."""
    if district_id is None:
        return bool(run.ok)
    findings = run.findings or {}
    mine = [m for m in findings.get("mismatches", []) if m.get("district_id") == district_id]
    rows = [d for d in findings.get("districts", []) if d.get("district_id") == district_id]
    gateway = (findings.get("gateway") or {}).get("status")
    return not mine and all(d.get("ok") for d in rows) and gateway != "unavailable"


def _reconciliation(period: Period, district_id: int | None) -> list[Reconciliation]:
    in_period = sa.and_(
        ReconciliationRun.month >= period.start, ReconciliationRun.month < period.end
    )
    last = (
        sa.select(sa.func.max(ReconciliationRun.id).label("id"))
        .where(in_period)
        .group_by(ReconciliationRun.month)
        .subquery()
    )
    runs = {
        run.month: run
        for run in db.session.scalars(
            sa.select(ReconciliationRun).join(last, last.c.id == ReconciliationRun.id)
        )
    }
    # Open queue rows: the month's own, and the books' (no month), which count for every month.
    open_rows = dict(
        db.session.execute(
            _scoped(
                sa.select(SettlementException.month, sa.func.count())
                .where(
                    SettlementException.status == "open",
                    sa.or_(
                        sa.and_(
                            SettlementException.month >= period.start,
                            SettlementException.month < period.end,
                        ),
                        SettlementException.month.is_(None),
                    ),
                )
                .group_by(SettlementException.month),
                SettlementException.district_id,
                district_id,
            )
        ).all()
    )
    books = int(open_rows.get(None, 0))
    out = []
    for month in period.months:
        run = runs.get(month)
        open_count = books + int(open_rows.get(month, 0))
        if run is None:
            status = "not_run"
        elif open_count == 0 and _run_is_green(run, district_id):
            status = "green"
        else:
            status = "red"
        out.append(Reconciliation(month, status, run.finished_at if run else None, open_count))
    return out


def districts_for(district_id: int | None) -> list[DistrictRef]:
    statement = _scoped(sa.select(District), District.id, district_id).order_by(District.code)
    return [_ref(d) for d in db.session.scalars(statement)]


def report_for(
    period: Period | str, district_id: int | None, *, today: date | None = None
) -> Report:
    """The report of ``period`` (a ``Period`` or its text) for one district (None: the city).
    The caller has checked that the reader may see ``district_id``."""
    if not isinstance(period, Period):
        period = parse_period(period, today=today)
    today = today or local_today()
    districts = districts_for(district_id)
    district = districts[0] if district_id is not None and districts else None
    months, totals = _months(period, district_id)
    as_of = _certified_as_of(period, today)
    assessments = _assessments(period, district_id)
    refunds, refunds_fen = _fee_refunds(period, district_id)
    return Report(
        period=period,
        district=district,
        generated_at=now_utc(),
        funds=_funds(period, districts, district_id),
        months=months,
        totals=totals,
        elders_by_level=_elders_by_level(period, district_id),
        elders_by_district=_elders_by_district(period, districts, district_id),
        providers_certified=_certified(Provider, as_of, district_id),
        agencies_certified=_certified(Agency, as_of, district_id),
        certified_as_of=as_of,
        assessments_approved=sum(count for _, count in assessments),
        assessments_by_level=assessments,
        fee_refunds_paid=refunds,
        fee_refunds_paid_fen=refunds_fen,
        flags=_flags(period, district_id),
        reconciliation=_reconciliation(period, district_id),
    )
