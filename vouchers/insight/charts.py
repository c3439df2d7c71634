"""Charts for the bureau's pages and its PDF report, drawn once as reportlab ``Drawing``s.

One drawing serves both: ``to_svg`` inlines it in a page (no script, nothing from a CDN),
and the monthly report's PDF draws the same object (``reportlab.platypus`` takes a Drawing
as a flowable), so the page and the printed report never disagree. reportlab is already
the project's PDF library; its chart widgets need no browser and no other package.

Text is set in the statements' CJK font (``vouchers.settlement.documents.documents.register_font``):
reportlab measures labels with it, the PDF embeds it, and the SVG names it first with the
reader's own sans-serif font after it, so Chinese labels read on any phone.

Every chart draws from empty data too: the title and the caller's "no data yet" line, never
an exception (the first month of a programme, a district with no provider yet).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence

from reportlab.graphics import renderSVG
from reportlab.graphics.charts.barcharts import HorizontalBarChart, VerticalBarChart
from reportlab.graphics.charts.legends import Legend
from reportlab.graphics.charts.linecharts import HorizontalLineChart
from reportlab.graphics.shapes import Drawing, String
from reportlab.lib import colors
from reportlab.pdfbase import pdfmetrics

from vouchers.settlement.documents.documents import register_font

# Distinguishable in colour and in grey print, each at least 4.5:1 on white.
PALETTE = (
    colors.HexColor("#1f5f99"),
    colors.HexColor("#b3471d"),
    colors.HexColor("#2e7d32"),
    colors.HexColor("#6a3d9a"),
    colors.HexColor("#8a6d00"),
    colors.HexColor("#4d4d4d"),
)
WIDTH = 640
HEIGHT = 320
TITLE_SIZE = 14
LABEL_SIZE = 10
SVG_FONTS = (
    "'WenQuanYi Micro Hei', 'Noto Sans CJK SC', 'PingFang SC', 'Microsoft YaHei', sans-serif"
)

Series = Sequence[tuple[str, Sequence[float]]]


def _frame(title: str, width: float, height: float) -> tuple[Drawing, str]:
    font = register_font()
    drawing = Drawing(width, height)
    drawing.add(
        String(
            width / 2,
            height - TITLE_SIZE - 4,
            title,
            fontName=font,
            fontSize=TITLE_SIZE,
            textAnchor="middle",
        )
    )
    return drawing, font


def _empty(drawing: Drawing, font: str, empty_text: str, width: float, height: float) -> Drawing:
    drawing.add(
        String(
            width / 2,
            height / 2,
            empty_text,
            fontName=font,
            fontSize=LABEL_SIZE + 2,
            textAnchor="middle",
            fillColor=PALETTE[5],
        )
    )
    return drawing


def _has_data(categories: Sequence[str], series: Series) -> bool:
    return bool(categories) and any(any(v for v in values) for _, values in series)


def _legend(drawing: Drawing, font: str, series: Series, right: float, top: float) -> None:
    """A line per series (swatch, then name) in the top right corner, ending at ``right``:
    measured in the font, so a long bilingual name never runs past the drawing's edge."""
    if len(series) < 2:
        return
    legend = Legend()
    legend.fontName, legend.fontSize = font, LABEL_SIZE
    legend.alignment = "right"  # the name to the right of its swatch
    legend.columnMaximum = len(series)
    legend.colorNamePairs = [
        (PALETTE[i % len(PALETTE)], name) for i, (name, _) in enumerate(series)
    ]
    longest = max(pdfmetrics.stringWidth(str(name), font, LABEL_SIZE) for name, _ in series)
    legend.x = right - legend.dx - legend.dxTextSpace - longest
    legend.y = top
    drawing.add(legend)


def _style_axes(chart, font: str, categories: Sequence[str], rotate: bool) -> None:
    chart.categoryAxis.categoryNames = list(categories)
    chart.categoryAxis.labels.fontName = font
    chart.categoryAxis.labels.fontSize = LABEL_SIZE
    chart.valueAxis.labels.fontName = font
    chart.valueAxis.labels.fontSize = LABEL_SIZE
    chart.valueAxis.valueMin = 0
    chart.valueAxis.labelTextFormat = _compact
    if rotate:
        chart.categoryAxis.labels.angle = 45
        chart.categoryAxis.labels.boxAnchor = "ne"


def _compact(value: float) -> str:
    """Axis numbers short enough for a phone: 12,500,000 → 12.5M (amounts are given in full in
    the table beside every chart)."""
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}" if value != int(value) else str(int(value))


def bar_chart(
    title: str,
    categories: Sequence[str],
    series: Series,
    *,
    empty_text: str,
    horizontal: bool = False,
    width: float = WIDTH,
    height: float = HEIGHT,
) -> Drawing:
    """Bars per category, one colour per series (``[(name, values), ...]``, values in the
    categories' order). Horizontal bars suit long names (providers, districts)."""
    drawing, font = _frame(title, width, height)
    if not _has_data(categories, series):
        return _empty(drawing, font, empty_text, width, height)
    chart = HorizontalBarChart() if horizontal else VerticalBarChart()
    left = 150 if horizontal else 60
    chart.x, chart.y = left, 70 if not horizontal else 40
    chart.width = width - left - 20
    chart.height = height - chart.y - TITLE_SIZE - 40
    chart.data = [list(values) for _, values in series]
    for i in range(len(series)):
        chart.bars[i].fillColor = PALETTE[i % len(PALETTE)]
        chart.bars[i].strokeColor = None
    _style_axes(chart, font, categories, rotate=not horizontal and len(categories) > 6)
    drawing.add(chart)
    _legend(drawing, font, series, width - 10, height - TITLE_SIZE - 12)
    return drawing


def line_chart(
    title: str,
    categories: Sequence[str],
    series: Series,
    *,
    empty_text: str,
    width: float = WIDTH,
    height: float = HEIGHT,
) -> Drawing:
    """Lines over categories (months), one per series, with a dot on every point."""
    drawing, font = _frame(title, width, height)
    if not _has_data(categories, series):
        return _empty(drawing, font, empty_text, width, height)
    chart = HorizontalLineChart()
    chart.x, chart.y = 60, 70
    chart.width = width - 80
    chart.height = height - chart.y - TITLE_SIZE - 40
    chart.data = [list(values) for _, values in series]
    chart.joinedLines = 1
    for i in range(len(series)):
        chart.lines[i].strokeColor = PALETTE[i % len(PALETTE)]
        chart.lines[i].strokeWidth = 2
        chart.lines[i].symbol = None
    _style_axes(chart, font, categories, rotate=len(categories) > 6)
    drawing.add(chart)
    _legend(drawing, font, series, width - 10, height - TITLE_SIZE - 12)
    return drawing


_PROLOG = re.compile(r"\A.*?(?=<svg\b)", re.S)
_FONT_FAMILY = re.compile(r'font-family="[^"]*"|font-family:\s*[^;"]+')


def to_svg(drawing: Drawing, *, label: str) -> str:
    """The drawing as an inline ``<svg>`` element (no XML prolog), named for screen readers
    (``role="img"`` and ``aria-label``) and scaling to the page's width."""
    text = renderSVG.drawToString(drawing)
    # Several charts share a page: their ids (renderSVG always writes "clip" and "group")
    # must not collide.
    unique = secrets.token_hex(4)
    text = text.replace('id="clip"', f'id="clip-{unique}"').replace(
        "url(#clip)", f"url(#clip-{unique})"
    )
    text = text.replace('id="group"', f'id="group-{unique}"')
    text = _PROLOG.sub("", text, count=1)
    text = _FONT_FAMILY.sub(
        lambda m: (
            "font-family: " + SVG_FONTS if ":" in m.group(0) else f'font-family="{SVG_FONTS}"'
        ),
        text,
    )
    text = re.sub(
        r"<title>.*?</title>", f"<title>{_escape(label)}</title>", text, count=1, flags=re.S
    )
    text = re.sub(r"<desc>.*?</desc>", "", text, count=1, flags=re.S)
    # The pages' Content-Security-Policy (style-src 'self') refuses inline style: the same
    # declarations as presentation attributes, which it does not govern. The width follows
    # the page through the class (app.css: svg.chart).
    text = _STYLE.sub(_presentation, text)
    return text.replace("<svg ", f'<svg role="img" aria-label="{_escape(label)}" class="chart" ', 1)


_STYLE = re.compile(r'<[a-zA-Z]+\b[^>]*?\sstyle="[^"]*"[^>]*>')
_DECLARATION = re.compile(r'\sstyle="([^"]*)"')


def _presentation(match: re.Match) -> str:
    """One tag with its ``style="a: b; c: d"`` as ``a="b" c="d"`` (an attribute the tag
    already has is kept as it is)."""
    tag = match.group(0)
    declared = _DECLARATION.search(tag)
    present = set(re.findall(r'\s([a-zA-Z:-]+)="', tag))
    attributes = []
    for declaration in declared.group(1).split(";"):
        name, colon, value = declaration.partition(":")
        name, value = name.strip(), value.strip()
        if colon and name and name not in present:
            attributes.append(f' {name}="{value}"')
            present.add(name)
    return tag[: declared.start()] + "".join(attributes) + tag[declared.end() :]


def _escape(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )
