"""The bureau dashboard's figures (issue 15): set-based aggregates, one query per figure.

Every function takes ``district_id`` (None: the whole city) and a month (the first day of
a month, Asia/Shanghai) or a list of months, and answers plain rows (dicts of ints and
strings, money in integer fen), the same rows for the page, its downloads and the API.
No figure reads rows one by one: each is a GROUP BY over the month's vouchers or
redemptions (or the journal), so a city's month costs one scan per figure, whatever its
size (``bench/insight_export.py`` measures the heaviest at 1,000,000 redemptions).

What counts, so the page, a download and the API say the same thing:

- **month of a redemption** is its voucher's month (a voucher is used only in its own
  month; the bureau's redemption export filters the same way);
- **used**: redemptions whose status is ``redeemed`` now (a reversed one is not use);
- **expired**: vouchers whose status is ``expired``; expiry sets their balance to zero and
  returns it to the district in one journal entry per district and batch (kind ``expire``,
  cause ``expiry``, ``"YYYY-MM/<district code>/..."``: ``issuance.monthly.expire_month``),
  so the balance returned is read from those entries' lines on the district accounts;
- **district** of a voucher or redemption is the voucher's ``district_id`` (the allocation
  it was reserved from).
"""

from __future__ import annotations

from datetime import date, datetime, time

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from eldercare.db import db
from eldercare.residents import District
from eldercare.timeutil import SHANGHAI
from marketplace.models import Provider, Service, ServiceCategory
from vouchers.insight.take_up import counts as take_up_counts
from vouchers.integrity import flags
from vouchers.integrity.models import RedemptionFlag
from vouchers.models import JournalEntry, JournalLine, LedgerAccount, Redemption, Voucher
from vouchers.settlement.models import FROZEN_STATUSES, Statement, StatementLine

TOP_PROVIDERS = 10
OTHERS = "others"  # the key of the "all other providers" row
ALL_RULES = "all"  # the key of the open flags' total row (no rule has this code)
ALL_RULES_LABEL = _l("Every rule (in the subsidy, a redemption flagged by several counted once)")


# --------------------------------------------------------------------------- months


def next_month(month: date) -> date:
    return date(month.year + (month.month == 12), month.month % 12 + 1, 1)


def months_ending(last: date, count: int = 12) -> list[date]:
    """``count`` months up to and including ``last``, oldest first."""
    months = [last.replace(day=1)]
    for _ in range(count - 1):
        first = months[0]
        months.insert(0, date(first.year - (first.month == 1), (first.month - 2) % 12 + 1, 1))
    return months


def months_of_year(year: int) -> list[date]:
    return [date(year, m, 1) for m in range(1, 13)]


def month_start(month: date) -> datetime:
    """The first instant of a Shanghai month, aware (compared with UTC timestamps)."""
    return datetime.combine(month, time(0), tzinfo=SHANGHAI)


def _bucket(column, months: list[date]):
    """Which of ``months`` a timestamp falls in, as the month's index (SQL CASE over the
    month boundaries: portable, and it keeps the timestamp's index usable); -1 before the
    first month. Rows after the last month are left to the caller's WHERE."""
    return sa.case(
        (column < month_start(months[0]), -1),
        *[(column < month_start(next_month(m)), i) for i, m in enumerate(months)],
        else_=len(months),
    )


def _sum_by(rows):
    """``SELECT month, SUM(fen) ... GROUP BY month`` over a select of (month, fen) whose
    month is an expression: grouping by the subquery's column, because PostgreSQL does not
    see an expression with bound parameters in SELECT and in GROUP BY as the same one."""
    inner = rows.subquery()
    return sa.select(inner.c.month, sa.func.coalesce(sa.func.sum(inner.c.fen), 0)).group_by(
        inner.c.month
    )


def _district_account():
    """The district account code of a district row: ``district:<code>:available``."""
    return sa.literal("district:") + District.code + sa.literal(":available")


# --------------------------------------------------------------------------- by month


def by_month(district_id: int | None, months: list[date]) -> list[dict]:
    """Per month: vouchers issued (count, face value), used (redeemed redemptions: count,
    subsidy), expired (count, balance returned to the district at expiry). Three queries
    (vouchers, redemptions, expiry entries), each one GROUP BY month."""
    rows = {
        m: {
            "month": f"{m:%Y-%m}",
            "issued": 0,
            "issued_fen": 0,
            "used": 0,
            "used_fen": 0,
            "expired": 0,
            "returned_fen": 0,
        }
        for m in months
    }
    if not months:
        return []
    first, last = months[0], months[-1]

    vouchers = sa.select(
        Voucher.month,
        sa.func.count(Voucher.id),
        sa.func.coalesce(sa.func.sum(Voucher.face_value_fen), 0),
        sa.func.count(sa.case((Voucher.status == "expired", 1))),
    ).where(Voucher.month >= first, Voucher.month <= last)
    if district_id is not None:
        vouchers = vouchers.where(Voucher.district_id == district_id)
    for month, issued, face, expired in db.session.execute(vouchers.group_by(Voucher.month)):
        if month in rows:
            rows[month].update(issued=issued, issued_fen=int(face), expired=expired)

    used = (
        sa.select(
            Voucher.month,
            sa.func.count(Redemption.id),
            sa.func.coalesce(sa.func.sum(Redemption.subsidy_fen), 0),
        )
        .join(Voucher, Voucher.id == Redemption.voucher_id)
        .where(Redemption.status == "redeemed", Voucher.month >= first, Voucher.month <= last)
    )
    if district_id is not None:
        used = used.where(Voucher.district_id == district_id)
    for month, count, subsidy in db.session.execute(used.group_by(Voucher.month)):
        if month in rows:
            rows[month].update(used=count, used_fen=int(subsidy))

    # The month an expiry entry closed is the first 7 characters of its cause id.
    entry_month = sa.func.substr(JournalEntry.cause_id, 1, 7)
    texts = [f"{m:%Y-%m}" for m in months]
    lines = (
        sa.select(entry_month.label("month"), JournalLine.amount_fen.label("fen"))
        .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
        .join(LedgerAccount, LedgerAccount.id == JournalLine.account_id)
        .join(District, LedgerAccount.code == _district_account())
        .where(
            JournalEntry.kind == "expire",
            JournalEntry.cause_type == "expiry",
            entry_month.in_(texts),
        )
    )
    if district_id is not None:
        lines = lines.where(District.id == district_id)
    by_text = {r["month"]: r for r in rows.values()}
    for text, fen in db.session.execute(_sum_by(lines)):
        by_text[text]["returned_fen"] = int(fen)
    return [rows[m] for m in months]


# --------------------------------------------------------------------------- burn-down


def burn_down(district_id: int | None, months: list[date]) -> list[dict]:
    """The pool's money at each month's end (Asia/Shanghai), cumulative from the start:

    - ``funded_fen``: money put in. For the city, the top-ups received into the pool
      (journal entries of kind ``topup``, their line on ``pool:available``); for a
      district, its allocations net of what was taken back (kind ``allocation``, lines on
      ``district:<code>:available``).
    - ``spent_fen``: voucher subsidy of redemptions redeemed by then (status ``redeemed``
      now, by ``redeemed_at``; reversed ones are not spent), of the scope's vouchers.
    - ``left_fen``: funded less spent (what is still in the pool, on vouchers or held).

    Two queries: each sums what came before the first month in one bucket and each month's
    own movements in another (GROUP BY the month a timestamp falls in); the running totals
    over the twelve-odd buckets are added up here.
    """
    if not months:
        return []
    end = month_start(next_month(months[-1]))

    funded = (
        sa.select(
            _bucket(JournalEntry.occurred_at, months).label("month"),
            JournalLine.amount_fen.label("fen"),
        )
        .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
        .join(LedgerAccount, LedgerAccount.id == JournalLine.account_id)
        .where(JournalEntry.occurred_at < end)
    )
    if district_id is None:
        funded = funded.where(JournalEntry.kind == "topup", LedgerAccount.code == "pool:available")
    else:
        funded = funded.join(District, LedgerAccount.code == _district_account()).where(
            JournalEntry.kind == "allocation", District.id == district_id
        )
    funded_by = dict(db.session.execute(_sum_by(funded)).all())

    spent = sa.select(
        _bucket(Redemption.redeemed_at, months).label("month"),
        Redemption.subsidy_fen.label("fen"),
    ).where(Redemption.status == "redeemed", Redemption.redeemed_at < end)
    if district_id is not None:
        spent = spent.join(Voucher, Voucher.id == Redemption.voucher_id).where(
            Voucher.district_id == district_id
        )
    spent_by = dict(db.session.execute(_sum_by(spent)).all())

    funded_total = int(funded_by.get(-1, 0))
    spent_total = int(spent_by.get(-1, 0))
    rows = []
    for i, m in enumerate(months):
        funded_total += int(funded_by.get(i, 0))
        spent_total += int(spent_by.get(i, 0))
        rows.append(
            {
                "month": f"{m:%Y-%m}",
                "funded_fen": funded_total,
                "spent_fen": spent_total,
                "left_fen": funded_total - spent_total,
            }
        )
    return rows


# --------------------------------------------------------------------------- one month


def _redeemed_in(month: date, district_id: int | None):
    """The WHERE of a month's used redemptions in scope (joined to their voucher)."""
    conditions = [Redemption.status == "redeemed", Voucher.month == month]
    if district_id is not None:
        conditions.append(Voucher.district_id == district_id)
    return conditions


def by_district(district_id: int | None, month: date, locale: str = "zh_CN") -> list[dict]:
    """The month's used redemptions per district (count, subsidy, price), every district
    in scope listed, zero when it had none."""
    used = (
        sa.select(
            Voucher.district_id.label("district_id"),
            sa.func.count(Redemption.id).label("used"),
            sa.func.sum(Redemption.subsidy_fen).label("subsidy"),
            sa.func.sum(Redemption.price_fen).label("price"),
        )
        .join(Voucher, Voucher.id == Redemption.voucher_id)
        .where(*_redeemed_in(month, district_id))
        .group_by(Voucher.district_id)
        .subquery()
    )
    statement = (
        sa.select(District, used.c.used, used.c.subsidy, used.c.price)
        .outerjoin(used, used.c.district_id == District.id)
        .order_by(District.code)
    )
    if district_id is not None:
        statement = statement.where(District.id == district_id)
    return [
        {
            "district": d.code,
            "name": d.display_name(locale),
            "used": used_count or 0,
            "subsidy_fen": int(subsidy or 0),
            "price_fen": int(price or 0),
        }
        for d, used_count, subsidy, price in db.session.execute(statement)
    ]


def by_category(district_id: int | None, month: date, locale: str = "zh_CN") -> list[dict]:
    """The month's used redemptions per service category (marketplace code and label),
    largest subsidy first; a redemption without a service is under ``None``."""
    statement = (
        sa.select(
            Service.category_code,
            ServiceCategory.name_zh,
            ServiceCategory.name_en,
            sa.func.count(Redemption.id),
            sa.func.sum(Redemption.subsidy_fen),
        )
        .join(Voucher, Voucher.id == Redemption.voucher_id)
        .outerjoin(Service, Service.id == Redemption.service_id)
        .outerjoin(ServiceCategory, ServiceCategory.code == Service.category_code)
        .where(*_redeemed_in(month, district_id))
        .group_by(Service.category_code, ServiceCategory.name_zh, ServiceCategory.name_en)
        .order_by(sa.func.sum(Redemption.subsidy_fen).desc(), Service.category_code)
    )
    return [
        {
            "category": code,
            "label": (zh if locale.startswith("zh") else en) or code or "—",
            "used": count,
            "subsidy_fen": int(subsidy or 0),
        }
        for code, zh, en, count, subsidy in db.session.execute(statement)
    ]


def by_provider(district_id: int | None, month: date, top: int = TOP_PROVIDERS) -> list[dict]:
    """The month's used redemptions per provider: the ``top`` by subsidy (ties by id), then
    one row "others" adding up the rest. One query: the providers' totals ranked with a
    window function, then grouped again by "rank within the top, else others"."""
    per_provider = (
        sa.select(
            Redemption.provider_id.label("provider_id"),
            sa.func.count(Redemption.id).label("used"),
            sa.func.sum(Redemption.subsidy_fen).label("subsidy"),
        )
        .join(Voucher, Voucher.id == Redemption.voucher_id)
        .where(*_redeemed_in(month, district_id))
        .group_by(Redemption.provider_id)
        .subquery()
    )
    ranked = sa.select(
        per_provider,
        sa.func.row_number()
        .over(order_by=(per_provider.c.subsidy.desc(), per_provider.c.provider_id))
        .label("rank"),
    ).subquery()
    within = ranked.c.rank <= top
    folded = sa.select(
        sa.case((within, ranked.c.rank), else_=top + 1).label("place"),
        sa.case((within, ranked.c.provider_id), else_=None).label("provider_id"),
        ranked.c.used,
        ranked.c.subsidy,
    ).subquery()
    statement = (
        sa.select(
            folded.c.place,
            folded.c.provider_id,
            sa.func.count().label("providers"),
            sa.func.sum(folded.c.used),
            sa.func.sum(folded.c.subsidy),
        )
        .group_by(folded.c.place, folded.c.provider_id)
        .order_by(folded.c.place)
    )
    rows = db.session.execute(statement).all()
    names = dict(
        db.session.execute(
            sa.select(Provider.id, Provider.name).where(
                Provider.id.in_([r.provider_id for r in rows if r.provider_id is not None])
            )
        ).all()
    )
    return [
        {
            "provider_id": r.provider_id,
            "provider": names.get(r.provider_id) if r.provider_id is not None else OTHERS,
            "providers": r.providers,
            "used": int(r[3] or 0),
            "subsidy_fen": int(r[4] or 0),
        }
        for r in rows
    ]


def take_up(district_id: int | None, month: date, locale: str = "zh_CN") -> list[dict]:
    """Per district: elders eligible (issued a voucher of the month not revoked, or used
    before it was), how many of them used it, and the share in basis points (10000 =
    everyone); the definition is ``take_up.counts``, the forecast's too. One query."""
    per_district = take_up_counts([month], district_id, by_district=True).subquery()
    statement = (
        sa.select(District, per_district.c.eligible, per_district.c.users)
        .outerjoin(per_district, per_district.c.district_id == District.id)
        .order_by(District.code)
    )
    if district_id is not None:
        statement = statement.where(District.id == district_id)
    rows = []
    for d, holders, users in db.session.execute(statement):
        holders, users = holders or 0, users or 0
        rows.append(
            {
                "district": d.code,
                "name": d.display_name(locale),
                "holders": holders,
                "users": users,
                "share_bp": (users * 10000 // holders) if holders else 0,
            }
        )
    return rows


def _held():
    """Is a flagged redemption held out of settlement now (as ``flags.is_held`` judges one):
    still completed (a reversal leaves its flags open, but returned the subsidy) and not a
    line of an approved or paid statement (flagged after approval: paid already)."""
    settled = (
        sa.select(StatementLine.redemption_id)
        .join(Statement, Statement.id == StatementLine.statement_id)
        .where(
            StatementLine.redemption_id == Redemption.id,
            Statement.status.in_(FROZEN_STATUSES),
        )
        .exists()
    )
    return sa.and_(Redemption.status.in_(flags.FLAGGABLE_STATUSES), ~settled)


def open_flags(district_id: int | None, month: date) -> list[dict]:
    """Open redemption flags (``redemption_flags.status = 'open'``) on the month's
    redemptions, per rule, with the subsidy they hold out of settlement (only redemptions
    really held: ``_held``), then, when there are any, a row ``ALL_RULES`` adding them up
    with each redemption's subsidy once (one redemption may carry flags of several rules).
    The label is ``flags.rule_label`` (a hold by hand's or an anomaly rule's name), else
    the code. One query: the rules' rows and the total, UNION ALL."""
    held_fen = sa.case((_held(), Redemption.subsidy_fen), else_=0)

    def scoped(statement):
        statement = statement.join(Redemption, Redemption.id == RedemptionFlag.redemption_id)
        statement = statement.join(Voucher, Voucher.id == Redemption.voucher_id).where(
            RedemptionFlag.status == "open", Voucher.month == month
        )
        if district_id is not None:
            statement = statement.where(Voucher.district_id == district_id)
        return statement

    per_rule = scoped(
        sa.select(
            RedemptionFlag.rule.label("rule"),
            sa.func.count(RedemptionFlag.id).label("open"),
            sa.func.coalesce(sa.func.sum(held_fen), 0).label("fen"),
        )
    ).group_by(RedemptionFlag.rule)
    # The total: each flagged redemption once (its subsidy if held), its flags counted.
    per_redemption = scoped(
        sa.select(
            sa.func.count(RedemptionFlag.id).label("open"),
            sa.func.max(held_fen).label("fen"),
        )
    ).group_by(Redemption.id)
    inner = per_redemption.subquery()
    total = sa.select(
        sa.literal(ALL_RULES).label("rule"),
        sa.func.coalesce(sa.func.sum(inner.c.open), 0),
        sa.func.coalesce(sa.func.sum(inner.c.fen), 0),
    )
    rows = [
        (rule, int(count), int(fen))
        for rule, count, fen in db.session.execute(sa.union_all(per_rule, total))
    ]
    rules = sorted((r for r in rows if r[0] != ALL_RULES), key=lambda r: (-r[1], r[0]))
    if not rules:
        return []
    everything = next(r for r in rows if r[0] == ALL_RULES)
    return [
        {
            "rule": rule,
            "label": flags.rule_label(rule) if rule != ALL_RULES else str(ALL_RULES_LABEL),
            "open": count,
            "subsidy_fen": fen,
        }
        for rule, count, fen in [*rules, everything]
    ]
