"""``assert_one_language(html, lang, data=...)``: a page speaks its reader's language only.

A zh-CN page must not show English words, an English page must not show Chinese characters,
apart from the data on it (names, addresses, what people typed), which the caller passes in
``data`` and which is taken out first. What is checked is what a person reads: the text of the
page and the attributes that are read out or shown (title, alt, aria-label, placeholder,
value of buttons), not markup, scripts, styles, URLs or ids.

zh-CN: any ASCII word of two or more letters is English, unless it is in ``ALLOWED_WORDS``
(abbreviations Chinese pages use as they are, product and file-format names) or part of an
email address, a URL or a code with digits (district codes, 2026-12, YL-2025-0001).
English: any Han character is Chinese, except the name of the language switcher's other
language (``ALLOWED_HAN``).

Meant to be reused: a walk over every page can call it with each page's own data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from html.parser import HTMLParser

# Words a zh-CN page keeps in Latin letters.
ALLOWED_WORDS = frozenset(
    {
        # abbreviations and formats read as they are in Chinese
        "QR", "PIN", "API", "CSV", "XLSX", "SVG", "PDF", "PNG", "ID", "CNY", "CVC", "GB", "EVV",
        "JSON", "URL", "HTTP", "HTTPS", "SMS", "IP", "OK", "Excel", "WeChat", "Stripe",
        # the other language's own name, on the language switcher
        "English",
    }
)  # fmt: skip
# Han text an English page may show: the switcher offers Chinese in its own script.
ALLOWED_HAN = ("简体中文", "中文")

_READ_ATTRIBUTES = {"title", "alt", "aria-label", "placeholder"}
_SKIPPED_TAGS = {"script", "style", "template"}
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_URL = re.compile(r"(?:https?://|/)\S+")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_'’.-]*")


class _Reader(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag, attrs):
        if tag in _SKIPPED_TAGS:
            self._skipping += 1
        attributes = dict(attrs)
        for name, value in attrs:
            if value and name in _READ_ATTRIBUTES:
                self.parts.append(value)
        if (
            tag == "input"
            and attributes.get("type") in ("submit", "button")
            and attributes.get("value")
        ):
            self.parts.append(attributes["value"])

    def handle_endtag(self, tag):
        if tag in _SKIPPED_TAGS and self._skipping:
            self._skipping -= 1

    def handle_data(self, data):
        if not self._skipping:
            self.parts.append(data)


def readable_text(html: str) -> str:
    """What a person reads on the page, one piece per line."""
    reader = _Reader()
    reader.feed(html)
    reader.close()
    return "\n".join(part.strip() for part in reader.parts if part.strip())


def foreign_words(html: str, lang: str, data: Iterable[object] = ()) -> list[str]:
    """The words of the other language on the page, data taken out (see the module)."""
    text = readable_text(html)
    # Longest first: a value containing a shorter one is taken out whole.
    for value in sorted((str(v) for v in data if v not in (None, "")), key=len, reverse=True):
        text = text.replace(value, " ")
    if lang.startswith("zh"):
        text = _URL.sub(" ", _EMAIL.sub(" ", text))
        found = []
        for word in _WORD.findall(text):
            word = word.strip("'’.-")
            letters = sum(ch.isalpha() for ch in word)
            if letters < 2 or any(ch.isdigit() for ch in word) or word in ALLOWED_WORDS:
                continue
            found.append(word)
        return found
    for allowed in ALLOWED_HAN:
        text = text.replace(allowed, " ")
    return _HAN.findall(text)


def assert_one_language(html: str, lang: str, data: Iterable[object] = ()) -> None:
    """Fail, naming the words and their lines, when the page shows words of the language
    other than ``lang`` ("zh_CN" or "en") outside ``data``."""
    data = list(data)
    found = foreign_words(html, lang, data)
    if found:
        lines = [
            line for line in readable_text(html).splitlines() if any(word in line for word in found)
        ]
        raise AssertionError(
            f"{lang} page shows {'English' if lang.startswith('zh') else 'Chinese'} "
            f"words {sorted(set(found))} in: {lines[:10]}"
        )
