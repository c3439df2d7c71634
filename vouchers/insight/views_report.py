"""The bureau's report pages (bureau roles): the report of a month or a year, its PDF and
every table as CSV or XLSX.

- ``bureau_report`` (GET /vouchers/bureau/report?period=2026-03|2026&district=): the
  figures in tables, with charts inline as SVG, Chinese first like every page (the reader's
  language). No period: last month.
- ``bureau_report_pdf`` (GET /vouchers/bureau/report.pdf?period=&district=): the same, A4.
- ``bureau_report_table`` (GET /vouchers/bureau/report/<name>.<fmt>?period=&district=):
  one table, ``fmt`` csv or xlsx.

District staff get their district's report (another district is 404, as everywhere); city
staff the city's, or one district's with ``?district=<id>``. reportlab is imported inside the
views only (the charts and the PDF need it; the app's start does not).
"""

from __future__ import annotations

from flask import Response, render_template, request
from flask_babel import get_locale
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from eldercare.accounts import BUREAU_ROLES
from eldercare.auth import ensure_in_district, roles_required
from eldercare.db import db
from eldercare.errors import NotFound
from eldercare.forms import whole_number
from eldercare.navigation import Destination
from eldercare.residents import District
from vouchers.insight import tables as downloads
from vouchers.insight.report import PERIOD_MESSAGE, Report, districts_for, parse_period, report_for
from vouchers.insight.report_tables import (
    FUNDS_NOTE,
    MONEY_NOTE,
    TABLE_NAMES,
    download_cell,
    page_cell,
    report_tables,
)
from vouchers.views import bp

DESTINATIONS = [
    Destination(
        "vouchers.bureau_report",
        _l("Monthly report"),
        description=_l(
            "A month's or a year's figures as the bureau publishes them: funds, vouchers, "
            "elders served, providers, assessments, flags and reconciliation; PDF, CSV and XLSX."
        ),
    )
]


def _locale() -> str:
    return str(get_locale() or "zh_CN")


def report_scope(text: str | None, user=None) -> int | None:
    """The district the reader asks for and may read: district staff their own (another is
    404); city staff the city (None) or the district given by id."""
    user = user or current_user
    text = (text or "").strip()
    if not text:
        return user.district_id
    district_id = whole_number(text)
    if district_id is None or db.session.get(District, district_id) is None:
        raise NotFound()
    ensure_in_district(district_id, user)
    return district_id


def _report() -> Report:
    period = parse_period(request.args.get("period"))
    return report_for(period, report_scope(request.args.get("district")))


def _query(report: Report) -> dict:
    query = {"period": report.period.text}
    if report.district is not None and current_user.district_id is None:
        query["district"] = report.district.id
    return query


def _file_name(report: Report, name: str) -> str:
    scope = report.district.code if report.district is not None else "city"
    return f"report-{report.period.text}-{scope}-{name}"


@bp.get("/bureau/report")
@roles_required(*BUREAU_ROLES)
def bureau_report():
    from vouchers.insight.charts import to_svg
    from vouchers.insight.report_charts import report_charts

    report = _report()
    locale = _locale()
    charts = {name: to_svg(d, label=label) for name, label, d in report_charts(report, locale)}
    city = current_user.district_id is None
    return render_template(
        "vouchers/bureau_report.html",
        report=report,
        tables=report_tables(report, locale),
        charts=charts,
        cell=page_cell,
        query=_query(report),
        money_note=MONEY_NOTE,
        funds_note=FUNDS_NOTE,
        locale=locale,
        district_options=[(d.id, d.display_name(locale)) for d in districts_for(None)]
        if city
        else [],
        values={
            "period": report.period.text,
            "district": str(report.district.id) if report.district and city else "",
        },
        period_hint=PERIOD_MESSAGE,
    )


@bp.get("/bureau/report.pdf")
@roles_required(*BUREAU_ROLES)
def bureau_report_pdf():
    return report_pdf_response(_report())


def report_pdf_response(report: Report) -> Response:
    from vouchers.insight.report_pdf import report_pdf

    response = Response(report_pdf(report), mimetype="application/pdf")
    response.headers["Content-Disposition"] = (
        f'inline; filename="{_file_name(report, "report")}.pdf"'
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/bureau/report/<name>.<fmt>")
@roles_required(*BUREAU_ROLES)
def bureau_report_table(name: str, fmt: str):
    if name not in TABLE_NAMES:
        raise NotFound()
    fmt = downloads.check_format(fmt)
    report = _report()
    [table] = [t for t in report_tables(report, _locale()) if t.name == name]
    rows = [[download_cell(v) for v in row] for row in table.rows]
    return downloads.download(_file_name(report, name), table.columns, rows, fmt)
