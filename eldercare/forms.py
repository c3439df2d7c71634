"""Reading the HTML forms' fields, and showing a service's refusal on the page: what the
domains' views share.

Only the shape of the input is checked here (is it a date, a whole number, an amount of
money); every business rule stays in the domains' service modules, whose messages the pages
show next to the fields they concern. A page's ``problem`` is None or
``{"message": str, "fields": {field name: message}, "other": [messages for no field]}``, as
``problem_from`` and ``input_problem`` make it and the macros of ``_form_parts.html`` show it.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal

from flask_babel import lazy_gettext as _l
from flask_babel.speaklater import LazyString

from eldercare.db import ROW_ID_MAX
from eldercare.errors import DomainError, leading_message
from eldercare.timeutil import in_date_range

_YUAN = re.compile(r"^\d{1,7}(\.\d{1,2})?$")
DATE_OUT_OF_RANGE = _l("Give a date between 1900-01-01 and 2100-12-31.")


class FormErrors(dict):
    """Field name -> message, for input that could not even be read; the first message for
    a field wins."""

    def add(self, field: str, message) -> None:
        self.setdefault(field, str(message))


def parse_date(value: str | None, field: str, errors: FormErrors, *, required=True) -> date | None:
    text = (value or "").strip()
    if not text:
        if required:
            errors.add(field, _l("Enter a date."))
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        errors.add(field, _l("Enter a date as year-month-day, for example 2025-07-01."))
        return None
    if not in_date_range(day):
        errors.add(field, DATE_OUT_OF_RANGE)
        return None
    return day


def parse_effective_from(value: str | None, errors: FormErrors) -> date | None:
    """The first day of a new version (a voucher policy's, an anomaly rule's), field
    ``effective_from``: blank is as unreadable as a wrong date (a version needs its day), so
    both ask for the year-month-day form."""
    try:
        day = date.fromisoformat((value or "").strip())
    except ValueError:
        errors.add("effective_from", _l("Enter a date as year-month-day, for example 2026-01-01."))
        return None
    if not in_date_range(day):
        errors.add("effective_from", DATE_OUT_OF_RANGE)
        return None
    return day


def whole_number(value: str | None, *, digits: int = 9) -> int | None:
    """The integer the text is (an optional minus sign and up to ``digits`` digits), else None."""
    text = (value or "").strip()
    return int(text) if re.fullmatch(rf"-?\d{{1,{digits}}}", text) else None


def row_id(text: str | None) -> int:
    """For ``request.form.get(name, type=row_id)``: the id of a row. Anything that cannot
    be one (not a number, below 1, past the largest INTEGER key) raises ValueError, so the
    ``get`` answers its default as for any other text: a number past INTEGER would reach
    PostgreSQL, which refuses to compare it with an id column (a 500)."""
    number = whole_number(text, digits=10)
    if number is None or not 1 <= number <= ROW_ID_MAX:
        raise ValueError("not a row id")
    return number


def whole_number_or_raw(value: str | None, *, digits: int = 6):
    """An integer when the text is one, otherwise the text itself (None when blank): the
    service then names the field and its allowed range in its own words."""
    number = whole_number(value, digits=digits)
    if number is not None:
        return number
    return (value or "").strip() or None


# --------------------------------------------------------------------------- money


def _amount_text(value: str | None) -> str:
    text = (value or "").strip().replace(",", "").replace("，", "")
    if text.startswith(("¥", "￥")):
        text = text[1:].strip()
    return text


def fen_from_yuan(value: str | None) -> int | None:
    """An amount typed in yuan ("35", "35.5", "¥35.50", "1,000") as integer fen, else None.

    Decimal, not float, so that 0.1 + 0.2 yuan is exactly 30 fen.
    """
    text = _amount_text(value)
    if not _YUAN.match(text):
        return None
    return int(Decimal(text) * 100)  # exact: the pattern allows at most two decimals


def parse_yuan(value: str | None, field: str, errors: FormErrors) -> int | None:
    """``fen_from_yuan``, with a message for ``field`` when the amount is missing or unreadable."""
    if not _amount_text(value):
        errors.add(field, _l("Enter the amount in yuan, for example 80 or 80.50."))
        return None
    fen = fen_from_yuan(value)
    if fen is None:
        errors.add(field, _l("Enter the amount in yuan with at most two decimals, e.g. 80.50."))
    return fen


def yuan(fen: int | None) -> str:
    """Integer fen shown as yuan with two decimals: 8000 -> ¥80.00."""
    if fen is None:
        return "—"
    return f"¥{Decimal(fen) / 100:,.2f}"


def yuan_input(fen: int | None) -> str:
    """Fen as a form shows it back: 1500 -> 15, 1550 -> 15.50."""
    if fen is None:
        return ""
    text = f"{Decimal(fen) / 100:.2f}"
    return text[:-3] if text.endswith(".00") else text


# --------------------------------------------------------------------------- refusals


def field_errors(
    error: DomainError, fields, *, message_fields=()
) -> tuple[dict[str, str], list[str]]:
    """A service error's details split into those next to the form's ``fields`` and the
    messages about anything else (for the notice at the top).

    ``details`` mostly maps a field to what is wrong with it; for ``message_fields`` (a
    diagnosis code, an assessor's name) it holds the offending value and the error's message
    says what is wrong, so those fields show the message. Details that are not messages for
    people (codes, ids, values) are left out.
    """
    placed: dict[str, str] = {}
    other: list[str] = []
    for key, value in (error.details or {}).items():
        if key in message_fields:
            placed[key] = str(error.message)
        elif key in fields:
            placed[key] = str(value)
        elif isinstance(value, LazyString):
            other.append(str(value))
    return placed, other


def problem_from(
    error: DomainError,
    fields=(),
    *,
    message_fields=(),
    extra: FormErrors | None = None,
    others: bool = True,
) -> dict:
    """What a page needs to show a service's refusal: the message, the field errors and
    (unless ``others`` is false) the messages about things the form has no field for;
    ``extra`` adds messages about input that could not be read."""
    placed, other = field_errors(error, fields, message_fields=message_fields)
    placed.update(extra or {})
    # Input that could not even be read is a second problem: then no single reason leads.
    message = str(error.message if extra else leading_message(error))
    other = [m for m in other if m != message] if others else []
    return {"message": message, "fields": placed, "other": other}


def input_problem(errors: FormErrors) -> dict:
    """What a page needs to show input that could not even be read."""
    return {
        "message": str(_l("Some of the information entered is not valid.")),
        "fields": dict(errors),
        "other": [],
    }


# --------------------------------------------------------------------------- NUL characters

NUL_REFUSED = _l("Text may not contain NUL characters (code 0); remove them and try again.")


def _nul_fields(value, name: str, found: dict) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            found.setdefault(name.replace("\x00", "") or "text", NUL_REFUSED)
    elif isinstance(value, dict):
        for key, item in value.items():
            _nul_fields(str(key), name, found)
            _nul_fields(item, str(key), found)
    elif isinstance(value, list):
        for item in value:
            _nul_fields(item, name, found)


def refuse_nul_characters() -> None:
    """A ``before_request`` hook: every text a request carries (headers, query string, form
    fields, uploaded file names, a JSON body) is refused whole when it holds a NUL character.
    PostgreSQL cannot store NUL in text, so such input would otherwise fail deep inside a
    service with a 500 after some work; here it is one clear 422 and nothing changes. A
    file's content is the reader's business (``result_files`` refuses NUL in a row)."""
    from flask import request

    from eldercare.errors import InvalidInput

    found: dict = {}
    for key, value in request.headers.items():  # the token's prefix is looked up, for one
        _nul_fields(value, key, found)
    for key, value in request.args.items(multi=True):
        _nul_fields(key, key, found)
        _nul_fields(value, key, found)
    if request.method in ("POST", "PUT", "PATCH", "DELETE"):
        for key, value in request.form.items(multi=True):
            _nul_fields(key, key, found)
            _nul_fields(value, key, found)
        for key, upload in request.files.items(multi=True):
            _nul_fields(upload.filename or "", key, found)
        if request.is_json:
            _nul_fields(request.get_json(silent=True), "body", found)
    if found:
        raise InvalidInput(NUL_REFUSED, details=found)
