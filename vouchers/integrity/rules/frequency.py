"""Rule 5: too many redemptions for one elder.

- ``daily_frequency``: more than ``max_per_day`` (3) completed redemptions for one elder on
  one service day (Shanghai date).
- ``category_frequency``: more than a service category's limit for one elder, per service
  day or per voucher month (``limits``: ``{category: {"per": "day"|"month", "max": n}}``;
  a category without a limit is not judged).

Counted: the elder's completed redemptions (status ``redeemed``), settled or not, flagged or
not; not those checked in or waiting for payment (not yet a service the voucher paid: a
check-in may still be cancelled, and it is judged when it is captured), nor those reversed
or failed. Which redemption of the day is the extra one cannot be told, so every candidate
of an elder-day (elder-month) over the limit is flagged, each with the whole list as its
evidence: at capture the one captured (the earlier ones were captured under the limit), in
the batch all of them that are still to settle.

One GROUP BY query finds the elder-days over the limit among the candidates' elders and
days, joined back to the candidates and to the redemptions it counted (the evidence).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta

import sqlalchemy as sa
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy.orm import aliased

from eldercare.db import db
from marketplace.models import Service
from vouchers.integrity.rules.base import (
    Finding,
    Rule,
    category_label,
    facts_of,
    listing,
    local_day,
)
from vouchers.models import Redemption, Voucher

COUNTED = "redeemed"
# The redemptions an evidence lists (its count says how many there were).
MAX_LISTED = 30


def _day_text(value) -> str:
    """A day from SQL (a date on PostgreSQL, 'YYYY-MM-DD' text on SQLite) as ISO text."""
    return value.isoformat() if isinstance(value, date) else str(value)


def _window(candidates: sa.Select) -> tuple[datetime, datetime] | None:
    """From a day before the earliest candidate to a day after the latest: every redemption
    on any of the candidates' service days lies inside (an index range on check-in time,
    where the exact day test alone would read each elder's whole history). None: no
    candidates. Read once, as values: as scalar subqueries in the query each use of them
    evaluated the candidates again (four times a million rows at a month)."""
    first, last = db.session.execute(
        sa.select(
            sa.func.min(Redemption.checked_in_at), sa.func.max(Redemption.checked_in_at)
        ).where(Redemption.id.in_(candidates))
    ).one()
    if first is None:
        return None
    return first - timedelta(hours=24), last + timedelta(hours=24)


def _elders_of(candidates: sa.Select) -> sa.Select:
    return sa.select(Redemption.resident_id).where(Redemption.id.in_(candidates))


def _evidence(rows, facts: dict[int, dict], threshold: int, **extra) -> list[Finding]:
    """``rows``: (candidate id, period, count, counted id) → a finding per candidate."""
    members: dict[int, list[int]] = defaultdict(list)
    period: dict[int, tuple] = {}
    for candidate, when, count, member in rows:
        members[candidate].append(member)
        period[candidate] = (when, count)
    found = []
    for candidate in sorted(members):
        when, count = period[candidate]
        listed = sorted(set(members[candidate]))[:MAX_LISTED]
        evidence = {
            "redemption": facts[candidate],
            "elder": facts[candidate]["elder"],
            "count": int(count),
            "threshold": threshold,
            "redemptions": [facts[m] for m in listed],
            **extra,
        }
        evidence.update(when)
        found.append(Finding(candidate, evidence))
    return found


# --------------------------------------------------------------------------- daily


def detect_daily(candidates: sa.Select, params: dict) -> list[Finding]:
    limit = int(params.get("max_per_day", 3))
    window = _window(candidates)
    if window is None:
        return []
    start, end = window
    counted = aliased(Redemption)
    day = local_day(counted.checked_in_at)
    busy = (
        sa.select(
            counted.resident_id.label("resident_id"),
            day.label("day"),
            sa.func.count(counted.id).label("n"),
        )
        .where(
            counted.status == COUNTED,
            counted.resident_id.in_(_elders_of(candidates)),
            counted.checked_in_at > start,
            counted.checked_in_at < end,
        )
        .group_by(counted.resident_id, day)
        .having(sa.func.count(counted.id) > limit)
        .subquery()
    )
    member = aliased(Redemption)
    rows = db.session.execute(
        sa.select(Redemption.id, busy.c.day, busy.c.n, member.id)
        .join(
            busy,
            sa.and_(
                busy.c.resident_id == Redemption.resident_id,
                busy.c.day == local_day(Redemption.checked_in_at),
            ),
        )
        .join(
            member,
            sa.and_(
                member.resident_id == Redemption.resident_id,
                member.status == COUNTED,
                member.checked_in_at > start,
                member.checked_in_at < end,
                local_day(member.checked_in_at) == busy.c.day,
            ),
        )
        .where(Redemption.id.in_(candidates))
        .order_by(Redemption.id, member.checked_in_at, member.id)
    ).all()
    if not rows:
        return []
    facts = facts_of([r[0] for r in rows] + [r[3] for r in rows])
    return _evidence([(c, {"day": _day_text(d)}, n, m) for c, d, n, m in rows], facts, limit)


def describe_daily(evidence: dict) -> str:
    return _(
        "%(elder)s had %(count)s redemptions on %(day)s (threshold %(threshold)s): %(list)s",
        elder=evidence.get("elder", "—"),
        count=evidence.get("count", "—"),
        day=evidence.get("day", "—"),
        threshold=evidence.get("threshold", "—"),
        list=listing(evidence.get("redemptions") or []),
    )


# --------------------------------------------------------------------------- by category


def _limits(params: dict) -> dict[str, dict[str, int]]:
    """The well-formed limits, by period: {"day": {category: max}, "month": {...}}."""
    by_period: dict[str, dict[str, int]] = {"day": {}, "month": {}}
    for category, limit in (params.get("limits") or {}).items():
        if not isinstance(limit, dict) or limit.get("per") not in by_period:
            continue
        try:
            most = int(limit["max"])
        except (KeyError, TypeError, ValueError):
            continue
        by_period[limit["per"]][str(category)] = most
    return by_period


def _over_limit(candidates: sa.Select, per: str, limits: dict[str, int]) -> list[tuple]:
    """(candidate id, period, category, count, limit, counted id) for the candidates whose
    elder had more of their category in their day (month) than its limit."""
    counted = aliased(Redemption)
    counted_service = aliased(Service)
    counted_voucher = aliased(Voucher)
    most = sa.case(
        *((counted_service.category_code == code, n) for code, n in limits.items()), else_=None
    )
    member = aliased(Redemption)
    member_service = aliased(Service)
    member_voucher = aliased(Voucher)
    if per == "day":
        window = _window(candidates)
        if window is None:
            return []
        start, end = window
        key = local_day(counted.checked_in_at)
        scope = [counted.checked_in_at > start, counted.checked_in_at < end]
        candidate_key = local_day(Redemption.checked_in_at)
        member_key = local_day(member.checked_in_at)
        member_scope = [member.checked_in_at > start, member.checked_in_at < end]
    else:
        months = (
            sa.select(Voucher.month)
            .join(Redemption, Redemption.voucher_id == Voucher.id)
            .where(Redemption.id.in_(candidates))
        )
        key = counted_voucher.month
        scope = [counted_voucher.month.in_(months)]
        candidate_key = Voucher.month
        member_key = member_voucher.month
        member_scope = []
    busy = (
        sa.select(
            counted.resident_id.label("resident_id"),
            counted_service.category_code.label("category"),
            key.label("period"),
            sa.func.count(counted.id).label("n"),
            most.label("most"),
        )
        .join(counted_service, counted_service.id == counted.service_id)
        .join(counted_voucher, counted_voucher.id == counted.voucher_id)
        .where(
            counted.status == COUNTED,
            counted.resident_id.in_(_elders_of(candidates)),
            counted_service.category_code.in_(list(limits)),
            *scope,
        )
        .group_by(counted.resident_id, counted_service.category_code, key)
        .having(sa.func.count(counted.id) > most)
        .subquery()
    )
    service = aliased(Service)
    return [
        tuple(row)
        for row in db.session.execute(
            sa.select(Redemption.id, busy.c.period, busy.c.category, busy.c.n, busy.c.most)
            .add_columns(member.id)
            .join(service, service.id == Redemption.service_id)
            .join(Voucher, Voucher.id == Redemption.voucher_id)
            .join(
                busy,
                sa.and_(
                    busy.c.resident_id == Redemption.resident_id,
                    busy.c.category == service.category_code,
                    busy.c.period == candidate_key,
                ),
            )
            .join(
                member,
                sa.and_(
                    member.resident_id == Redemption.resident_id,
                    member.status == COUNTED,
                    *member_scope,
                ),
            )
            .join(
                member_service,
                sa.and_(
                    member_service.id == member.service_id,
                    member_service.category_code == busy.c.category,
                ),
            )
            .join(
                member_voucher,
                sa.and_(member_voucher.id == member.voucher_id, member_key == busy.c.period),
            )
            .where(Redemption.id.in_(candidates))
            .order_by(Redemption.id, member.checked_in_at, member.id)
        )
    ]


def detect_category(candidates: sa.Select, params: dict) -> list[Finding]:
    """One query for the categories limited by the day, one for those by the month."""
    found: list[Finding] = []
    for per, limits in _limits(params).items():
        if not limits:
            continue
        rows = _over_limit(candidates, per, limits)
        if not rows:
            continue
        facts = facts_of([r[0] for r in rows] + [r[5] for r in rows])
        for category in sorted({r[2] for r in rows}):
            mine = [r for r in rows if r[2] == category]
            found.extend(
                _evidence(
                    [(c, _period(per, p), n, m) for c, p, _cat, n, _most, m in mine],
                    facts,
                    int(mine[0][4]),
                    category=category,
                    per=per,
                )
            )
    return found


def _period(per: str, value) -> dict:
    """The evidence's period: {"day": "2026-03-02"} or {"month": "2026-03"}."""
    text = _day_text(value)
    return {"day": text} if per == "day" else {"month": text[:7]}


def describe_category(evidence: dict) -> str:
    values = {
        "elder": evidence.get("elder", "—"),
        "count": evidence.get("count", "—"),
        "category": category_label(evidence.get("category")),
        "threshold": evidence.get("threshold", "—"),
        "list": listing(evidence.get("redemptions") or []),
    }
    if evidence.get("per") == "month":
        return _(
            "%(elder)s had %(count)s %(category)s redemptions in %(month)s (at most "
            "%(threshold)s a month): %(list)s",
            month=evidence.get("month", "—"),
            **values,
        )
    return _(
        "%(elder)s had %(count)s %(category)s redemptions on %(day)s (at most %(threshold)s "
        "a day): %(list)s",
        day=evidence.get("day", "—"),
        **values,
    )


RULES = [
    Rule(
        "daily_frequency",
        _l("Too many redemptions in one day"),
        detect_daily,
        describe_daily,
    ),
    Rule(
        "category_frequency",
        _l("A service more often than its frequency limit"),
        detect_category,
        describe_category,
    ),
]
