"""The bureau's report page in Chromium, on the demo city: the charts are drawn under the
Content-Security-Policy with their colours and the CJK font (``new_page`` fails the test on
any violation), fit a phone's width, and the PDF link answers a PDF."""

from __future__ import annotations

from playwright.sync_api import Page

from eldercare.timeutil import local_today
from tests.e2e.helpers import sign_in

DESK = {"width": 1280, "height": 900}


def _open(page: Page, username: str) -> str:
    sign_in(page, username)
    period = f"{local_today():%Y-%m}"
    page.goto(f"/vouchers/bureau/report?period={period}")
    return period


def test_the_charts_are_drawn_in_colour(new_page, tmp_path):
    page = new_page(viewport=DESK)
    period = _open(page, "bureau.officer")
    charts = page.locator("figure.chart svg")
    assert charts.count() == 3
    # A bar of the districts' chart has the palette's first colour, not the default black.
    fill = page.evaluate(
        "() => getComputedStyle(document.querySelector('#chart-elders-by-district svg rect"
        '[fill^="rgb(12%"]\')).fill'
    )
    assert fill == "rgb(31, 94, 153)", fill
    family = page.evaluate(
        "() => getComputedStyle(document.querySelector('#chart-months svg text')).fontFamily"
    )
    assert "WenQuanYi Micro Hei" in family
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    response = page.request.get(f"/vouchers/bureau/report.pdf?period={period}")
    assert response.status == 200 and response.body().startswith(b"%PDF")


def test_on_a_phone_the_charts_fit_the_width(page: Page):
    _open(page, "heping.officer")
    widths = page.evaluate(
        "() => [document.documentElement.clientWidth,"
        " ...[...document.querySelectorAll('figure.chart svg')]"
        ".map(s => s.getBoundingClientRect().right)]"
    )
    page_width, *rights = widths
    assert len(rights) == 3 and all(right <= page_width for right in rights), widths
