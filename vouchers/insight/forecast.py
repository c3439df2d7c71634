"""The pool forecast (issue 15): in which month the money runs out at the current take-up,
with what-if inputs, and the answer in words.

Three parts, so the arithmetic can be checked by hand:

- ``history(district, months)``: a few GROUP BY statements over the last complete months
  (Asia/Shanghai) of the scope. Per month:

  * eligible elders = distinct elders issued a voucher of that month that was not revoked
    (death, lost eligibility), or that they used before it was (``take_up.counts``, the
    dashboard's definition too) + the month's shortfalls still unresolved (elders left out
    because the allocation ran out; a resolved one was issued later and is counted once,
    as a voucher).
  * users = distinct elders with at least one 'redeemed' redemption on a voucher of that
    month (``take_up.counts``: users are always among the eligible);
  * out-of-pocket = Σ (price − insurance) of those redeemed redemptions (what the elder
    and the voucher paid between them), and subsidy = Σ subsidy actually paid.

  Over the window: take-up = Σ users / Σ eligible; out-of-pocket per user per month =
  Σ out-of-pocket / Σ users. The eligible count projected is the latest complete month's.

- ``current_inputs(district)``: the history, the policy in force today and the money left.
  The policy: the cap (monthly cap, fen) and ratio (basis points) of each kind's version in
  force today, weighted by the kinds' users in the window (by their vouchers when nobody
  used one; home & community alone when there is no history). One blended cap and ratio is
  a simplification: the projection applies the cap to the average user, not to each kind's
  users separately, and a what-if cap or ratio replaces the blend for both kinds.

  Money left, what the pool can still pay for vouchers (fen):
    city:      pool:available + Σ district:<code>:available + vouchers:outstanding
               + vouchers:held   (ledger balances)
    district:  district:<code>:available + Σ (balance + held) of the district's active
               vouchers   (the voucher rows: the voucher accounts are city-wide)
  Redeemed but unsettled money is owed to providers already and is not counted. The
  current month's vouchers are counted at what is left on them (their unspent part comes
  back at expiry); what they will still spend this month is not taken off, so the answer
  is late by at most that.

- ``project(inputs)``: pure arithmetic, integers only:
    subsidy per user  = min(cap, ⌊out-of-pocket × ratio / 10000⌋)
    monthly spend     = ⌊eligible × take-up(bp) × subsidy per user / 10000⌋
    months it lasts   = ⌊money left / monthly spend⌋
    run-out month     = first month to issue + months it lasts (the first month it cannot
                        pay in full); the pool "lasts until" the month before it.
  The month-by-month table runs from the first month to issue to the run-out month, at most
  ``HORIZON`` months ("lasts beyond" the last of them when the money is not used up by
  then); no spend: it lasts indefinitely and the table is empty.

What-ifs (``parse_what_ifs``) replace any of take-up (%), ratio (%), cap (yuan) and eligible
elders; bad input is ``BadWhatIf`` (400) naming each field, and nothing is stored anywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import date

import sqlalchemy as sa
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from eldercare.db import db
from eldercare.errors import InvalidInput, NotFound
from eldercare.forms import fen_from_yuan, yuan
from eldercare.residents import District
from eldercare.timeutil import local_today
from vouchers.insight import take_up
from vouchers.models import VOUCHER_KINDS, Redemption, Shortfall, Voucher
from vouchers.pool import ledger
from vouchers.pool.policy import policy_on

HORIZON = 60  # months projected at most
HISTORY_MONTHS = 3
MAX_ELIGIBLE = 10_000_000
MAX_CAP_FEN = 10_000_000  # 100,000 yuan, the policy's own limit
CITY_ACCOUNTS = ("pool:available", "vouchers:outstanding", "vouchers:held")
_PERCENT = re.compile(r"^\s*(\d{1,3})(?:\.(\d{1,2}))?\s*%?\s*$")
_WHOLE = re.compile(r"^\s*\d{1,9}\s*$")

TAKE_UP_MESSAGE = _l("Enter the take-up rate as a percent from 0 to 100, for example 38.")
RATIO_MESSAGE = _l("Enter the ratio as a percent from 0 to 100, for example 40.")
CAP_MESSAGE = _l("Enter the cap in yuan from 0 to 100,000, with at most two decimals.")
ELIGIBLE_MESSAGE = _l("Enter the number of eligible elders, a whole number from 0 to 10,000,000.")
WHAT_IF_FIELDS = ("take_up", "ratio", "cap", "eligible")


class BadWhatIf(InvalidInput):
    """A what-if the forecast cannot use: a 400 naming each field; nothing changes."""

    status = 400
    default_message = _l("Some of the what-if values are not valid.")


# --------------------------------------------------------------------------- arithmetic


@dataclass(frozen=True)
class Inputs:
    money_left_fen: int
    eligible: int
    take_up_bp: int  # users per 10,000 eligible elders
    out_of_pocket_fen: int  # price − insurance, per user per month
    ratio_bp: int
    cap_fen: int
    start: date  # the first month to issue


@dataclass(frozen=True)
class MonthRow:
    month: date
    opening_fen: int
    spend_fen: int  # what the month needs
    closing_fen: int  # never below 0
    shortfall_fen: int  # what it cannot pay (only in the run-out month)


@dataclass(frozen=True)
class Projection:
    inputs: Inputs
    subsidy_per_user_fen: int
    monthly_spend_fen: int
    months: int | None  # full months paid; None: no spend, indefinitely
    run_out: date | None  # the first month not paid in full; None past the horizon or no spend
    rows: list[MonthRow] = field(default_factory=list)

    @property
    def indefinite(self) -> bool:
        return self.months is None

    @property
    def beyond(self) -> date | None:
        """The last month of the table when the money outlasts it."""
        if self.months is not None and self.run_out is None:
            return self.rows[-1].month
        return None

    @property
    def lasts_until(self) -> date | None:
        """The last month paid in full (None: not even the first, or no run-out)."""
        if self.run_out is None or self.months == 0:
            return None
        return add_months(self.run_out, -1)


def add_months(month: date, count: int) -> date:
    index = month.year * 12 + month.month - 1 + count
    return date(index // 12, index % 12 + 1, 1)


def project(inputs: Inputs) -> Projection:
    """The month the money runs out, and the table up to it (see the module)."""
    per_user = min(inputs.cap_fen, inputs.out_of_pocket_fen * inputs.ratio_bp // 10_000)
    spend = inputs.eligible * inputs.take_up_bp * per_user // 10_000
    if spend <= 0:
        return Projection(inputs, per_user, 0, None, None, [])
    months = max(inputs.money_left_fen, 0) // spend
    rows, balance = [], max(inputs.money_left_fen, 0)
    for i in range(min(months + 1, HORIZON)):
        paid = min(balance, spend)
        rows.append(
            MonthRow(add_months(inputs.start, i), balance, spend, balance - paid, spend - paid)
        )
        balance -= paid
    run_out = add_months(inputs.start, months) if months < HORIZON else None
    return Projection(inputs, per_user, spend, months, run_out, rows)


# --------------------------------------------------------------------------- what-ifs


def _percent_bp(text: str, field_name: str, message, errors: dict) -> int | None:
    match = _PERCENT.match(text)
    if not match:
        errors[field_name] = message
        return None
    bp = int(match.group(1)) * 100 + int((match.group(2) or "0").ljust(2, "0"))
    if bp > 10_000:
        errors[field_name] = message
        return None
    return bp


def parse_what_ifs(args) -> dict:
    """The what-ifs given (blank ones left out) as {"take_up_bp", "ratio_bp", "cap_fen",
    "eligible"}; ``BadWhatIf`` naming every bad field."""
    errors: dict = {}
    given: dict = {}
    text = {name: (args.get(name) or "").strip() for name in WHAT_IF_FIELDS}
    nul = {n: _l("Remove the NUL characters.") for n, t in text.items() if "\x00" in t}
    if nul:
        raise BadWhatIf(details=nul)
    if text["take_up"]:
        given["take_up_bp"] = _percent_bp(text["take_up"], "take_up", TAKE_UP_MESSAGE, errors)
    if text["ratio"]:
        given["ratio_bp"] = _percent_bp(text["ratio"], "ratio", RATIO_MESSAGE, errors)
    if text["cap"]:
        cap = fen_from_yuan(text["cap"])
        if cap is None or not 0 <= cap <= MAX_CAP_FEN:
            errors["cap"] = CAP_MESSAGE
        given["cap_fen"] = cap
    if text["eligible"]:
        number = int(text["eligible"]) if _WHOLE.match(text["eligible"]) else None
        if number is None or number > MAX_ELIGIBLE:
            errors["eligible"] = ELIGIBLE_MESSAGE
        given["eligible"] = number
    if errors:
        raise BadWhatIf(details=errors)
    return given


def with_what_ifs(inputs: Inputs, given: dict) -> Inputs:
    names = {"take_up_bp", "ratio_bp", "cap_fen", "eligible"}
    return replace(inputs, **{k: v for k, v in given.items() if k in names})


# --------------------------------------------------------------------------- history (SQL)


@dataclass(frozen=True)
class HistoryMonth:
    month: date
    eligible: int
    users: int
    out_of_pocket_fen: int
    subsidy_fen: int

    @property
    def take_up_bp(self) -> int:
        return self.users * 10_000 // self.eligible if self.eligible else 0


@dataclass(frozen=True)
class History:
    months: list[HistoryMonth]
    users_by_kind: dict[str, int]
    vouchers_by_kind: dict[str, int]

    @property
    def eligible(self) -> int:
        """The latest complete month's eligible elders."""
        return self.months[-1].eligible if self.months else 0

    @property
    def take_up_bp(self) -> int:
        eligible = sum(m.eligible for m in self.months)
        return sum(m.users for m in self.months) * 10_000 // eligible if eligible else 0

    @property
    def out_of_pocket_fen(self) -> int:
        users = sum(m.users for m in self.months)
        return sum(m.out_of_pocket_fen for m in self.months) // users if users else 0

    @property
    def subsidy_per_user_fen(self) -> int:
        users = sum(m.users for m in self.months)
        return sum(m.subsidy_fen for m in self.months) // users if users else 0


def history(district: District | None, count: int = HISTORY_MONTHS, today=None) -> History:
    """The last ``count`` complete months of the scope (the city when ``district`` is None)."""
    current = (today or local_today()).replace(day=1)
    months = [add_months(current, -i) for i in range(count, 0, -1)]

    def scoped(statement, column):
        return statement.where(column == district.id) if district is not None else statement

    taken_up = {
        month: (eligible, users)
        for month, eligible, users in db.session.execute(
            take_up.counts(months, district.id if district is not None else None)
        )
    }
    # The kinds' vouchers, to weigh the policy when nobody used one.
    issued = db.session.execute(
        scoped(
            sa.select(
                Voucher.month,
                Voucher.kind,
                sa.func.count(sa.distinct(Voucher.resident_id)),
            )
            .where(Voucher.month.in_(months), Voucher.status != "revoked")
            .group_by(Voucher.month, Voucher.kind),
            Voucher.district_id,
        )
    ).all()
    left_out = dict(
        db.session.execute(
            scoped(
                sa.select(Shortfall.month, sa.func.count())
                .where(Shortfall.month.in_(months), Shortfall.resolved_at.is_(None))
                .group_by(Shortfall.month),
                Shortfall.district_id,
            )
        ).all()
    )
    # Per voucher first (one row per voucher that was used), then per month and kind.
    per_voucher = scoped(
        sa.select(
            Voucher.month.label("month"),
            Voucher.kind.label("kind"),
            sa.func.sum(Redemption.price_fen - Redemption.insurance_fen).label("oop"),
            sa.func.sum(Redemption.subsidy_fen).label("subsidy"),
        )
        .join(Voucher, Voucher.id == Redemption.voucher_id)
        .where(Redemption.status == "redeemed", Voucher.month.in_(months))
        .group_by(Redemption.voucher_id, Voucher.month, Voucher.kind),
        Voucher.district_id,
    ).subquery()
    used = db.session.execute(
        sa.select(
            per_voucher.c.month,
            per_voucher.c.kind,
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(per_voucher.c.oop), 0),
            sa.func.coalesce(sa.func.sum(per_voucher.c.subsidy), 0),
        ).group_by(per_voucher.c.month, per_voucher.c.kind)
    ).all()
    vouchers_by_kind = dict.fromkeys(VOUCHER_KINDS, 0)
    for _month, kind, n in issued:
        vouchers_by_kind[kind] = vouchers_by_kind.get(kind, 0) + n
    spent = {m: [0, 0] for m in months}
    users_by_kind = dict.fromkeys(VOUCHER_KINDS, 0)
    for month, kind, n, oop, subsidy in used:
        spent[month][0] += int(oop)
        spent[month][1] += int(subsidy)
        users_by_kind[kind] = users_by_kind.get(kind, 0) + n
    return History(
        [
            HistoryMonth(
                m,
                taken_up.get(m, (0, 0))[0] + int(left_out.get(m, 0)),
                taken_up.get(m, (0, 0))[1],
                *spent[m],
            )
            for m in months
        ],
        users_by_kind,
        vouchers_by_kind,
    )


@dataclass(frozen=True)
class PolicyNow:
    cap_fen: int
    ratio_bp: int
    by_kind: dict  # kind -> (cap fen, ratio bp, weight)


def policy_now(hist: History, today: date) -> PolicyNow:
    """Each kind's version in force today, blended by the kinds' users (see the module)."""
    weights = hist.users_by_kind if any(hist.users_by_kind.values()) else hist.vouchers_by_kind
    if not any(weights.values()):
        weights = {"home_community": 1}
    by_kind = {}
    for kind in VOUCHER_KINDS:
        try:
            version = policy_on(kind, today)
        except NotFound:
            continue
        by_kind[kind] = (version.monthly_cap_fen, version.ratio_bp, weights.get(kind, 0))
    total = sum(w for _, _, w in by_kind.values())
    if not total:
        return PolicyNow(0, 0, by_kind)
    cap = sum(c * w for c, _, w in by_kind.values()) // total
    ratio = sum(r * w for _, r, w in by_kind.values()) // total
    return PolicyNow(cap, ratio, by_kind)


def money_left(district: District | None) -> int:
    """What the scope can still pay for vouchers, in fen (see the module)."""
    if district is None:
        balances = ledger.balances()
        return sum(balances.get(code, 0) for code in CITY_ACCOUNTS) + sum(
            fen
            for code, fen in balances.items()
            if code.startswith("district:") and code.endswith(":available")
        )
    available = ledger.balances([ledger.district_account_code(district.code)])
    on_vouchers = db.session.scalar(
        sa.select(sa.func.coalesce(sa.func.sum(Voucher.balance_fen + Voucher.held_fen), 0)).where(
            Voucher.status == "active", Voucher.district_id == district.id
        )
    )
    return sum(available.values()) + int(on_vouchers)


def first_month_to_issue(district: District | None, today: date) -> date:
    """This month when none of its vouchers are issued yet in the scope, else the next."""
    current = today.replace(day=1)
    statement = sa.select(Voucher.id).where(Voucher.month == current).limit(1)
    if district is not None:
        statement = statement.where(Voucher.district_id == district.id)
    return add_months(current, 1) if db.session.scalar(statement) is not None else current


@dataclass(frozen=True)
class Forecast:
    history: History
    policy: PolicyNow
    current: Inputs  # from the data
    inputs: Inputs  # with the what-ifs
    projection: Projection


def forecast(district: District | None, what_ifs: dict | None = None, today=None) -> Forecast:
    today = today or local_today()
    hist = history(district, today=today)
    policy = policy_now(hist, today)
    current = Inputs(
        money_left_fen=money_left(district),
        eligible=hist.eligible,
        take_up_bp=hist.take_up_bp,
        out_of_pocket_fen=hist.out_of_pocket_fen,
        ratio_bp=policy.ratio_bp,
        cap_fen=policy.cap_fen,
        start=first_month_to_issue(district, today),
    )
    inputs = with_what_ifs(current, what_ifs or {})
    return Forecast(hist, policy, current, inputs, project(inputs))


# --------------------------------------------------------------------------- in words


def percent_text(bp: int) -> str:
    """3800 -> "38", 3850 -> "38.5", 3825 -> "38.25"."""
    whole, part = divmod(bp, 100)
    return f"{whole}" if not part else f"{whole}.{part:02d}".rstrip("0")


def month_text(month: date) -> str:
    """2026-09 in English, 2026年9月 in Chinese."""
    if str(get_locale() or "zh_CN").startswith("zh"):
        return f"{month.year}年{month.month}月"
    return f"{month:%Y-%m}"


def answer(projection: Projection) -> str:
    rate = percent_text(projection.inputs.take_up_bp) + "%"
    if projection.indefinite:
        return _("No spending is expected: the pool lasts indefinitely.")
    if projection.beyond is not None:
        return _(
            "At %(rate)s take-up the pool lasts beyond %(month)s",
            rate=rate,
            month=month_text(projection.beyond),
        )
    if projection.months == 0:
        return _(
            "At %(rate)s take-up the pool cannot pay %(month)s in full",
            rate=rate,
            month=month_text(projection.run_out),
        )
    return _(
        "At %(rate)s take-up the pool lasts until %(month)s",
        rate=rate,
        month=month_text(projection.lasts_until),
    )


def assumptions(projection: Projection) -> str:
    i = projection.inputs
    return _(
        "%(eligible)s eligible elders, %(rate)s%% of them using their voucher; each spends "
        "%(spend)s a month after insurance, of which the voucher pays %(ratio)s%% up to "
        "%(cap)s, so %(subsidy)s per user: %(monthly)s a month, from %(money)s left, "
        "starting %(start)s.",
        eligible=f"{i.eligible:,}",
        rate=percent_text(i.take_up_bp),
        spend=yuan(i.out_of_pocket_fen),
        ratio=percent_text(i.ratio_bp),
        cap=yuan(i.cap_fen),
        subsidy=yuan(projection.subsidy_per_user_fen),
        monthly=yuan(projection.monthly_spend_fen),
        money=yuan(i.money_left_fen),
        start=month_text(i.start),
    )


def table_rows(projection: Projection) -> list[list]:
    """The month-by-month table for a download: month, then yuan amounts as numbers."""
    return [
        [
            f"{r.month:%Y-%m}",
            r.opening_fen / 100,
            r.spend_fen / 100,
            r.closing_fen / 100,
            r.shortfall_fen / 100,
        ]
        for r in projection.rows
    ]


TABLE_HEADERS = (
    _l("Month"),
    _l("Opening balance (yuan)"),
    _l("Spend (yuan)"),
    _l("Closing balance (yuan)"),
    _l("Not covered (yuan)"),
)
