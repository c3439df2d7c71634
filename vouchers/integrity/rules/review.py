"""Rule 8: redemptions marked for review, so that abuse no rule knows still has a chance of
being seen.

- ``review_sample``: a random share of every provider's redemptions (``share_bp`` basis
  points, 5% by default): each redemption draws a number 0..9999 at check-in from the OS's
  random source (``Redemption.review_draw``); it is in the sample when the draw is below the
  share. The same answer at capture and at settlement, unknown to the provider beforehand.
- ``high_value``: every redemption whose subsidy is above ``subsidy_fen`` (300 yuan), except
  services sold by the day or month (stays and day care, which take most of a month's voucher
  by design).
"""

from __future__ import annotations

import sqlalchemy as sa
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from eldercare.db import db
from eldercare.forms import yuan
from marketplace.models import Service
from vouchers.integrity.rules.base import Finding, Rule, facts_of, redemption_words
from vouchers.models import Redemption

STAY_UNITS = ("day", "month")


def _each(statement: sa.Select, evidence: dict) -> list[Finding]:
    """A finding for every redemption id the statement selects, all with the same evidence
    beside the redemption's facts."""
    ids = list(db.session.scalars(statement))
    facts = facts_of(ids)
    return [Finding(rid, {"redemption": facts[rid], **evidence}) for rid in ids]


def detect_sample(candidates: sa.Select, params: dict) -> list[Finding]:
    share = int(params.get("share_bp", 500))
    return _each(
        sa.select(Redemption.id).where(
            Redemption.id.in_(candidates),
            Redemption.review_draw.is_not(None),
            Redemption.review_draw < share,
        ),
        {"share_bp": share},
    )


def describe_sample(evidence: dict) -> str:
    return _(
        "Drawn at random for review (%(share)s%% of every provider's redemptions): %(elder)s, "
        "%(at)s (#%(id)s) at %(provider)s.",
        share=f"{int(evidence.get('share_bp', 0)) / 100:g}",
        **redemption_words(evidence),
    )


def detect_high_value(candidates: sa.Select, params: dict) -> list[Finding]:
    threshold = int(params.get("subsidy_fen", 30000))
    return _each(
        sa.select(Redemption.id)
        .outerjoin(Service, Service.id == Redemption.service_id)
        .where(
            Redemption.id.in_(candidates),
            Redemption.subsidy_fen > threshold,
            # A stay or a day of care is paid by the day or month: most of a month's
            # institutional voucher (800 yuan) in one go is what it is for.
            sa.or_(Service.unit.is_(None), Service.unit.not_in(STAY_UNITS)),
        ),
        {"threshold_fen": threshold},
    )


def describe_high_value(evidence: dict) -> str:
    r = evidence.get("redemption", {})
    return _(
        "A subsidy of %(amount)s (above %(threshold)s) for %(elder)s on %(at)s (#%(id)s) at "
        "%(provider)s.",
        amount=yuan(r.get("subsidy_fen")),
        threshold=yuan(evidence.get("threshold_fen")),
        **redemption_words(evidence),
    )


RULES = [
    Rule("review_sample", _l("Random review sample"), detect_sample, describe_sample),
    Rule("high_value", _l("High-value redemption"), detect_high_value, describe_high_value),
]
