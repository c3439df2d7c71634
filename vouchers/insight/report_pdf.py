"""The report as PDF: ``report_pdf(report) -> bytes``, A4 portrait.

Chinese first, English after, on every label; the same tables as the page and the same
charts (reportlab Drawings are flowables), page numbers on every page. The font, the styles,
the page set-up, the numbered canvas and the one-build-at-a-time lock are the statements'
(``vouchers.settlement.documents.documents``): the CJK font is embedded (/FontFile2), never
only named.
Imports reportlab: import this module inside views only.
"""

from __future__ import annotations

import io

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.platypus import KeepTogether, Paragraph, Spacer, Table, TableStyle

from eldercare.timeutil import format_local
from vouchers.insight.report import CITY, Report
from vouchers.insight.report_charts import report_charts
from vouchers.insight.report_tables import (
    FUNDS_NOTE,
    MONEY_NOTE,
    bilingual,
    pdf_cell,
    report_tables,
)
from vouchers.settlement.documents.documents import (
    BUILD_LOCK,
    FONT,
    MARGIN,
    document_template,
    numbered_canvas,
    paragraph_styles,
    register_font,
)

PAGE = A4
FRAME_WIDTH = PAGE[0] - 2 * MARGIN
CHART_WIDTH = FRAME_WIDTH - 12
CHART_HEIGHT = 250
KINDS = {"month": ("月度报告", "Monthly report"), "year": ("年度报告", "Annual report")}


def title(report: Report) -> tuple[str, str]:
    zh, en = KINDS[report.period.kind]
    return (
        f"{CITY[0]} 养老服务消费券 {zh} {report.period.label_zh}",
        f"{CITY[1]} eldercare service vouchers · {en} · {report.period.label_en}",
    )


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# Shares of the frame's width per column, where the default (a wide first column, the
# rest equal) does not suit.
COLUMN_SHARES = {
    "months": (0.16, *[0.14] * 6),
    "reconciliation": (0.16, 0.38, 0.26, 0.20),
}


def _table(table, styles) -> Table:
    # "中文 English" cells wrap at spaces, never inside an English word.
    head_style = ParagraphStyle("head", parent=styles["small"], wordWrap=None)
    cell_style = ParagraphStyle("cell", parent=styles["base"], wordWrap=None)
    header = [Paragraph(_esc(bilingual(c)), head_style) for c in table.columns]
    rows = [[Paragraph(_esc(pdf_cell(v)), cell_style) for v in row] for row in table.rows]
    if not rows:
        rows = [[Paragraph("无 None", cell_style)] + [""] * (len(header) - 1)]
    count = len(header)
    first = 0.4 if count > 2 else 0.6
    shares = COLUMN_SHARES.get(
        table.name, (first, *[(1 - first) / max(1, count - 1)] * (count - 1))
    )
    widths = [FRAME_WIDTH * share for share in shares]
    out = Table([header, *rows], colWidths=widths, repeatRows=1)
    style = [
        ("FONT", (0, 0), (-1, -1), FONT, 9),
        ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
        ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eef1f4")),
        ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ("TOPPADDING", (0, 0), (-1, -1), 2),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
    ]
    out.setStyle(TableStyle(style))
    return out


def report_pdf(report: Report) -> bytes:
    register_font()
    styles = paragraph_styles()
    zh, en = title(report)
    scope = (
        f"{report.district.name_zh} {report.district.name_en}"
        if report.district is not None
        else "全市 City-wide"
    )
    story = [
        Paragraph(_esc(zh), styles["title"]),
        Paragraph(_esc(en), styles["subtitle"]),
        Spacer(1, 3 * mm),
        Paragraph(
            _esc(
                f"范围 Scope: {scope} · 期间 Period: {report.period.start:%Y-%m-%d} – "
                f"{report.period.last_day:%Y-%m-%d} · 生成时间 Generated: "
                f"{format_local(report.generated_at)}"
            ),
            styles["small"],
        ),
        Paragraph(_esc(bilingual(MONEY_NOTE)), styles["small"]),
    ]
    if report.funds.scope == "district":
        story.append(Paragraph(_esc(bilingual(FUNDS_NOTE)), styles["small"]))
    drawings = {
        name: drawing
        for name, _label, drawing in report_charts(
            report, "pdf", width=CHART_WIDTH, height=CHART_HEIGHT
        )
    }
    for table in report_tables(report, "pdf"):
        story.append(
            KeepTogether(
                [
                    Paragraph(_esc(bilingual(table.title)), styles["heading"]),
                    Spacer(1, 1 * mm),
                    _table(table, styles),
                ]
            )
        )
        if table.name in drawings:
            drawing = drawings[table.name]
            # The renderer starts every drawing in Helvetica (named in the file, not embedded)
            # unless told otherwise: start it in the embedded font.
            drawing.initialFontName = FONT
            story += [Spacer(1, 3 * mm), drawing]
        story.append(Spacer(1, 4 * mm))
    buffer = io.BytesIO()
    document = document_template(buffer, title=f"{zh} / {en}", subject=en, page=PAGE)
    with BUILD_LOCK:
        document.build(story, canvasmaker=numbered_canvas(f"{zh} {report.period.text}", page=PAGE))
    return buffer.getvalue()
