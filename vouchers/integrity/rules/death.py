"""Rule 1: service after death or during an institutional stay.

- ``after_death``: the service day is on or after the elder's recorded date of death. Also
  judged again when the death is recorded later (``anomalies.recheck_after_death``), for the
  redemptions already settled too: those are clawed back when the flag is rejected.
- ``during_stay``: a service delivered at home while the elder lives in a care institution:
  a completed stay (long-term or respite, or any service delivered in the institution and
  sold by the day or month) covers the day, from its check-in for its quantity of days (a
  month is ``marketplace.bookings.MONTH_DAYS`` days), or the voucher is the institutional
  kind.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy.orm import aliased

from eldercare.db import db
from eldercare.residents import Resident
from marketplace.bookings import MONTH_DAYS
from marketplace.models import Service
from vouchers.integrity.rules.base import (
    Finding,
    Rule,
    facts_of,
    local_day,
    plus_days,
    redemption_words,
)
from vouchers.models import Redemption, Voucher

STAY_CATEGORIES = ("long_term_stay", "respite_stay")


def detect_after_death(candidates: sa.Select, params: dict) -> list[Finding]:
    rows = db_rows(
        sa.select(Redemption.id, Resident.date_of_death)
        .join(Resident, Resident.id == Redemption.resident_id)
        .where(
            Redemption.id.in_(candidates),
            Resident.date_of_death.is_not(None),
            local_day(Redemption.checked_in_at) >= Resident.date_of_death,
        )
    )
    facts = facts_of(r[0] for r in rows)
    return [
        Finding(rid, {"died": died.isoformat(), "redemption": facts[rid]}) for rid, died in rows
    ]


def describe_after_death(evidence: dict) -> str:
    return _(
        "%(elder)s died on %(died)s (as recorded); this service is dated %(at)s (#%(id)s).",
        died=evidence.get("died", "—"),
        **redemption_words(evidence),
    )


def detect_during_stay(candidates: sa.Select, params: dict) -> list[Finding]:
    stay = aliased(Redemption)
    stay_service = aliased(Service)
    days = sa.func.coalesce(stay.quantity, 1) * sa.case(
        (stay_service.unit == "month", MONTH_DAYS), else_=1
    )
    is_stay = sa.or_(
        stay_service.category_code.in_(STAY_CATEGORIES),
        sa.and_(
            stay_service.delivery_place == "institution", stay_service.unit.in_(("day", "month"))
        ),
    )
    home = (
        sa.select(Redemption.id, Voucher.kind)
        .join(Service, Service.id == Redemption.service_id)
        .join(Voucher, Voucher.id == Redemption.voucher_id)
        .where(Redemption.id.in_(candidates), Service.delivery_place == "home")
    )
    stays = db_rows(
        home.add_columns(stay.id)
        .join(
            stay,
            sa.and_(
                stay.resident_id == Redemption.resident_id,
                stay.id != Redemption.id,
                stay.status == "redeemed",
            ),
        )
        .join(stay_service, sa.and_(stay_service.id == stay.service_id, is_stay))
        .where(
            local_day(stay.checked_in_at) <= local_day(Redemption.checked_in_at),
            plus_days(stay.checked_in_at, days) > Redemption.checked_in_at,
        )
    )
    institutional = db_rows(home.where(Voucher.kind == "institutional"))
    found: dict[int, dict] = {}
    facts = facts_of([r[0] for r in stays] + [r[2] for r in stays] + [r[0] for r in institutional])
    for rid, _kind, stay_id in stays:
        found.setdefault(rid, {"redemption": facts[rid], "stays": []})["stays"].append(
            facts[stay_id]
        )
    for rid, _kind in institutional:
        found.setdefault(rid, {"redemption": facts[rid], "stays": []})["institutional"] = True
    return [Finding(rid, evidence) for rid, evidence in sorted(found.items())]


def describe_during_stay(evidence: dict) -> str:
    words = redemption_words(evidence)
    stays = evidence.get("stays") or []
    if stays:
        s = stays[0]
        return _(
            "A home service for %(elder)s on %(at)s (#%(id)s) while a stay at %(place)s "
            "from %(since)s (#%(stay)s) covers that day.",
            place=s.get("provider", "—"),
            since=s.get("at", "—"),
            stay=s.get("id", "—"),
            **words,
        )
    return _(
        "A home service for %(elder)s on %(at)s (#%(id)s) paid with an institutional voucher.",
        **words,
    )


def db_rows(statement: sa.Select) -> list[tuple]:
    return [tuple(row) for row in db.session.execute(statement)]


RULES = [
    Rule(
        "after_death",
        _l("Service on or after the date of death"),
        detect_after_death,
        describe_after_death,
    ),
    Rule(
        "during_stay",
        _l("Home service during an institutional stay"),
        detect_during_stay,
        describe_during_stay,
    ),
]
