"""Rule 7: one phone or one network address checking in home services for many elders, and
services checked in outside the provider's opening hours.

- ``shared_device``: on one Shanghai day, one device (``Redemption.check_in_device``: the
  scanner app's API token, or the scan page's sign-in session) or one network address
  (``check_in_ip``, of one provider) checked in home-delivered services for more than
  ``max_elders_per_day`` (8) distinct elders. A home visit is checked in at the elder's door,
  so one phone at that many doors in a day, or many home visits from one office's network,
  suggests check-ins made without going there. Only services delivered at home count: a
  canteen's counter phone serving 60 elders at the provider's premises is normal. Every
  check-in counts whatever became of it (a phone that claimed to be at the door is the
  point); each redemption among the candidates in such a device-day is flagged. An address
  is counted per provider: phones on a mobile network share the carrier's public addresses
  (carrier-grade NAT), and many providers' caregivers behind one of them is no sign of
  anything. One GROUP BY over the device-days (and address-days) the candidates fall in,
  joined back to their members.
- ``outside_hours``: the check-in (Shanghai time) is more than ``grace_minutes`` (30) before
  the provider opens or after it closes on that weekday, or on a weekday it is closed; the
  neighbouring days' hours count across midnight. A provider that published no hours (or
  not one interval on any day) is never judged, nor are services sold by the day or month
  (stays). Opening hours are JSON in a text column, so SQL selects the candidates with their
  provider, weekday and minute of the day (one query, streamed with ``yield_per``) and
  Python compares them with each provider's hours, read once per provider (one more query):
  no query per redemption.
"""

from __future__ import annotations

import json
from collections import defaultdict

import sqlalchemy as sa
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from eldercare.db import db
from marketplace.models import Provider, Service
from marketplace.providers import WEEKDAYS
from vouchers.integrity.rules.base import (
    SHANGHAI_OFFSET_HOURS,
    Finding,
    Rule,
    candidate_ids,
    facts_of,
    is_postgres,
    listing,
    local_day,
    local_minute_of_day,
    redemption_words,
)
from vouchers.models import Redemption

HOME = "home"
STAY_UNITS = ("day", "month")
BY_DEVICE, BY_ADDRESS = "device", "ip"
LISTED = 20  # the redemptions of a device-day an evidence lists (it counts them all)
STREAM_ROWS = 5000
DAY_MINUTES = 24 * 60


# --------------------------------------------------------------------------- shared_device


def masked_device(key: str | None) -> str:
    """A device key shortened for the bureau's eyes: its last six characters."""
    key = key or ""
    return key if len(key) <= 6 else "…" + key[-6:]


def detect_shared(candidates: sa.Select, params: dict) -> list[Finding]:
    threshold = int(params.get("max_elders_per_day", 8))
    day = local_day(Redemption.checked_in_at)
    home = sa.and_(Service.id == Redemption.service_id, Service.delivery_place == HOME)
    # The candidates' home services with their device, address, provider and day.
    mine = (
        sa.select(
            Redemption.check_in_device.label("device"),
            Redemption.check_in_ip.label("ip"),
            Redemption.provider_id.label("provider_id"),
            day.label("day"),
        )
        .join(Service, home)
        .where(Redemption.id.in_(candidates))
        .cte("mine")
    )
    elders = sa.func.count(sa.distinct(Redemption.resident_id))
    by_device = (
        sa.select(
            sa.literal_column(f"'{BY_DEVICE}'").label("source"),
            Redemption.check_in_device.label("key"),
            sa.cast(sa.null(), sa.Integer).label("provider_id"),
            day.label("day"),
            elders.label("elders"),
        )
        .join(Service, home)
        .where(
            Redemption.check_in_device.is_not(None),
            sa.tuple_(Redemption.check_in_device, day).in_(
                sa.select(mine.c.device, mine.c.day).where(mine.c.device.is_not(None))
            ),
        )
        .group_by(Redemption.check_in_device, day)
        .having(elders > threshold)
    )
    by_address = (
        sa.select(
            sa.literal_column(f"'{BY_ADDRESS}'").label("source"),
            Redemption.check_in_ip.label("key"),
            Redemption.provider_id.label("provider_id"),
            day.label("day"),
            elders.label("elders"),
        )
        .join(Service, home)
        .where(
            Redemption.check_in_ip.is_not(None),
            sa.tuple_(Redemption.check_in_ip, Redemption.provider_id, day).in_(
                sa.select(mine.c.ip, mine.c.provider_id, mine.c.day).where(mine.c.ip.is_not(None))
            ),
        )
        .group_by(Redemption.check_in_ip, Redemption.provider_id, day)
        .having(elders > threshold)
    )
    groups = sa.union_all(by_device, by_address).subquery("groups")
    mine_ids = candidate_ids(candidates)
    # Every member of each such device-day (the candidates and the rest), in one query.
    rows = db.session.execute(
        sa.select(
            Redemption.id,
            mine_ids.c.id.is_not(None).label("candidate"),
            groups.c.source,
            groups.c.key,
            groups.c.day,
            groups.c.elders,
        )
        .join(Service, home)
        .join(
            groups,
            sa.and_(
                groups.c.day == day,
                sa.or_(
                    sa.and_(
                        groups.c.source == BY_DEVICE, groups.c.key == Redemption.check_in_device
                    ),
                    sa.and_(
                        groups.c.source == BY_ADDRESS,
                        groups.c.key == Redemption.check_in_ip,
                        groups.c.provider_id == Redemption.provider_id,
                    ),
                ),
            ),
        )
        .outerjoin(mine_ids, mine_ids.c.id == Redemption.id)
        .order_by(groups.c.source, groups.c.key, groups.c.day, Redemption.id)
    ).all()
    members: dict[tuple, list[int]] = defaultdict(list)
    elders_of: dict[tuple, int] = {}
    flagged: dict[int, list[tuple]] = defaultdict(list)
    for rid, candidate, by, key, group_day, count in rows:
        group = (by, key, str(group_day))
        members[group].append(rid)
        elders_of[group] = int(count)
        if candidate:
            flagged[rid].append(group)
    if not flagged:
        return []
    facts = facts_of({*flagged, *(rid for ids in members.values() for rid in ids[:LISTED])})
    shown = {
        group: {
            "by": group[0],
            "key": masked_device(group[1]) if group[0] == BY_DEVICE else group[1],
            "day": group[2],
            "elders": elders_of[group],
            "count": len(ids),
            "redemptions": [facts[rid] for rid in ids[:LISTED]],
        }
        for group, ids in members.items()
    }
    return [
        Finding(
            rid,
            {
                "redemption": facts[rid],
                "threshold": threshold,
                "groups": [shown[group] for group in groups_of],
            },
        )
        for rid, groups_of in sorted(flagged.items())
    ]


def describe_shared(evidence: dict) -> str:
    sentences = []
    for group in evidence.get("groups") or []:
        values = {
            "key": group.get("key", "—"),
            "day": group.get("day", "—"),
            "elders": group.get("elders", "—"),
            "threshold": evidence.get("threshold", "—"),
            "list": listing(group.get("redemptions") or []),
        }
        if group.get("by") == BY_ADDRESS:
            sentences.append(
                _(
                    "One network address (%(key)s) checked in home services for %(elders)s "
                    "elders on %(day)s (threshold %(threshold)s): %(list)s.",
                    **values,
                )
            )
        else:
            sentences.append(
                _(
                    "One phone (device %(key)s) checked in home services for %(elders)s "
                    "elders on %(day)s (threshold %(threshold)s): %(list)s.",
                    **values,
                )
            )
    return " ".join(sentences)


# --------------------------------------------------------------------------- outside_hours


def local_weekday(column) -> sa.ColumnElement:
    """The Shanghai weekday of a UTC timestamp column, in SQL: 0 Sunday .. 6 Saturday (as
    both PostgreSQL's ``dow`` and SQLite's ``%w`` count)."""
    if is_postgres():
        shifted = column + sa.text(f"interval '{SHANGHAI_OFFSET_HOURS} hours'")
        return sa.cast(sa.extract("dow", shifted), sa.Integer)
    return sa.cast(sa.func.strftime("%w", column, f"+{SHANGHAI_OFFSET_HOURS} hours"), sa.Integer)


def _minutes(hhmm: str) -> int:
    return int(hhmm[:2]) * 60 + int(hhmm[3:5])


def _week_of(hours_json: str | None) -> list[list[tuple[int, int]]] | None:
    """A provider's hours as, for each weekday (0 Monday, as ``WEEKDAYS``), its intervals in
    minutes from that day's midnight, with the day before's and the day after's shifted by a
    day either way (a check-in at 00:10 is ten minutes after a 24:00 closing). None: no hours
    published, never judged."""
    try:
        hours = json.loads(hours_json) if hours_json else None
    except ValueError:
        return None
    if not hours or not isinstance(hours, dict):
        return None
    own = [
        [(_minutes(start), _minutes(end)) for start, end in hours.get(name) or []]
        for name in WEEKDAYS
    ]
    if not any(own):
        return None  # not one interval on any day: no hours published, not "never open"
    return [
        [(s - DAY_MINUTES, e - DAY_MINUTES) for s, e in own[(index - 1) % 7]]
        + own[index]
        + [(s + DAY_MINUTES, e + DAY_MINUTES) for s, e in own[(index + 1) % 7]]
        for index in range(7)
    ]


def minutes_outside(intervals: list[tuple[int, int]], minute: int) -> int | None:
    """How many minutes ``minute`` lies outside the nearest interval (each includes its
    start and excludes its end); 0 inside; None when there is none (closed around it)."""
    if not intervals:
        return None
    return min(
        0 if s <= minute < e else (s - minute if minute < s else minute - e) for s, e in intervals
    )


def detect_outside(candidates: sa.Select, params: dict) -> list[Finding]:
    grace = int(params.get("grace_minutes", 30))
    judged = sa.and_(
        Redemption.id.in_(candidates),
        Service.id == Redemption.service_id,
        Service.unit.not_in(STAY_UNITS),
    )
    # Each provider's hours, read once: the candidates' providers that published any.
    hours_of: dict[int, dict] = {}
    weeks: dict[int, list] = {}
    for provider_id, hours_json in db.session.execute(
        sa.select(Provider.id, Provider.opening_hours_json).where(
            Provider.id.in_(sa.select(Redemption.provider_id).join(Service, judged)),
            Provider.opening_hours_json.is_not(None),
        )
    ):
        week = _week_of(hours_json)
        if week is not None:
            hours_of[provider_id], weeks[provider_id] = json.loads(hours_json), week
    if not weeks:
        return []
    rows = db.session.execute(
        sa.select(
            Redemption.id,
            Redemption.provider_id,
            local_weekday(Redemption.checked_in_at),
            local_minute_of_day(Redemption.checked_in_at),
        )
        .join(Service, judged)
        .join(Provider, Provider.id == Redemption.provider_id)
        .where(Provider.opening_hours_json.is_not(None))
        .execution_options(yield_per=STREAM_ROWS, stream_results=True)
    )
    hits: dict[int, tuple[int, int, int | None]] = {}
    for rid, provider_id, sunday_first, minute in rows:
        week = weeks.get(provider_id)
        if week is None:
            continue
        weekday = (int(sunday_first) + 6) % 7  # 0 Monday, as WEEKDAYS
        outside = minutes_outside(week[weekday], int(minute))
        if outside is None or outside > grace:
            hits[rid] = (provider_id, weekday, outside)
    if not hits:
        return []  # the stream is read to its end before the next query
    facts = facts_of(hits)
    return [
        Finding(
            rid,
            {
                "redemption": facts[rid],
                "weekday": WEEKDAYS[weekday],
                "hours": hours_of[provider_id].get(WEEKDAYS[weekday]) or [],
                "minutes_outside": outside,
                "grace_minutes": grace,
            },
        )
        for rid, (provider_id, weekday, outside) in sorted(hits.items())
    ]


def describe_outside(evidence: dict) -> str:
    values = {**redemption_words(evidence), "grace": evidence.get("grace_minutes", "—")}
    hours = evidence.get("hours") or []
    if not hours:
        return _(
            "The service for %(elder)s (#%(id)s) was checked in at %(at)s, a day %(provider)s "
            "is closed (more than %(grace)s minutes from its opening hours).",
            **values,
        )
    minutes = evidence.get("minutes_outside")
    return _(
        "The service for %(elder)s (#%(id)s) was checked in at %(at)s, %(minutes)s minutes "
        "outside the opening hours of %(provider)s that day (%(hours)s; allowed: %(grace)s "
        "minutes).",
        minutes="—" if minutes is None else minutes,
        hours=", ".join(f"{start}–{end}" for start, end in hours),
        **values,
    )


RULES = [
    Rule(
        "shared_device",
        _l("One phone or address for many elders"),
        detect_shared,
        describe_shared,
    ),
    Rule(
        "outside_hours",
        _l("Checked in outside opening hours"),
        detect_outside,
        describe_outside,
    ),
]
