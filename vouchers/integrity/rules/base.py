"""What every anomaly rule is made of, and the SQL pieces they share.

A rule (``Rule``) judges a set of redemptions given as a SELECT of their ids
(``candidates``) with its thresholds (``params``, the version in force on their service
day) and returns a ``Finding`` per redemption it flags, with its evidence as data. The same
query serves one redemption at its capture and a whole month before settlement, so a rule is
written once and is set-based: it joins what it needs and returns only the hits, which are
few. ``describe(evidence)`` puts the evidence in words in the reader's language when a page
shows it (the evidence itself is stored as data, never as text in one language).

Times are stored as naive UTC; a service's day is its Shanghai date, which is UTC+8 all year
(no daylight saving since 1991), so ``local_day`` adds eight hours in SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time

import sqlalchemy as sa

from eldercare.db import db
from eldercare.timeutil import SHANGHAI

SHANGHAI_OFFSET_HOURS = 8
# Set in a rule's params when it judges one redemption at its capture (not a month's batch):
# a finding that can still change after the capture (a home visit checked out after the
# payment) is judged only in the batch.
AT_CAPTURE = "_at_capture"
# Ids passed to ``IN (…)`` at a time: PostgreSQL takes at most 65,535 parameters a statement,
# and a month's batch may find more hits than that.
ID_CHUNK = 10_000


def chunked(ids: Iterable[int], size: int = ID_CHUNK) -> Iterable[list[int]]:
    """Sorted ids, ``size`` at a time."""
    ordered = sorted(set(ids))
    for start in range(0, len(ordered), size):
        yield ordered[start : start + size]


@dataclass(frozen=True)
class Finding:
    redemption_id: int
    evidence: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Rule:
    code: str
    label: object  # a lazy string: the rule's name in the reader's language
    detect: Callable[[sa.Select, dict], Iterable[Finding]]
    describe: Callable[[dict], str]
    # False: judged only on a month's batch before settlement (statistical rules that
    # compare a provider with its peers over the month).
    at_capture: bool = True


def is_postgres() -> bool:
    return db.session.get_bind().dialect.name == "postgresql"


def local_day(column) -> sa.ColumnElement:
    """The Shanghai date of a UTC timestamp column, in SQL."""
    if is_postgres():
        return sa.cast(column + sa.text(f"interval '{SHANGHAI_OFFSET_HOURS} hours'"), sa.Date)
    return sa.func.date(column, f"+{SHANGHAI_OFFSET_HOURS} hours")


def local_minute_of_day(column) -> sa.ColumnElement:
    """Minutes since Shanghai midnight of a UTC timestamp column, in SQL (0..1439)."""
    if is_postgres():
        shifted = column + sa.text(f"interval '{SHANGHAI_OFFSET_HOURS} hours'")
        return sa.cast(sa.extract("hour", shifted) * 60 + sa.extract("minute", shifted), sa.Integer)
    shifted = sa.func.strftime("%H:%M", column, f"+{SHANGHAI_OFFSET_HOURS} hours")
    return sa.cast(sa.func.substr(shifted, 1, 2), sa.Integer) * 60 + sa.cast(
        sa.func.substr(shifted, 4, 2), sa.Integer
    )


def seconds_between(later, earlier) -> sa.ColumnElement:
    """``later - earlier`` in seconds, in SQL."""
    if is_postgres():
        return sa.extract("epoch", later - earlier)
    return (sa.func.julianday(later) - sa.func.julianday(earlier)) * 86400.0


def utc_start_of(day: date) -> datetime:
    """The UTC instant a Shanghai day begins (for comparing with stored naive UTC)."""
    return datetime.combine(day, time(0), tzinfo=SHANGHAI).astimezone(UTC)


def id_in(column, ids: Iterable[int]) -> sa.ColumnElement:
    """``column IN ids`` for a Python collection of ids of any size: on PostgreSQL one array
    parameter (``= ANY(:ids)``). An IN list binds a parameter per id and a statement carries
    at most 65,535: a month's findings pass that at about a million redemptions (the review
    sample alone, 5%, at 1.3 million)."""
    ids = sorted(set(ids))
    if is_postgres():
        from sqlalchemy.dialects.postgresql import ARRAY

        return column == sa.any_(sa.bindparam(None, ids, type_=ARRAY(sa.Integer)))
    return column.in_(ids)


def candidate_ids(candidates: sa.Select, name: str = "candidate_ids") -> sa.Subquery:
    """The candidates as a derived table (column ``id``, each redemption once), for a query
    that must tell row by row whether a redemption is among them: LEFT JOIN it and test
    ``candidate_ids.c.id IS NOT NULL``. Never ``Redemption.id.in_(candidates)`` as a value (in the
    select list, or under an OR): PostgreSQL runs that as a SubPlan, hashed only while the
    candidates fit in ``work_mem`` (4 MB by default, some 100,000 ids); past that every row
    rescans the whole list, quadratic: minutes for a month of a million. As a filter
    (``WHERE id IN (...)``, ANDed) it is a semi-join and needs no care."""
    from vouchers.models import Redemption

    return sa.select(Redemption.id.label("id")).where(Redemption.id.in_(candidates)).subquery(name)


def facts_of(redemption_ids: Iterable[int]) -> dict[int, dict]:
    """What evidence says of each redemption, in one query: its number, the Shanghai time of
    its check-in, its service category, provider, staff member and the elder's masked name
    (no ID number, address or telephone), and its district (the voucher's): a group's
    evidence may name other districts' redemptions, which a district's officer must not
    see (``flags.evidence_for`` leaves them out by this id)."""
    from eldercare.residents import Resident, mask_name
    from eldercare.timeutil import format_local
    from marketplace.models import Provider, Service
    from vouchers.models import Redemption, Voucher

    rows = [
        row
        for ids in chunked(redemption_ids)
        for row in db.session.execute(
            sa.select(
                Redemption.id,
                Redemption.checked_in_at,
                Redemption.checked_out_at,
                Redemption.staff_user_id,
                Redemption.subsidy_fen,
                Service.category_code,
                Provider.name,
                Resident.name,
                Voucher.district_id,
            )
            .join(Voucher, Voucher.id == Redemption.voucher_id)
            .join(Provider, Provider.id == Redemption.provider_id)
            .join(Resident, Resident.id == Redemption.resident_id)
            .outerjoin(Service, Service.id == Redemption.service_id)
            .where(Redemption.id.in_(ids))
        )
    ]
    return {
        row[0]: {
            "id": row[0],
            "at": format_local(row[1]),
            "out": format_local(row[2]) if row[2] is not None else None,
            "staff": row[3],
            "subsidy_fen": row[4],
            "category": row[5],
            "provider": row[6],
            "elder": mask_name(row[7] or ""),
            "district": row[8],
        }
        for row in rows
    }


def category_label(code: str | None) -> str:
    """A service category's name in the reader's language (its code if unknown)."""
    from flask_babel import get_locale

    from marketplace.models import ServiceCategory

    if not code:
        return "—"
    category = db.session.get(ServiceCategory, code)
    if category is None:
        return code
    return category.display_name(str(get_locale() or "zh_CN"))


def redemption_words(evidence: dict) -> dict:
    """The flagged redemption's elder, time, number and provider ("—" where the evidence does
    not say), as the ``describe`` functions' words name it: pass them all, a sentence uses the
    ones it names."""
    r = evidence.get("redemption", {})
    return {key: r.get(key, "—") for key in ("elder", "at", "id", "provider")}


def listing(items: Iterable[dict], limit: int = 10) -> str:
    """ "#101 2026-03-02 09:10 助餐, #102 …": the redemptions a finding names, for its words."""
    items = list(items)
    shown = ", ".join(
        f"#{item['id']} {item['at']} {category_label(item.get('category'))}"
        for item in items[:limit]
    )
    return shown + (" …" if len(items) > limit else "")


def plus_days(column, days) -> sa.ColumnElement:
    """A UTC timestamp column plus ``days`` (an SQL integer expression) whole days."""
    if is_postgres():
        return column + sa.func.make_interval(0, 0, 0, days)
    return sa.func.datetime(column, "+" + sa.cast(days, sa.String) + " days")
