"""Inline charts must live with the pages' Content-Security-Policy (``style-src 'self'``):
a ``style`` attribute is inline style, which the browser refuses, so the bars lose their
colours and the labels their font. ``to_svg`` writes presentation attributes instead."""

from __future__ import annotations

import re

from vouchers.insight import charts


def _svg(drawing) -> str:
    return charts.to_svg(drawing, label="图")


def test_an_inline_chart_carries_no_style_attribute(app_ctx):
    for drawing in (
        charts.bar_chart("标题", ["甲", "乙"], [("一", [1, 2]), ("二", [2, 3])], empty_text="无"),
        charts.line_chart("标题", ["2026-01", "2026-02"], [("一", [1, 2])], empty_text="无"),
        charts.bar_chart("标题", [], [], empty_text="暂无数据"),
    ):
        svg = _svg(drawing)
        assert not re.search(r"\sstyle=", svg), svg[:400]
        # The colours and the font are still said, as attributes.
        assert 'font-family="' in svg and "WenQuanYi Micro Hei" in svg
        assert 'class="chart"' in svg


def test_the_bars_keep_their_colours(app_ctx):
    svg = _svg(charts.bar_chart("标题", ["甲"], [("一", [3])], empty_text="无"))
    assert re.search(r'<rect [^>]*fill="rgb\(12%,37%,60%\)"', svg)
    # No attribute is written twice on one element (a browser keeps only the first).
    for tag in re.findall(r"<[a-z]+\s[^>]*>", svg):
        names = re.findall(r'\s([a-zA-Z:-]+)="', tag)
        assert len(names) == len(set(names)), tag


def test_the_legend_stays_inside_the_drawing(app_ctx):
    """Two series have a legend; its names were drawn past the right edge, and the page's
    SVG (clipped to its box) showed the colour swatches without their names."""
    names = [("发放面额 Face value issued", [1, 2]), ("支付补贴 Subsidy paid", [2, 3])]
    for drawing in (
        charts.bar_chart("标题", ["2026-01", "2026-02"], names, empty_text="无"),
        charts.line_chart("标题", ["2026-01", "2026-02"], names, empty_text="无", width=500),
    ):
        left, bottom, right, top = drawing.getBounds()
        assert 0 <= left and right <= drawing.width and top <= drawing.height
