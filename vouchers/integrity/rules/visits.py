"""Rules 2 and 3: where and when a staff member's visits were.

- ``staff_overlap``: two home visits by the same staff member overlap by
  ``min_overlap_minutes`` (1) or more, the US Medicaid EVV rule: one caregiver is in one home
  at a time. Only visits delivered in the elder's home are judged, and only hourly kinds
  (not stays sold by the day or month): a canteen's cook or a station's bath attendant
  serving a queue of elders at the provider's premises overlaps by design. Only visits with
  both ends recorded are judged: a guessed end would flag an honest caregiver who forgot to
  check out, and a home visit without a check-out is already flagged by ``visit_length``;
  the batch before settlement judges the visit again once it is checked out. Two visits are
  compared when they began within 24 hours of each other (a visit long enough to overlap one
  begun later than that is flagged by ``visit_length``), so that the query reads a day's
  worth of the staff member's visits by its index, never their whole history.
- ``impossible_travel``: two consecutive check-ins of one staff member on one service day
  at places further apart than ``max_speed_kmh`` (60 km/h: faster than city traffic allows)
  covers in the time between them. The place is the phone's location at check-in; without
  one, where the service claims to be (the elder's home for a home visit, the provider's
  address otherwise). Places closer than ``SAME_PLACE_M`` are one place (a phone's location
  indoors is off by tens to a couple of hundred metres; a canteen's queue is scanned from
  one spot). Consecutive pairs suffice: if A to C is too fast, so is A to B or B to C.
- ``far_check_in``: a check-in further than the allowed distance from where the service is
  delivered. A home visit: the distance to the elder's home recorded at check-in (measured
  from the phone's location when none was recorded), against the visit distance of the
  voucher policy in force that day (``VoucherPolicy.evv_max_distance_m``: "ours comes from
  the policy"; the rule's ``distance_m`` only when no version is in force). Check-in refuses
  most of these; the rule catches what gets through another path. A service at the
  provider's premises or in an institution, checked in with a location: the distance to the
  provider's address against the rule's ``distance_m`` (1,600 m, a mile: the common
  aggregators' rule; the policy's distance speaks only of the elder's home).

Each is one query over the candidates; distances are exact (``marketplace.geo.haversine_m``)
in Python, only for the rows an SQL prefilter (plain arithmetic, portable) returns.

Evidence keeps coordinates to three decimals (about 100 m): enough to see the places on a
map, not an elder's address.
"""

from __future__ import annotations

import math

import sqlalchemy as sa
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy.orm import aliased

from eldercare.accounts import User
from eldercare.db import db
from eldercare.residents import Resident
from marketplace.geo import METRES_PER_DEGREE_LAT, haversine_m
from marketplace.models import HOME, Provider, Service
from vouchers.integrity.rules.base import (
    SHANGHAI_OFFSET_HOURS,
    Finding,
    Rule,
    candidate_ids,
    facts_of,
    is_postgres,
    local_day,
    redemption_words,
    seconds_between,
)
from vouchers.models import Redemption, Voucher, VoucherPolicy

STAYS = ("day", "month")  # units sold by the day or month: stays, not visits
# Two check-ins closer than this are at one place (indoor phone locations wander).
SAME_PLACE_M = 250
# Two visits compared for overlap began within this many hours of each other (longer ones are
# flagged by visit_length); also how far around a staff-day its visits are read.
LOOK_BACK_HOURS = 24
# julianday arithmetic on SQLite is exact to about 0.1 ms; a threshold met to the second is met.
EPSILON_S = 0.001
# 1 / (√2 · metres per degree), with 1% to spare: a point further than d metres away lies
# outside the square of half-side d times this (in degrees of latitude and of longitude).
BOX_FACTOR = 1 / (math.sqrt(2) * 111_320 * 1.01)


def _hours_later(column, hours: int) -> sa.ColumnElement:
    """A UTC timestamp column plus ``hours`` (negative: earlier), in SQL."""
    if is_postgres():
        return column + sa.text(f"interval '{hours} hours'")
    return sa.func.datetime(column, f"{hours:+d} hours")


def _earlier(a, b):
    return sa.case((a < b, a), else_=b)


def _later(a, b):
    return sa.case((a > b, a), else_=b)


def _place(kind: str | None, source: str, lat: float, lng: float) -> dict:
    return {"place": kind, "source": source, "lat": round(lat, 3), "lng": round(lng, 3)}


# --------------------------------------------------------------------------- staff_overlap


def detect_overlap(candidates: sa.Select, params: dict) -> list[Finding]:
    threshold = int(params.get("min_overlap_minutes", 1))
    other = aliased(Redemption)
    service = aliased(Service)
    other_service = aliased(Service)
    overlap = seconds_between(
        _earlier(Redemption.checked_out_at, other.checked_out_at),
        _later(Redemption.checked_in_at, other.checked_in_at),
    )
    rows = db.session.execute(
        sa.select(Redemption.id, other.id, overlap, User.display_name)
        .join(User, User.id == Redemption.staff_user_id)
        .join(service, service.id == Redemption.service_id)
        .join(
            other,
            sa.and_(
                other.staff_user_id == Redemption.staff_user_id,
                other.id != Redemption.id,
                other.status == "redeemed",
                other.checked_in_at > _hours_later(Redemption.checked_in_at, -LOOK_BACK_HOURS),
                Redemption.checked_in_at > _hours_later(other.checked_in_at, -LOOK_BACK_HOURS),
                other.checked_in_at < Redemption.checked_out_at,
                other.checked_out_at > Redemption.checked_in_at,
            ),
        )
        .join(other_service, other_service.id == other.service_id)
        .where(
            Redemption.id.in_(candidates),
            Redemption.checked_out_at.is_not(None),
            service.delivery_place == HOME,
            service.unit.not_in(STAYS),
            other_service.delivery_place == HOME,
            other_service.unit.not_in(STAYS),
            overlap >= threshold * 60 - EPSILON_S,
        )
    ).all()
    facts = facts_of([r[0] for r in rows] + [r[1] for r in rows])
    found: dict[int, list[dict]] = {}
    names = {}
    for rid, other_id, seconds, name in rows:
        names[rid] = name
        found.setdefault(rid, []).append(
            facts[other_id] | {"overlap_minutes": round(float(seconds) / 60, 1)}
        )
    return [
        Finding(
            rid,
            {
                "redemption": facts[rid],
                "staff_name": names[rid],
                "others": sorted(others, key=lambda o: (-o["overlap_minutes"], o["id"])),
                "min_overlap_minutes": threshold,
            },
        )
        for rid, others in sorted(found.items())
    ]


def describe_overlap(evidence: dict) -> str:
    r = evidence.get("redemption", {})
    others = evidence.get("others") or [{}]
    o = others[0]
    text = _(
        "Staff member %(staff)s was on two home visits at once for %(minutes)s minutes "
        "(threshold %(threshold)s): %(elder)s %(at)s to %(out)s (#%(id)s) and "
        "%(other_elder)s %(other_at)s to %(other_out)s (#%(other)s).",
        staff=_staff(evidence, r),
        minutes=o.get("overlap_minutes", "—"),
        threshold=evidence.get("min_overlap_minutes", "—"),
        out=r.get("out") or "—",
        other_elder=o.get("elder", "—"),
        other_at=o.get("at", "—"),
        other_out=o.get("out") or "—",
        other=o.get("id", "—"),
        **redemption_words(evidence),
    )
    if len(others) > 1:
        text += " " + _("%(count)s more of their visits overlap this one.", count=len(others) - 1)
    return text


# --------------------------------------------------------------------------- impossible_travel


def _where_checked_in():
    """The latitude and longitude of a check-in, in SQL: the phone's location, else where the
    service claims to be (the elder's home for a home visit, the provider's address)."""
    located = sa.and_(
        Redemption.check_in_latitude.is_not(None), Redemption.check_in_longitude.is_not(None)
    )
    home = Service.delivery_place == HOME
    lat = sa.case(
        (located, Redemption.check_in_latitude),
        (home, Resident.latitude),
        else_=Provider.latitude,
    )
    lng = sa.case(
        (located, Redemption.check_in_longitude),
        (home, Resident.longitude),
        else_=Provider.longitude,
    )
    return located, lat, lng


def detect_travel(candidates: sa.Select, params: dict) -> list[Finding]:
    speed = float(params.get("max_speed_kmh", 60))
    day = local_day(Redemption.checked_in_at)
    # The staff-days the candidates fall on, each with the UTC instants its Shanghai day
    # begins and ends: the visits below are read by the staff member's index, a day's worth
    # each (a range on check-in time, exactly the day: Shanghai keeps UTC+8 all year). Not
    # ``local_day(checked_in_at) = day`` in the join: PostgreSQL cannot estimate that
    # expression, guessed a month's million visits as ten thousand and read every one of
    # them with nested loops (47 s at a million).
    staff_days = (
        sa.select(
            Redemption.staff_user_id.label("staff"),
            day.label("day"),
            _hours_later(day, -SHANGHAI_OFFSET_HOURS).label("begins"),
            _hours_later(day, 24 - SHANGHAI_OFFSET_HOURS).label("ends"),
        )
        .where(Redemption.id.in_(candidates))
        .group_by(Redemption.staff_user_id, day)
        .subquery()
    )
    located, lat, lng = _where_checked_in()
    # Whether each visit read is a candidate, by a join (never ``id IN (candidates)`` as a
    # value: see base.candidate_ids).
    mine = candidate_ids(candidates)
    is_candidate = mine.c.id.is_not(None)
    window = {
        "partition_by": (Redemption.staff_user_id, staff_days.c.day),
        "order_by": (Redemption.checked_in_at, Redemption.id),
    }
    visits = (
        sa.select(
            Redemption.id.label("id"),
            Redemption.staff_user_id.label("staff"),
            Redemption.checked_in_at.label("at"),
            lat.label("lat"),
            lng.label("lng"),
            located.label("located"),
            Service.delivery_place.label("place"),
            is_candidate.label("judged"),
            sa.func.lag(Redemption.id).over(**window).label("prev_id"),
            sa.func.lag(Redemption.checked_in_at).over(**window).label("prev_at"),
            sa.func.lag(lat).over(**window).label("prev_lat"),
            sa.func.lag(lng).over(**window).label("prev_lng"),
            sa.func.lag(located).over(**window).label("prev_located"),
            sa.func.lag(Service.delivery_place).over(**window).label("prev_place"),
            sa.func.lag(is_candidate).over(**window).label("prev_judged"),
        )
        .join(
            staff_days,
            sa.and_(
                staff_days.c.staff == Redemption.staff_user_id,
                Redemption.checked_in_at >= staff_days.c.begins,
                Redemption.checked_in_at < staff_days.c.ends,
            ),
        )
        .join(Service, Service.id == Redemption.service_id)
        .join(Provider, Provider.id == Redemption.provider_id)
        .join(Resident, Resident.id == Redemption.resident_id)
        .outerjoin(mine, mine.c.id == Redemption.id)
        .where(Redemption.status == "redeemed", lat.is_not(None), lng.is_not(None))
        .subquery()
    )
    v = visits.c
    # Never less than the great-circle distance: a meridian leg plus a parallel leg at the
    # wider of the two latitudes' circles (cos ≤ 1), with a little to spare.
    upper_m = (sa.func.abs(v.lat - v.prev_lat) + sa.func.abs(v.lng - v.prev_lng)) * (
        METRES_PER_DEGREE_LAT * 1.01
    )
    seconds = seconds_between(v.at, v.prev_at)
    rows = db.session.execute(
        sa.select(
            v.prev_id,
            v.id,
            seconds,
            v.prev_lat,
            v.prev_lng,
            v.prev_located,
            v.prev_place,
            v.lat,
            v.lng,
            v.located,
            v.place,
            v.prev_judged,
            v.judged,
            User.display_name,
        )
        .join(User, User.id == v.staff)
        .where(
            v.prev_id.is_not(None),
            sa.or_(v.judged, v.prev_judged),
            upper_m >= SAME_PLACE_M,
            upper_m * 3.6 > speed * seconds,
        )
    ).all()
    pairs = []
    for row in rows:
        first, second, secs, lat1, lng1, loc1, place1, lat2, lng2, loc2, place2 = row[:11]
        metres = haversine_m(lat1, lng1, lat2, lng2)
        secs = max(float(secs), 0.0)
        if metres < SAME_PLACE_M or metres * 3.6 <= speed * secs:
            continue
        pairs.append(
            {
                "ids": (first, second),
                "staff_name": row[13],
                "judged": [
                    rid for rid, judged in zip((first, second), row[11:13], strict=True) if judged
                ],
                "from": _place(place1, "check_in" if loc1 else "registered", lat1, lng1),
                "to": _place(place2, "check_in" if loc2 else "registered", lat2, lng2),
                "distance_km": round(metres / 1000, 2),
                "minutes": round(secs / 60, 1),
                "speed_kmh": round(metres * 3.6 / secs, 1) if secs else None,
            }
        )
    facts = facts_of(i for p in pairs for i in p["ids"])
    found: dict[int, dict] = {}
    for pair in pairs:
        first, second = pair.pop("ids")
        judged = pair.pop("judged")
        evidence = pair | {
            "earlier": facts[first],
            "later": facts[second],
            "max_speed_kmh": speed,
        }
        for rid in judged:
            kept = found.get(rid)
            if kept is None or _faster(evidence, kept):
                found[rid] = evidence | {"redemption": facts[rid]}
    return [Finding(rid, evidence) for rid, evidence in sorted(found.items())]


def _faster(a: dict, b: dict) -> bool:
    inf = float("inf")
    return (a["speed_kmh"] if a["speed_kmh"] is not None else inf) > (
        b["speed_kmh"] if b["speed_kmh"] is not None else inf
    )


def _staff(evidence: dict, visit: dict) -> str:
    """The staff member's name and user number (#n when the name is not in the evidence)."""
    name = evidence.get("staff_name")
    number = f"#{visit.get('staff', '—')}"
    return f"{name} ({number})" if name else number


def _place_words(place: dict, visit: dict) -> str:
    kind = place.get("place")
    if kind == HOME:
        where = _("the elder's home")
    else:
        where = visit.get("provider", "—")
    if place.get("source") == "check_in":
        return _("%(where)s (phone at %(lat)s, %(lng)s)", where=where, **_coords(place))
    return _(
        "%(where)s (no phone location; %(lat)s, %(lng)s on record)", where=where, **_coords(place)
    )


def _coords(place: dict) -> dict:
    return {"lat": place.get("lat", "—"), "lng": place.get("lng", "—")}


def describe_travel(evidence: dict) -> str:
    a = evidence.get("earlier", {})
    b = evidence.get("later", {})
    places = {
        "staff": _staff(evidence, a),
        "first_id": a.get("id", "—"),
        "first_at": a.get("at", "—"),
        "first_elder": a.get("elder", "—"),
        "first_place": _place_words(evidence.get("from", {}), a),
        "second_id": b.get("id", "—"),
        "second_at": b.get("at", "—"),
        "second_elder": b.get("elder", "—"),
        "second_place": _place_words(evidence.get("to", {}), b),
        "km": evidence.get("distance_km", "—"),
        "minutes": evidence.get("minutes", "—"),
        "limit": f"{float(evidence.get('max_speed_kmh') or 0):g}",
    }
    if evidence.get("speed_kmh") is None:
        return _(
            "Staff member %(staff)s checked in at two places %(km)s km apart at the same "
            "moment (limit %(limit)s km/h): %(first_elder)s at %(first_place)s, %(first_at)s "
            "(#%(first_id)s), and %(second_elder)s at %(second_place)s, %(second_at)s "
            "(#%(second_id)s).",
            **places,
        )
    return _(
        "Staff member %(staff)s checked in %(km)s km away %(minutes)s minutes later, "
        "%(speed)s km/h (limit %(limit)s km/h): %(first_elder)s at %(first_place)s, "
        "%(first_at)s (#%(first_id)s), then %(second_elder)s at %(second_place)s, "
        "%(second_at)s (#%(second_id)s).",
        speed=evidence.get("speed_kmh"),
        **places,
    )


# --------------------------------------------------------------------------- far_check_in


def detect_far(candidates: sa.Select, params: dict) -> list[Finding]:
    rule_limit = int(params.get("distance_m", 1600))
    policy = aliased(VoucherPolicy)
    day = local_day(Redemption.checked_in_at)
    home = Service.delivery_place == HOME
    limit = sa.case(
        (home, sa.func.coalesce(policy.evv_max_distance_m, rule_limit)), else_=rule_limit
    )
    ref_lat = sa.case((home, Resident.latitude), else_=Provider.latitude)
    ref_lng = sa.case((home, Resident.longitude), else_=Provider.longitude)
    recorded = sa.and_(home, Redemption.check_in_distance_m.is_not(None))
    half_side = limit * BOX_FACTOR
    rows = db.session.execute(
        sa.select(
            Redemption.id,
            Service.delivery_place,
            Redemption.check_in_distance_m,
            Redemption.check_in_latitude,
            Redemption.check_in_longitude,
            ref_lat,
            ref_lng,
            limit,
            policy.id,
        )
        .join(Service, Service.id == Redemption.service_id)
        .join(Provider, Provider.id == Redemption.provider_id)
        .join(Resident, Resident.id == Redemption.resident_id)
        .join(Voucher, Voucher.id == Redemption.voucher_id)
        .outerjoin(
            policy,
            sa.and_(
                policy.kind == Voucher.kind,
                policy.effective_from <= day,
                sa.or_(policy.effective_to.is_(None), policy.effective_to > day),
            ),
        )
        .where(
            Redemption.id.in_(candidates),
            sa.or_(
                sa.and_(recorded, Redemption.check_in_distance_m > limit),
                sa.and_(
                    sa.not_(recorded),
                    Redemption.check_in_latitude.is_not(None),
                    Redemption.check_in_longitude.is_not(None),
                    ref_lat.is_not(None),
                    ref_lng.is_not(None),
                    sa.or_(
                        sa.func.abs(Redemption.check_in_latitude - ref_lat) > half_side,
                        sa.func.abs(Redemption.check_in_longitude - ref_lng) > half_side,
                    ),
                ),
            ),
        )
    ).all()
    hits = []
    for rid, place, distance, lat, lng, ref_lat_, ref_lng_, limit_m, policy_id in rows:
        measured = distance is None or place != HOME
        if measured:
            distance = round(haversine_m(lat, lng, ref_lat_, ref_lng_))
        if distance > limit_m:
            source = "policy" if place == HOME and policy_id is not None else "rule"
            hits.append((rid, place, distance, measured, int(limit_m), source))
    facts = facts_of(h[0] for h in hits)
    return [
        Finding(
            rid,
            {
                "redemption": facts[rid],
                "place": place,
                "distance_m": distance,
                "measured": measured,
                "limit_m": limit_m,
                "limit_from": source,
            },
        )
        for rid, place, distance, measured, limit_m, source in hits
    ]


def describe_far(evidence: dict) -> str:
    values = {
        **redemption_words(evidence),
        "distance": evidence.get("distance_m", "—"),
        "limit": evidence.get("limit_m", "—"),
    }
    if evidence.get("place") == HOME:
        if evidence.get("limit_from") == "policy":
            return _(
                "The home visit for %(elder)s on %(at)s (#%(id)s) was checked in %(distance)s m "
                "from the elder's home (the voucher policy allows %(limit)s m).",
                **values,
            )
        return _(
            "The home visit for %(elder)s on %(at)s (#%(id)s) was checked in %(distance)s m "
            "from the elder's home (the rule allows %(limit)s m).",
            **values,
        )
    return _(
        "The service for %(elder)s on %(at)s (#%(id)s) at %(provider)s was checked in "
        "%(distance)s m from the provider's address (the rule allows %(limit)s m).",
        **values,
    )


RULES = [
    Rule(
        "staff_overlap",
        _l("Overlapping visits by one staff member"),
        detect_overlap,
        describe_overlap,
    ),
    Rule(
        "impossible_travel",
        _l("Impossible travel between check-ins"),
        detect_travel,
        describe_travel,
    ),
    Rule(
        "far_check_in",
        _l("Check-in far from where the service is delivered"),
        detect_far,
        describe_far,
    ),
]
