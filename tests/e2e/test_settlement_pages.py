"""The bureau's settlement pages in a real Chromium on the demo city (whose settlement demo
step settles, approves, pays and reconciles one month and leaves the next ready): in zh-CN,
with no 4xx/5xx on the way and no English words outside the data."""

from __future__ import annotations

import re

from tests.e2e.helpers import overflow, sign_in

DESK = {"width": 1280, "height": 900}
# Latin-script words a Chinese page legitimately shows: file formats and the QR code.
ALLOWED = {"CSV", "XLSX", "PDF", "QR"}
WORD = re.compile(r"[A-Za-z]{3,}")


def _english(page) -> set[str]:
    """Latin words in the page's main text, data left out: cells and values the page marks
    as data (statement and provider names, references, account numbers, hashes)."""
    text = page.evaluate(
        """() => {
          const main = document.querySelector('main').cloneNode(true);
          main.querySelectorAll('code, [data-fen], [data-ref], .data, td a, samp, kbd')
            .forEach((el) => el.remove());
          return main.innerText;
        }"""
    )
    return {w for w in WORD.findall(text) if w not in ALLOWED}


def test_the_settlement_statement_and_reconciliation_pages_read_in_chinese(new_page):
    page = new_page(viewport=DESK)
    failures: list[str] = []
    page.on(
        "response",
        lambda r: failures.append(f"{r.status} {r.url}") if r.status >= 400 else None,
    )
    sign_in(page, "bureau.officer")

    page.goto("/settlement/")
    assert page.locator("html").get_attribute("lang") == "zh-CN"
    ready = page.locator("button[id^=settle-]")
    assert ready.count() == 1  # the demo's ready month, with its button
    assert not _english(page), _english(page)

    # The demo settles a year: the latest paid month.
    paid = page.locator("tr[data-month]:has(span[data-status=paid])")
    month = paid.first.get_attribute("data-month")
    page.goto(f"/settlement/months/{month}")
    assert page.locator("#statements tr[data-status=paid]").count() >= 2
    assert not _english(page), _english(page)

    page.click("#statements tbody tr >> nth=0 >> a")
    page.wait_for_selector("#statement-lines")
    assert not _english(page), _english(page)

    page.goto(f"/settlement/reconcile?month={month}")
    assert page.locator("#reconcile-state").get_attribute("data-state") == "green"
    assert not _english(page), _english(page)
    scroll, client = overflow(page)
    assert scroll <= client, f"sideways scrolling: {scroll} > {client}"
    assert not failures, failures
