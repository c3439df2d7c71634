"""The ``?page=`` of the HTML lists, read once for all of them.

A page number becomes ``OFFSET (page - 1) * size`` in SQL: past BIGINT it is a 500 from the
database (a huge number typed or sent on purpose). Text that is not a page number (a word,
zero, a negative number) shows the first page, as a list always did; a number past any page
a list could have is a clear 404 in the reader's language.
"""

from __future__ import annotations

from flask_babel import lazy_gettext as _l

from eldercare.errors import NotFound

# 100,000 pages of 100 rows: ten million rows, more than any list of the programme holds,
# and far from overflowing an OFFSET.
MAX_PAGE = 100_000
NO_SUCH_PAGE = _l("This page of results does not exist.")


def page_number(text: str | None) -> int:
    """The page asked for, from 1 to MAX_PAGE; NotFound (404) past MAX_PAGE."""
    text = (text or "").strip()
    digits = text.lstrip("0")
    if not (text.isascii() and text.isdigit()) or not digits:
        return 1  # not a page number (a word, a sign, zero): the first page
    # Compared by length first: Python refuses int() of a digit string past 4,300 digits.
    if len(digits) > len(str(MAX_PAGE)) or int(digits) > MAX_PAGE:
        raise NotFound(NO_SUCH_PAGE, details={"page": NO_SUCH_PAGE})
    return int(digits)
