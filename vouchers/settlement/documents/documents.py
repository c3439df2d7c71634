"""A statement as PDF: ``statement_pdf(statement) -> bytes``.

Page 1 is the cover: title, provider and credit code, month, statement number, status, the
payee (account number masked but its last four digits), the totals, the approval trail, and
a QR that opens the public verification page (``views_documents.verify``) with the
statement's hash printed under it. The lines follow on the next pages, A4 landscape, a table
per page with its header, page numbers on every page.

The Chinese text is set in WenQuanYi Micro Hei, a TrueType (glyf-outline) font that is
EMBEDDED in the file (a subset, as /FontFile2): reportlab's built-in STSong-Light is only
named in the file and renders blank on a reader without Adobe's Asian font pack. The font
comes from the PyPI package ``paperang-p2-fonts-cjk`` (pinned in setup.cfg; its .ttc is
byte-identical to Debian's ``fonts-wqy-microhei``, licence Apache-2.0 or GPL-3 with the font
exception), else from Debian's package where that is installed.

Large statements: the lines are read in one streamed query (``facts.line_rows``)
as plain values, and laid out as one table per page. A single table of every line would be
split page by page, each split rebuilding the table of all the lines left (quadratic time).
"""

from __future__ import annotations

import io
import threading
from functools import lru_cache
from pathlib import Path

from reportlab.lib import colors
from reportlab.lib.enums import TA_CENTER
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas as pdfcanvas
from reportlab.platypus import (
    Image,
    LongTable,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from vouchers.redemption.qr_images import qr_png
from vouchers.settlement.documents import facts
from vouchers.settlement.models import Statement
from vouchers.settlement.statements.hashing import statement_hash

FONT = "WQYMicroHei"
FONT_FILE = "wqy-microhei.ttc"
DEBIAN_FONT = Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc")

PAGE = landscape(A4)
MARGIN = 12 * mm
FOOTER = 8 * mm  # room under the frame for the page number
AUTHOR = "沈阳市民政局 Shenyang Civil Affairs Bureau"
ROW_HEIGHT = 5.4 * mm
HEADER_HEIGHT = 9 * mm
LINE_FONT_SIZE = 7.5
# Column widths of the lines table (mm), in the order of facts.LINE_HEADERS;
# they fill the landscape frame (297 - 2 x 12 = 273 mm).
LINE_WIDTHS_MM = (20, 20, 16, 70, 14, 14, 18, 20, 18, 20, 20, 23)
MONEY_COLUMNS = (7, 8, 9, 10)

# One build at a time: a reportlab TTFont keeps each document's subset in a dictionary that
# is not safe to change from two threads at once.
BUILD_LOCK = threading.Lock()


def font_path() -> Path:
    """The font file: the PyPI package's, else Debian's."""
    try:
        import paperang_p2_fonts_cjk
    except ImportError:
        packaged = None
    else:
        packaged = Path(paperang_p2_fonts_cjk.__file__).parent / "fonts" / FONT_FILE
    for path in (packaged, DEBIAN_FONT):
        if path is not None and path.is_file():
            return path
    raise RuntimeError(
        "No CJK font for statements: install the project (pip install -e .), which brings "
        "paperang-p2-fonts-cjk, or Debian's fonts-wqy-microhei."
    )


@lru_cache(maxsize=1)
def register_font() -> str:
    """Registers the font with reportlab once per process; returns its name."""
    # Face 0 of the collection is the proportional WenQuanYi Micro Hei (1 is its Mono).
    pdfmetrics.registerFont(TTFont(FONT, str(font_path()), subfontIndex=0))
    return FONT


def paragraph_styles() -> dict[str, ParagraphStyle]:
    """The documents' paragraph styles, in the embedded font (the report uses them too)."""
    base = ParagraphStyle("base", fontName=FONT, fontSize=10, leading=13, wordWrap="CJK")
    return {
        "base": base,
        "title": ParagraphStyle("title", parent=base, fontSize=20, leading=26, alignment=TA_CENTER),
        "subtitle": ParagraphStyle(
            "subtitle", parent=base, fontSize=12, leading=16, alignment=TA_CENTER
        ),
        "small": ParagraphStyle("small", parent=base, fontSize=8, leading=10),
        "heading": ParagraphStyle("heading", parent=base, fontSize=12, leading=16, spaceBefore=6),
        "hash": ParagraphStyle(
            "hash", parent=base, fontSize=7, leading=9, alignment=TA_CENTER, wordWrap="CJK"
        ),
    }


def numbered_canvas(footer: str, page=PAGE):
    """A canvas that writes ``footer`` and "page n of N" on every page once N is known (pages
    are kept until the end, then each is finished with its footer). Shared with the bureau's
    report (``vouchers.insight.report_pdf``)."""

    class NumberedCanvas(pdfcanvas.Canvas):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._pages = []

        def showPage(self):  # noqa: N802  (reportlab's name)
            self._pages.append(dict(self.__dict__))
            self._startPage()

        def save(self):
            total = len(self._pages)
            for state in self._pages:
                self.__dict__.update(state)
                self.setFont(FONT, 8)
                self.setFillColor(colors.grey)
                self.drawString(MARGIN, MARGIN - 2 * mm, footer)
                self.drawRightString(
                    page[0] - MARGIN,
                    MARGIN - 2 * mm,
                    f"第 {self._pageNumber} / {total} 页 · Page {self._pageNumber} of {total}",
                )
                super().showPage()
            super().save()

    return NumberedCanvas


def document_template(buffer, *, title: str, subject: str, page=PAGE) -> SimpleDocTemplate:
    """The page set-up every PDF of the bureau's shares (the statements, the report): the
    margins with room for the footer, the bureau as author, the embedded font from the start
    (not Helvetica, the canvas's default: every font in the file is the embedded one)."""
    return SimpleDocTemplate(
        buffer,
        pagesize=page,
        leftMargin=MARGIN,
        rightMargin=MARGIN,
        topMargin=MARGIN,
        bottomMargin=MARGIN + FOOTER,
        title=title,
        author=AUTHOR,
        subject=subject,
        initialFontName=FONT,
    )


def _numbered_canvas(number: str):
    return numbered_canvas(f"结算单号 Statement no. {number}")


def verification_qr_png(statement: Statement) -> bytes:
    """The QR printed on the statement: the verification page's link (error correction Q,
    the printed card's: paper gets folded and stamped)."""
    from vouchers.redemption.qr_images import CARD_CORRECTION

    return qr_png(facts.verify_url(statement), box_size=8, correction=CARD_CORRECTION)


def printed_hash(statement: Statement) -> tuple[str, bool]:
    """The hash printed under the QR and whether it is the approved one (stored at
    approval); before approval, the lines' hash as they stand (they may still change)."""
    if statement.lines_hash:
        return statement.lines_hash, True
    return statement_hash(statement), False


# -- the cover -------------------------------------------------------------------------------


def _pairs_table(rows, styles, widths) -> Table:
    data = [
        [Paragraph(facts.bilingual(label), styles["small"]), Paragraph(str(value), styles["base"])]
        for label, value in rows
    ]
    table = Table(data, colWidths=widths)
    table.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, -1), FONT, 10),
                ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
                ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
                ("BACKGROUND", (0, 0), (0, -1), colors.HexColor("#eef1f4")),
                ("TOPPADDING", (0, 0), (-1, -1), 2),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 2),
            ]
        )
    )
    return table


def _cover(statement: Statement, head: dict, styles) -> list:
    def esc(text) -> str:
        return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

    status = head["status_label"]
    facts_rows = [
        (("服务商", "Provider"), esc(head["provider_name"])),
        (("统一社会信用代码", "Credit code"), head["credit_code"]),
        (("结算月份", "Month"), head["month"]),
        (
            ("结算单号", "Statement no."),
            f"{head['number']}（第 {head['seq']} 份 seq {head['seq']}）",
        ),
        (("状态", "Status"), f"{status[0]} {status[1]}"),
        (("收款户名", "Payee"), esc(head["payee_account_name"])),
        (("开户银行", "Bank"), esc(head["payee_bank_name"])),
        (("银行账号", "Account"), head["payee_account_masked"]),
    ]
    money = facts.yuan_text
    totals_rows = [
        (("明细笔数", "Lines"), f"{head['line_count']:,}"),
        (("应付补贴", "Subsidy owed"), money(head["subsidy_fen"])),
        (
            ("代收银行卡自付", "Card co-payments collected on the provider's behalf"),
            money(head["card_copay_fen"]),
        ),
        (("冲抵追回款", "Clawback netted"), money(head["clawback_fen"])),
        (("应支付金额", "To be paid"), f"¥ {money(head['payable_fen'])}"),
        (
            ("支付日期", "Paid on"),
            facts.local_time_text(head["paid_at"], "%Y-%m-%d") if head["paid_at"] else "—",
        ),
    ]
    left = [
        _pairs_table(facts_rows, styles, (48 * mm, 120 * mm)),
        Spacer(1, 4 * mm),
        _pairs_table(totals_rows, styles, (48 * mm, 120 * mm)),
    ]

    digest, approved = printed_hash(statement)
    qr = Image(io.BytesIO(verification_qr_png(statement)), width=48 * mm, height=48 * mm)
    note = (
        "审批时存证的明细哈希 SHA-256 of the lines, stored at approval"
        if approved
        else "尚未审批，明细可能变化 Not approved yet: the lines may still change"
    )
    right = [
        qr,
        Paragraph("扫码核验 Scan to verify", styles["hash"]),
        Spacer(1, 2 * mm),
        Paragraph(digest[:32] + "<br/>" + digest[32:], styles["hash"]),
        Paragraph(note, styles["hash"]),
    ]
    top = Table([[left, right]], colWidths=(175 * mm, 95 * mm))
    top.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, -1), FONT, 10),
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("ALIGN", (1, 0), (1, 0), "CENTER"),
            ]
        )
    )

    trail = [["环节 Step", "人员 By", "时间 When", "说明 Note"]]
    for step in head["trail"]:
        trail.append(
            [
                facts.bilingual(step.what),
                Paragraph(esc(step.who), styles["base"]),
                facts.local_time_text(step.when),
                Paragraph(esc(step.note or ""), styles["base"]),
            ]
        )
    trail_table = Table(trail, colWidths=(50 * mm, 50 * mm, 40 * mm, 130 * mm), repeatRows=1)
    trail_table.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, -1), FONT, 9),
                ("GRID", (0, 0), (-1, -1), 0.4, colors.grey),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eef1f4")),
                ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
            ]
        )
    )
    return [
        Paragraph(facts.TITLE[0], styles["title"]),
        Paragraph(facts.TITLE[1], styles["subtitle"]),
        Spacer(1, 5 * mm),
        top,
        Spacer(1, 4 * mm),
        Paragraph("审批记录 Approval trail", styles["heading"]),
        trail_table,
    ]


# -- the lines -------------------------------------------------------------------------------


def _fit(text: str, width: float) -> str:
    """Cut ``text`` to fit ``width`` points in the lines' font, with an ellipsis."""
    if pdfmetrics.stringWidth(text, FONT, LINE_FONT_SIZE) <= width:
        return text
    while text and pdfmetrics.stringWidth(text + "…", FONT, LINE_FONT_SIZE) > width:
        text = text[:-1]
    return text + "…"


def _line_cells(row: facts.LineRow, widths) -> list[str]:
    money = facts.yuan_text
    return [
        str(row.redemption_id),
        row.date_text,
        row.elder,
        _fit(row.service, widths[3] - 4),
        row.check_in_text,
        row.check_out_text,
        "" if row.distance_m is None else f"{row.distance_m:,}",
        money(row.price_fen),
        money(row.insurance_fen),
        money(row.subsidy_fen),
        money(row.copay_fen),
        _fit(row.method_text, widths[11] - 4),
    ]


_LINE_STYLE = [
    ("FONT", (0, 0), (-1, -1), FONT, LINE_FONT_SIZE),
    ("FONT", (0, 0), (-1, 0), FONT, 7),
    ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eef1f4")),
    ("GRID", (0, 0), (-1, -1), 0.3, colors.grey),
    ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
    ("ALIGN", (MONEY_COLUMNS[0], 1), (MONEY_COLUMNS[-1], -1), "RIGHT"),
    ("ALIGN", (6, 1), (6, -1), "RIGHT"),
    ("TOPPADDING", (0, 0), (-1, -1), 1),
    ("BOTTOMPADDING", (0, 0), (-1, -1), 1),
]


def _rows_per_page() -> int:
    frame = PAGE[1] - 2 * MARGIN - FOOTER - 12  # the frame's own padding, 6 pt top and bottom
    heading = 16  # the "lines" heading on each page
    return max(1, int((frame - heading - HEADER_HEIGHT) // ROW_HEIGHT) - 1)


def _lines_pages(statement: Statement, styles) -> list:
    widths = [w * mm for w in LINE_WIDTHS_MM]
    header = ["\n".join(pair) for pair in facts.LINE_HEADERS]
    per_page = _rows_per_page()
    story: list = []
    totals = [0, 0, 0, 0]
    chunk: list[list[str]] = []

    def flush(last: bool) -> None:
        data = [header, *chunk]
        style = list(_LINE_STYLE)
        if last:
            data.append(["合计 Total", "", "", "", "", "", "", *map(facts.yuan_text, totals), ""])
            style.append(
                ("BACKGROUND", (0, len(data) - 1), (-1, len(data) - 1), colors.HexColor("#eef1f4"))
            )
        story.append(PageBreak())
        story.append(Paragraph("结算明细 Lines", styles["heading"]))
        table = LongTable(
            data,
            colWidths=widths,
            rowHeights=[HEADER_HEIGHT] + [ROW_HEIGHT] * (len(data) - 1),
            repeatRows=1,
        )
        table.setStyle(TableStyle(style))
        story.append(table)

    for row in facts.line_rows(statement):
        totals[0] += row.price_fen
        totals[1] += row.insurance_fen
        totals[2] += row.subsidy_fen
        totals[3] += row.copay_fen
        if len(chunk) == per_page:  # a full page, and more to come
            flush(last=False)
            chunk = []
        chunk.append(_line_cells(row, widths))
    flush(last=True)  # at most a page of lines and the total row (_rows_per_page leaves one)
    return story


def statement_pdf(statement: Statement) -> bytes:
    """The statement as a PDF file (bytes)."""
    register_font()
    styles = paragraph_styles()
    head = facts.summary(statement)
    buffer = io.BytesIO()
    document = document_template(
        buffer,
        title=f"{facts.TITLE[0]} {head['provider_name']} {head['month']} {head['number']}",
        subject=facts.TITLE[1],
    )
    story = _cover(statement, head, styles) + _lines_pages(statement, styles)
    with BUILD_LOCK:
        document.build(story, canvasmaker=_numbered_canvas(head["number"]))
    return buffer.getvalue()
