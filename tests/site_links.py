"""The site's own links on a page and the ones it offers as menu cards: what the menu walks
(tests/test_menu_links.py with the test client, tests/e2e/test_every_role_every_page.py in
Chromium) follow from the home page, one page down."""

from __future__ import annotations

import re


def own(hrefs) -> set[str]:
    hrefs = {h.replace("&amp;", "&") for h in hrefs}
    return {h for h in hrefs if h.startswith("/") and "/static/" not in h}


def links(page: str) -> set[str]:
    """The site's own links on a page, static files aside."""
    return own(re.findall(r'href="([^"]+)"', page))


def cards(page: str) -> set[str]:
    """The links a page offers as menu cards."""
    return own(re.findall(r'<a class="card" href="([^"]+)"', page))
