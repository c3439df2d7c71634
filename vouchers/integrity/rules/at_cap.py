"""Rule 6: always at the cap (``at_cap``, judged only on a month's batch).

A redemption "takes the whole remaining voucher" when the balance, not the policy ratio, set
its subsidy: ``vouchers.redemption.pricing.split`` pays ``min(floor((price − insurance) ×
ratio_bp / 10000), remaining)``, so the balance cut it exactly when the subsidy is below the
ratio's share, which the row alone tells (price, insurance, ratio and subsidy are stored on
it). Once in a while that is an elder's last service of the month; a provider that does it
far more often than the others serving the same elders' district in the same category is
pricing to whatever is left on the voucher.

Per voucher month, voucher district and service category, each provider's completed
redemptions (settled or not) are counted with those at the cap, against its peers' (every
other provider in that cell together). A provider with at least ``min_redemptions`` (20)
there, at least ``min_share_pct`` (50%) of them at the cap and at least ``times_peers``
(2.0) times its peers' share is an outlier: each of its at-cap redemptions among the
candidates is flagged, the comparison in the evidence. A cell with no peers compares with
nothing and finds nothing.

Two queries whatever the size of the month: one GROUP BY over the candidates' months (the
comparison, a row per provider and cell), one for the outliers' at-cap candidates.
"""

from __future__ import annotations

from collections import defaultdict
from fractions import Fraction

import sqlalchemy as sa
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l

from eldercare.db import db
from eldercare.forms import yuan
from marketplace.models import Service
from vouchers.integrity.rules.base import (
    Finding,
    Rule,
    category_label,
    facts_of,
    redemption_words,
)
from vouchers.models import Redemption, Voucher

COUNTED = "redeemed"


def at_the_cap(redemption=Redemption) -> sa.ColumnElement:
    """The balance cut the subsidy: subsidy < floor(out-of-pocket × ratio / 10000), i.e.
    (subsidy + 1) × 10000 ≤ out-of-pocket × ratio, in integers."""
    return (redemption.subsidy_fen + 1) * 10_000 <= (
        redemption.price_fen - redemption.insurance_fen
    ) * redemption.ratio_bp


def _pct(part: int, whole: int) -> float:
    return round(100 * part / whole, 1) if whole else 0.0


def _comparison(candidates: sa.Select) -> list[tuple]:
    """(month, district, category, provider, redemptions, at the cap) for every provider
    and cell of the candidates' voucher months."""
    months = (
        sa.select(Voucher.month)
        .join(Redemption, Redemption.voucher_id == Voucher.id)
        .where(Redemption.id.in_(candidates))
        .distinct()
    )
    capped = sa.func.sum(sa.case((at_the_cap(), 1), else_=0))
    return [
        tuple(row)
        for row in db.session.execute(
            sa.select(
                Voucher.month,
                Voucher.district_id,
                Service.category_code,
                Redemption.provider_id,
                sa.func.count(Redemption.id),
                capped,
            )
            .join(Voucher, Voucher.id == Redemption.voucher_id)
            .join(Service, Service.id == Redemption.service_id)
            .where(Redemption.status == COUNTED, Voucher.month.in_(months))
            .group_by(
                Voucher.month, Voucher.district_id, Service.category_code, Redemption.provider_id
            )
        )
    ]


def outliers(rows: list[tuple], params: dict) -> dict[tuple, dict]:
    """The outlier providers' cells, (month, district, category, provider) → comparison."""
    least = int(params.get("min_redemptions", 20))
    times = Fraction(str(params.get("times_peers", 2.0)))
    share = Fraction(str(params.get("min_share_pct", 50)))
    cells: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0])
    for month, district, category, _provider, n, capped in rows:
        cell = cells[(month, district, category)]
        cell[0] += int(n)
        cell[1] += int(capped or 0)
        cell[2] += 1
    found = {}
    for month, district, category, provider, n, capped in rows:
        n, capped = int(n), int(capped or 0)
        total, total_capped, providers = cells[(month, district, category)]
        peers_n, peers_capped = total - n, total_capped - capped
        if n < least or peers_n == 0:
            continue
        # capped / n ≥ share %, and capped / n ≥ times × peers_capped / peers_n
        if capped * 100 < share * n or capped * peers_n < times * peers_capped * n:
            continue
        found[(month, district, category, provider)] = {
            "month": f"{month:%Y-%m}",
            "district_id": district,
            "category": category,
            "provider": {"n": n, "at_cap": capped, "pct": _pct(capped, n)},
            "peers": {
                "providers": providers - 1,
                "n": peers_n,
                "at_cap": peers_capped,
                "pct": _pct(peers_capped, peers_n),
            },
            "min_redemptions": least,
            "times_peers": float(times),
            "min_share_pct": float(share),
        }
    return found


def detect(candidates: sa.Select, params: dict) -> list[Finding]:
    cells = outliers(_comparison(candidates), params)
    if not cells:
        return []
    # A loop over the few outliers, to name their cells.
    in_cells = sa.or_(
        *(
            sa.and_(
                Voucher.month == month,
                Voucher.district_id == district,
                Service.category_code == category,
                Redemption.provider_id == provider,
            )
            for month, district, category, provider in cells
        )
    )
    rows = db.session.execute(
        sa.select(
            Redemption.id,
            Voucher.month,
            Voucher.district_id,
            Service.category_code,
            Redemption.provider_id,
        )
        .join(Voucher, Voucher.id == Redemption.voucher_id)
        .join(Service, Service.id == Redemption.service_id)
        .where(Redemption.id.in_(candidates), at_the_cap(), in_cells)
        .order_by(Redemption.id)
    ).all()
    facts = facts_of(r[0] for r in rows)
    return [Finding(rid, {"redemption": facts[rid], **cells[tuple(cell)]}) for rid, *cell in rows]


def _district_label(district_id) -> str:
    from flask_babel import get_locale

    from eldercare.residents import District

    district = db.session.get(District, district_id) if district_id is not None else None
    if district is None:
        return "—"
    return district.display_name(str(get_locale() or "zh_CN"))


def describe(evidence: dict) -> str:
    r = evidence.get("redemption", {})
    mine = evidence.get("provider", {})
    peers = evidence.get("peers", {})
    return _(
        "%(provider)s took the whole remaining voucher in %(pct)s%% of its %(category)s "
        "redemptions for %(district)s vouchers in %(month)s (%(hits)s of %(n)s), against "
        "%(peer_pct)s%% at the %(peer_providers)s other providers (%(peer_hits)s of "
        "%(peer_n)s); this one: %(elder)s, %(at)s (#%(id)s), subsidy %(subsidy)s.",
        pct=mine.get("pct", "—"),
        category=category_label(evidence.get("category")),
        district=_district_label(evidence.get("district_id")),
        month=evidence.get("month", "—"),
        hits=mine.get("at_cap", "—"),
        n=mine.get("n", "—"),
        peer_pct=peers.get("pct", "—"),
        peer_providers=peers.get("providers", "—"),
        peer_hits=peers.get("at_cap", "—"),
        peer_n=peers.get("n", "—"),
        subsidy=_yuan(r.get("subsidy_fen")),
        **redemption_words(evidence),
    )


def _yuan(fen) -> str:
    return yuan(fen) if fen is not None else "—"


RULES = [
    Rule(
        "at_cap",
        _l("Redemptions taking the whole remaining voucher, far more often than peers"),
        detect,
        describe,
        at_capture=False,
    )
]
