"""Take-up: of the elders eligible in a month, how many used their voucher. One definition
for the dashboard (``figures.take_up``) and the forecast (``forecast.history``), so the two
pages never disagree and the share never passes 100%:

- **users** = distinct elders with a redemption now ``redeemed`` on a voucher of the month
  (a reversed one is not use);
- **eligible** = distinct elders issued a voucher of the month that was not revoked, and
  every user. A voucher is revoked when its elder dies or loses eligibility: an elder
  revoked on the 3rd who never used it had no real chance to, and the forecast projects
  the latest month's eligible elders into the months ahead, where that elder is not. But
  an elder who used a voucher before it was revoked was eligible and a user that month,
  so counts in both (counting users among the revoked but not among the eligible is what
  let the share pass 100%).

Both count elders, not vouchers (an elder with two kinds of voucher in a month is one);
every user is eligible by construction, so users ⊆ eligible always.
"""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from sqlalchemy.orm import aliased

from vouchers.models import Redemption, Voucher


def counts(months: list[date], district_id: int | None = None, *, by_district: bool = False):
    """``SELECT month[, district_id], eligible, users`` over ``months`` (the city, or one
    district's vouchers), grouped by month (and district): one GROUP BY over the months'
    vouchers left-joined to the set of those months' vouchers with a redeemed use (a hash
    join: an EXISTS per voucher, tested in each of the two counts, took 5× a plain GROUP BY
    of a million-redemption month, the join 2×: bench/insight_export.py)."""
    used_voucher = aliased(Voucher)
    used_vouchers = (
        sa.select(Redemption.voucher_id)
        .join(used_voucher, used_voucher.id == Redemption.voucher_id)
        .where(Redemption.status == "redeemed", used_voucher.month.in_(months))
        .distinct()
    )
    if district_id is not None:
        used_vouchers = used_vouchers.where(used_voucher.district_id == district_id)
    used_vouchers = used_vouchers.subquery()
    used = used_vouchers.c.voucher_id.is_not(None)
    counted = sa.or_(Voucher.status != "revoked", used)
    keys = [Voucher.month.label("month")]
    if by_district:
        keys.append(Voucher.district_id.label("district_id"))
    statement = (
        sa.select(
            *keys,
            sa.func.count(sa.distinct(sa.case((counted, Voucher.resident_id)))).label("eligible"),
            sa.func.count(sa.distinct(sa.case((used, Voucher.resident_id)))).label("users"),
        )
        .outerjoin(used_vouchers, used_vouchers.c.voucher_id == Voucher.id)
        .where(Voucher.month.in_(months))
        .group_by(*(k.element for k in keys))
    )
    if district_id is not None:
        statement = statement.where(Voucher.district_id == district_id)
    return statement
