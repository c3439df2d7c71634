"""Rule 4: implausible visit length (``visit_length``): checked out less than ``min_minutes``
(5) or more than ``max_minutes`` (12 hours) after check-in; or a home service still without
a check-out when the month is judged before settlement (electronic visit verification records
the end of every home visit; check-out may come after the payment, so not at capture).
Services sold by the day or month (stays) are not visits and are not judged."""

from __future__ import annotations

import sqlalchemy as sa
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from eldercare.db import db
from marketplace.models import Service
from vouchers.integrity.rules.base import (
    AT_CAPTURE,
    Finding,
    Rule,
    facts_of,
    redemption_words,
    seconds_between,
)
from vouchers.models import Redemption

SLACK_SECONDS = 0.01


def detect(candidates: sa.Select, params: dict) -> list[Finding]:
    low = int(params.get("min_minutes", 5)) * 60
    high = int(params.get("max_minutes", 720)) * 60
    length = seconds_between(Redemption.checked_out_at, Redemption.checked_in_at)
    at_capture = bool(params.get(AT_CAPTURE))
    rows = db.session.execute(
        sa.select(Redemption.id, length, Service.delivery_place)
        .join(Service, Service.id == Redemption.service_id)
        .where(
            Redemption.id.in_(candidates),
            Service.unit.not_in(("day", "month")),
            sa.or_(
                sa.and_(
                    Redemption.checked_out_at.is_not(None),
                    # SQLite's julianday arithmetic is some microseconds off: a visit of
                    # exactly 5 minutes must not read as 299.99998 seconds.
                    sa.or_(length < low - SLACK_SECONDS, length > high + SLACK_SECONDS),
                ),
                # Never checked out: judged in the batch before settlement only. Check-out is
                # allowed after the payment (the page says so), and a flag raised at the
                # capture would stay when the caregiver checks out a minute later.
                sa.and_(
                    sa.false() if at_capture else sa.true(),
                    Redemption.checked_out_at.is_(None),
                    Service.delivery_place == "home",
                ),
            ),
        )
    ).all()
    facts = facts_of(r[0] for r in rows)
    return [
        Finding(
            rid,
            {
                "redemption": facts[rid],
                "minutes": None if seconds is None else round(float(seconds) / 60, 1),
                "min_minutes": low // 60,
                "max_minutes": high // 60,
            },
        )
        for rid, seconds, _place in rows
    ]


def describe(evidence: dict) -> str:
    words = redemption_words(evidence)
    if evidence.get("minutes") is None:
        return _(
            "A home visit for %(elder)s checked in at %(at)s (#%(id)s) was never checked out.",
            **words,
        )
    return _(
        "The visit for %(elder)s on %(at)s (#%(id)s) lasted %(minutes)s minutes (plausible: "
        "%(low)s to %(high)s minutes).",
        **words,
        minutes=f"{evidence.get('minutes'):g}",
        low=evidence.get("min_minutes"),
        high=evidence.get("max_minutes"),
    )


RULES = [Rule("visit_length", _l("Implausible visit length"), detect, describe)]
