"""The report's tables, once, for the page, the downloads and the PDF.

A table is a name (its download's file name), a title and columns (lazy labels) and rows of
cells: a whole number (a count), ``Money`` (fen), or text (a lazy label or data such as a
district's name). Each reader renders the cells its own way: the page in yuan with the
project's formatter, the downloads as numbers (yuan with two decimals), the PDF in Chinese
then English (``bilingual``: the same catalog entry said in both languages, never a second
copy of the words).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from flask_babel import force_locale
from flask_babel import lazy_gettext as _l
from flask_babel.speaklater import LazyString

from eldercare.forms import yuan
from eldercare.timeutil import format_local
from vouchers.insight.report import Report

LEVEL_LABELS = {
    "intact": _l("Intact"),
    "mild": _l("Mild"),
    "moderate": _l("Moderate"),
    "severe": _l("Severe"),
    "complete": _l("Complete"),
    "unknown": _l("No approved assessment found"),
}
RECONCILIATION_LABELS = {
    "green": _l("Reconciled, nothing open"),
    "red": _l("Mismatches or open exceptions"),
    "not_run": _l("Not reconciled yet"),
}
CENT = Decimal("0.01")
MONEY_NOTE = _l("Amounts in yuan.")
FUNDS_NOTE = _l("Funds are received city-wide: this report shows the district's allocations.")


@dataclass(frozen=True)
class Money:
    fen: int


@dataclass(frozen=True)
class Table:
    name: str  # the download's file name part and the page's anchor
    title: object
    columns: list
    rows: list[list]


def bilingual(text) -> str:
    """A lazy label as "中文 English" (the PDF's convention); data stays as it is."""
    if not isinstance(text, LazyString):
        return str(text)
    with force_locale("zh_CN"):
        zh = str(text)
    with force_locale("en"):
        en = str(text)
    return zh if zh == en else f"{zh} {en}"


def page_cell(value) -> str:
    if isinstance(value, Money):
        return yuan(value.fen)
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def download_cell(value):
    if isinstance(value, Money):
        return (Decimal(value.fen) / 100).quantize(CENT)
    if isinstance(value, int):
        return value
    return str(value)


def pdf_cell(value) -> str:
    if isinstance(value, Money):
        return f"{Decimal(value.fen) / 100:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return bilingual(value)


def district_name(district, locale: str) -> str:
    """A district's name: the reader's language, or both ("pdf": Chinese, then English)."""
    if locale == "pdf":
        return f"{district.name_zh} {district.name_en}"
    return district.display_name(locale)


def summary_rows(report: Report) -> list[list]:
    funds = report.funds
    rows = []
    if funds.scope == "city":
        rows += [
            [_l("Central funds received (yuan)"), Money(funds.central_fen)],
            [_l("Local funds received (yuan)"), Money(funds.local_fen)],
        ]
    rows += [
        [
            _l("Allocated to districts (yuan)")
            if funds.scope == "city"
            else _l("Allocated to the district (yuan)"),
            Money(funds.allocated_fen),
        ],
        [_l("Vouchers issued"), report.totals.issued],
        [_l("Face value of vouchers issued (yuan)"), Money(report.totals.issued_fen)],
        [_l("Redemptions completed"), report.totals.redeemed],
        [_l("Subsidy paid by vouchers (yuan)"), Money(report.totals.redeemed_fen)],
        [_l("Redemptions reversed"), report.totals.reversed],
        [_l("Elders served"), report.totals.elders_served],
        [_l("Certified providers"), report.providers_certified],
        [_l("Certified assessment agencies"), report.agencies_certified],
        [_l("Assessments approved"), report.assessments_approved],
        [_l("Assessment fee refunds paid"), report.fee_refunds_paid],
        [_l("Assessment fees refunded (yuan)"), Money(report.fee_refunds_paid_fen)],
        [_l("Flags raised"), report.flags_raised],
        [_l("Flags cleared"), report.flags_cleared],
        [_l("Flags rejected"), report.flags_rejected],
    ]
    return rows


def report_tables(report: Report, locale: str) -> list[Table]:
    """Every table of the report, in the page's order. ``locale``: the reader's ("zh_CN",
    "en") for district names, or "pdf" for both."""
    months = Table(
        "months",
        _l("Vouchers by month"),
        [
            _l("Month"),
            _l("Vouchers issued"),
            _l("Face value (yuan)"),
            _l("Redemptions completed"),
            _l("Subsidy paid (yuan)"),
            _l("Reversed"),
            _l("Elders served"),
        ],
        [
            [
                f"{m.month:%Y-%m}",
                m.issued,
                Money(m.issued_fen),
                m.redeemed,
                Money(m.redeemed_fen),
                m.reversed,
                m.elders_served,
            ]
            for m in report.months
        ],
    )
    tables = [
        Table(
            "summary",
            _l("The period at a glance"),
            [_l("Figure"), _l("Value")],
            summary_rows(report),
        ),
        months,
        Table(
            "elders-by-level",
            _l("Elders served by assessed level"),
            [_l("Level"), _l("Elders served")],
            [[LEVEL_LABELS.get(level, level), count] for level, count in report.elders_by_level],
        ),
        Table(
            "elders-by-district",
            _l("Elders served by district"),
            [_l("District"), _l("Elders served")],
            [[district_name(d, locale), count] for d, count in report.elders_by_district],
        ),
        Table(
            "allocations",
            _l("Allocations to districts in the period"),
            [_l("District"), _l("Allocated (yuan)")],
            [[district_name(d, locale), Money(fen)] for d, fen in report.funds.allocations],
        ),
        Table(
            "assessments",
            _l("Assessments approved by level"),
            [_l("Level"), _l("Assessments approved")],
            [
                [LEVEL_LABELS.get(level, level), count]
                for level, count in report.assessments_by_level
            ],
        ),
        Table(
            "flags",
            _l("Flags by rule"),
            [_l("Rule"), _l("Raised"), _l("Cleared"), _l("Rejected")],
            [[f.label, f.raised, f.cleared, f.rejected] for f in report.flags],
        ),
        Table(
            "reconciliation",
            _l("Reconciliation by month"),
            [_l("Month"), _l("Status"), _l("Last reconciled"), _l("Open exceptions")],
            [
                [
                    f"{r.month:%Y-%m}",
                    RECONCILIATION_LABELS[r.status],
                    format_local(r.last_run_at) if r.last_run_at else "—",
                    r.open_exceptions,
                ]
                for r in report.reconciliation
            ],
        ),
    ]
    return tables


TABLE_NAMES = (
    "summary",
    "months",
    "elders-by-level",
    "elders-by-district",
    "allocations",
    "assessments",
    "flags",
    "reconciliation",
)
