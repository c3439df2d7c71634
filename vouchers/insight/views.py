"""The bureau's dashboard page and its downloads (issue 15).

- ``insight`` (GET /vouchers/bureau/insight?month=YYYY-MM&district=<id>): every table of
  ``vouchers.insight.dashboard`` as a chart (inline SVG, ``role="img"``) with the table of
  its figures beside it and links to download it. District staff see their own district
  (another district's id answers 404); city-wide staff the city or the district chosen.
  A month that cannot be read is said next to the month field (400), nothing else shown.
- ``insight_download`` (GET /vouchers/bureau/insight/<table>.<fmt>): the table as CSV or
  XLSX (``vouchers.insight.tables.download``), money in yuan.

reportlab (charts) and openpyxl (XLSX) are imported inside the views, never at start-up.
"""

from __future__ import annotations

from flask import abort, render_template, request, url_for
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from eldercare.accounts import BUREAU_ROLES
from eldercare.auth import roles_required, scope_to_district
from eldercare.db import db
from eldercare.errors import InvalidInput
from eldercare.forms import problem_from, yuan
from eldercare.navigation import Destination
from eldercare.residents import District
from vouchers.insight import dashboard, figures
from vouchers.views import bp

DESTINATIONS = [
    Destination(
        "vouchers.insight",
        _l("Dashboard"),
        description=_l(
            "Vouchers issued, used and expired by month, the pool's burn-down, the month's "
            "redemptions by district, service and provider, take-up and open flags."
        ),
    ),
]
NO_DATA = _l("Nothing to show for this month yet.")


def _locale() -> str:
    return str(get_locale() or "zh_CN")


# What each table's chart draws: the column naming its categories and the columns of its
# series, each named by its heading. A table over twelve months is lines, the others
# horizontal bars (their names are long). Money is drawn in yuan, a share in percent.
CHARTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "monthly": ("month", ("issued_fen", "used_fen", "returned_fen")),
    "burn_down": ("month", ("funded_fen", "spent_fen")),
    "districts": ("name", ("subsidy_fen",)),
    "categories": ("label", ("subsidy_fen",)),
    "providers": ("provider", ("subsidy_fen",)),
    "take_up": ("name", ("share_bp",)),
    "open_flags": ("label", ("open",)),
}


def _plotted(column: dashboard.Column, value):
    return value / 100 if column.kind in ("fen", "bp") else value  # yuan, percent


def _chart(table: dashboard.Table, rows: list[dict]) -> str:
    from vouchers.insight import charts  # reportlab: only where a chart is drawn

    title = str(table.title)
    category, keys = CHARTS[table.name]
    columns = {c.key: c for c in table.columns}
    # One bar per rule: the open flags' total row adds them up (the table shows it).
    rows = [r for r in rows if r.get("rule") != figures.ALL_RULES]
    series = [
        (str(columns[key].heading), [_plotted(columns[key], r[key]) for r in rows]) for key in keys
    ]
    categories = [str(r[category]) for r in rows]
    if table.over_a_year:
        drawing = charts.line_chart(title, categories, series, empty_text=str(NO_DATA))
    else:
        drawing = charts.bar_chart(
            title, categories, series, empty_text=str(NO_DATA), horizontal=True
        )
    return charts.to_svg(drawing, label=title)  # no inline style: the CSP forbids it


def _shown(column: dashboard.Column, value) -> str:
    if value is None:
        return "—"
    if column.kind == "fen":
        return yuan(value)
    if column.kind == "bp":
        return dashboard.percent(value)
    return str(value)


def _sections(district_id: int | None, month, params: dict) -> list[dict]:
    sections = []
    for table in dashboard.TABLES.values():
        rows = dashboard.rows_of(table, district_id, month, _locale())
        # Codes are for the downloads and the API; the page shows names.
        columns = [c for c in table.columns if not c.key.endswith(("_id", "district", "rule"))]
        columns = [c for c in columns if c.key != "category"]
        sections.append(
            {
                "name": table.name,
                "title": table.title,
                "svg": _chart(table, rows),
                "columns": columns,
                "rows": [
                    [(c.kind, row[c.key], _shown(c, row[c.key])) for c in columns] for row in rows
                ],
                "downloads": [
                    (
                        fmt.upper(),
                        url_for("vouchers.insight_download", table=table.name, fmt=fmt, **params),
                    )
                    for fmt in ("csv", "xlsx")
                ],
            }
        )
    return sections


def _district_options() -> list[tuple[str, str]]:
    statement = scope_to_district(db.select(District), District.id).order_by(District.code)
    return [(str(d.id), d.display_name(_locale())) for d in db.session.scalars(statement)]


def _render(month=None, district=None, problem=None, status=200):
    scoped = current_user.district_id is not None
    params = {}
    if month is not None:
        params["month"] = f"{month:%Y-%m}"
    if district is not None and not scoped:
        params["district"] = district.id
    return render_template(
        "vouchers/bureau_insight.html",
        month=month,
        district=district,
        scope_name=district.display_name(_locale()) if district is not None else None,
        scoped=scoped,
        sections=_sections(district.id if district else None, month, params)
        if month is not None
        else [],
        district_options=_district_options(),
        values={
            "month": request.args.get("month", f"{month:%Y-%m}" if month else ""),
            "district": str(district.id) if district is not None else "",
        },
        problem=problem,
    ), status


@bp.get("/bureau/insight", endpoint="insight")
@roles_required(*BUREAU_ROLES)
def insight_page():
    try:
        district = dashboard.read_district(request.args.get("district"), current_user)
        month = dashboard.read_month(request.args.get("month"))
    except InvalidInput as error:
        return _render(problem=problem_from(error), status=400)
    return _render(month, district)


@bp.get("/bureau/insight/<table>.<fmt>")
@roles_required(*BUREAU_ROLES)
def insight_download(table: str, fmt: str):
    from vouchers.insight import tables

    chosen = dashboard.TABLES.get(table)
    if chosen is None:
        abort(404)
    try:
        fmt = tables.check_format(fmt)
        district = dashboard.read_district(request.args.get("district"), current_user)
        month = dashboard.read_month(request.args.get("month"))
    except InvalidInput as error:
        return _render(problem=problem_from(error), status=400)
    rows = dashboard.rows_of(chosen, district.id if district else None, month, _locale())
    name = f"{chosen.name}-{month:%Y-%m}" + (f"-{district.code}" if district else "")
    return tables.download(
        name, dashboard.download_headers(chosen), dashboard.download_rows(chosen, rows), fmt
    )
