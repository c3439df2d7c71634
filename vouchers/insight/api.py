"""/api/v1 for the bureau's dashboard: ``GET /bureau/insight/<table>?month=&district=``.

Read-only, for a bureau officer's or approver's token ("read" or "vouchers:read"), the
same rows as the page's table and its download (``vouchers.insight.dashboard``), money in
integer fen, shares in basis points. District staff get their own district's figures; a
``district`` code of another district answers 404, as if it did not exist; city-wide staff
get the city, or the district named.
"""

from __future__ import annotations

from flask_babel import get_locale
from flask_babel import lazy_gettext as _l

from eldercare.api import BEARER, bureau_reader, district_asked, error_responses
from eldercare.errors import NotFound
from eldercare.tokens import token_required
from vouchers.api import blp
from vouchers.insight import dashboard
from vouchers.insight.schemas import VouchersInsightQuerySchema, VouchersInsightTableSchema

_EXAMPLE = {
    "table": "districts",
    "title": "Redemptions of the month by district",
    "month": "2026-11",
    "district": "210102",
    "columns": [
        {"key": "district", "heading": "District code", "kind": "text"},
        {"key": "name", "heading": "District", "kind": "text"},
        {"key": "used", "heading": "Redemptions", "kind": "count"},
        {"key": "subsidy_fen", "heading": "Voucher subsidy used", "kind": "fen"},
        {"key": "price_fen", "heading": "Price of the services", "kind": "fen"},
    ],
    "rows": [
        {"district": "210102", "name": "和平区", "used": 1204, "subsidy_fen": 7224000,
         "price_fen": 18060000}
    ],
}  # fmt: skip


@blp.get("/bureau/insight/<table>")
@token_required("read", "vouchers:read", any_of=True)
@blp.doc(security=BEARER)
@blp.arguments(VouchersInsightQuerySchema, location="query")
@blp.response(200, VouchersInsightTableSchema, example=_EXAMPLE)
@error_responses(blp, 401, 403, 404, 422)
def insight_table(query, table: str):
    """One table of the bureau's dashboard: ``monthly`` (issued, used, expired by month,
    the twelve months up to ``month``), ``burn_down`` (funded, spent, left at each month's
    end), ``districts``, ``categories``, ``providers`` (top 10, then one row for the others,
    ``provider_id`` null), ``take_up`` (share in basis points) and ``open_flags`` (by rule,
    then a row ``all``: every rule, each redemption's held subsidy once),
    for ``month`` (YYYY-MM, Asia/Shanghai; default this month). District staff see their
    own district; another district's code answers 404."""
    user = bureau_reader()
    chosen = dashboard.TABLES.get(table)
    if chosen is None:
        raise NotFound(_l("There is no such table."))
    district = district_asked(query.get("district"), user)
    month = dashboard.read_month(query.get("month"))
    locale = str(get_locale() or "zh_CN")
    return {
        "table": chosen.name,
        "title": str(chosen.title),
        "month": f"{month:%Y-%m}",
        "district": district.code if district else None,
        "columns": [
            {"key": c.key, "heading": str(c.heading), "kind": c.kind} for c in chosen.columns
        ],
        "rows": dashboard.rows_of(chosen, district.id if district else None, month, locale),
    }
