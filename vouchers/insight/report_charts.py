"""The report's charts, the same for the page (inline SVG) and the PDF (reportlab Drawings).

Imports reportlab (through ``vouchers.insight.charts``): import this module inside views only.
"""

from __future__ import annotations

from decimal import Decimal

from flask_babel import lazy_gettext as _l

from vouchers.insight import charts
from vouchers.insight.report import Report
from vouchers.insight.report_tables import LEVEL_LABELS, bilingual, district_name

EMPTY = _l("Nothing in this period yet.")
BY_MONTH = _l("Vouchers issued and subsidy paid by month (yuan)")
ISSUED = _l("Face value issued")
PAID = _l("Subsidy paid")
BY_DISTRICT = _l("Elders served by district")
BY_LEVEL = _l("Elders served by assessed level")
SERVED = _l("Elders served")


def report_charts(report: Report, locale: str, *, width=charts.WIDTH, height=charts.HEIGHT):
    """[(name, label, Drawing)]: the label names the chart for screen readers. ``locale``:
    the reader's, or "pdf" for Chinese then English."""
    say = bilingual if locale == "pdf" else str

    def yuan(fen: int) -> float:
        return float(Decimal(fen) / 100)

    months = [f"{m.month:%Y-%m}" for m in report.months]
    money = [
        (say(ISSUED), [yuan(m.issued_fen) for m in report.months]),
        (say(PAID), [yuan(m.redeemed_fen) for m in report.months]),
    ]
    if report.period.kind == "year":
        by_month = charts.line_chart(
            say(BY_MONTH), months, money, empty_text=say(EMPTY), width=width, height=height
        )
    else:
        by_month = charts.bar_chart(
            say(BY_MONTH), months, money, empty_text=say(EMPTY), width=width, height=height
        )
    districts = charts.bar_chart(
        say(BY_DISTRICT),
        [district_name(d, locale) for d, _ in report.elders_by_district],
        [(say(SERVED), [count for _, count in report.elders_by_district])],
        empty_text=say(EMPTY),
        horizontal=True,
        width=width,
        height=max(height, 60 + 22 * len(report.elders_by_district)),
    )
    levels = charts.bar_chart(
        say(BY_LEVEL),
        [say(LEVEL_LABELS.get(level, level)) for level, _ in report.elders_by_level],
        [(say(SERVED), [count for _, count in report.elders_by_level])],
        empty_text=say(EMPTY),
        width=width,
        height=height,
    )
    return [
        ("months", say(BY_MONTH), by_month),
        ("elders-by-district", say(BY_DISTRICT), districts),
        ("elders-by-level", say(BY_LEVEL), levels),
    ]
