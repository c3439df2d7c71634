"""Marshmallow fields every domain's API schemas share.

A number in a request must be a JSON number and a flag a JSON boolean: ``"5"``, ``5.0``
or ``true`` never pass for 5, and ``1`` or ``"yes"`` never pass for true. The domains'
rules (ranges, limits) stay with their service functions; these fields check shapes, and
the bounds past which a value cannot even be stored or computed with: a row id past the
database's INTEGER, an offset past its BIGINT, a date whose next day or month Python cannot
compute. Such input is a 422 naming the field, never an overflow (a 500) deep in a service.
"""

from __future__ import annotations

from datetime import datetime

from flask_babel import lazy_gettext as _l
from marshmallow import ValidationError, fields, validate

from eldercare.db import ROW_ID_MAX
from eldercare.forms import DATE_OUT_OF_RANGE
from eldercare.timeutil import in_date_range

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 50
# No list holds more rows than there are row ids; a larger offset only overflows OFFSET.
MAX_OFFSET = ROW_ID_MAX
ROW_ID_OUT_OF_RANGE = _l("Give an id from 1 to 2147483647.")
OFFSET_OUT_OF_RANGE = _l("Give an offset from 0 to 2147483647.")
TOO_LONG = _l("Keep this to at most {max} characters.")


class StrictInteger(fields.Integer):
    """A JSON number that is already whole: neither ``"5"`` nor ``true`` passes for 5.

    marshmallow's ``strict=True`` still accepts booleans (``bool`` is an ``int``), and a
    checkbox value must never pass for a count, a rating, an amount or an id.
    """

    def __init__(self, **kwargs):
        super().__init__(strict=True, **kwargs)

    def _validated(self, value):
        if isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return super()._validated(value)


class StrictBoolean(fields.Boolean):
    """Only JSON ``true`` or ``false``; not ``1``, ``"yes"`` or ``"on"``."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        return value


def row_id(*, strict: bool = True, **kwargs) -> fields.Integer:
    """The id of a row, from 1 to the largest INTEGER key: a larger one names no row, and
    PostgreSQL would refuse to compare it with an INTEGER column. ``strict=False`` for a
    query string, where every value is text."""
    field = StrictInteger if strict else fields.Integer
    in_range = validate.Range(min=1, max=ROW_ID_MAX, error=ROW_ID_OUT_OF_RANGE)
    return field(validate=in_range, **kwargs)


def _within_range(value):
    """``value`` when its day falls in 1900..2100 (eldercare.timeutil.in_date_range)."""
    if not in_date_range(value.date() if isinstance(value, datetime) else value):
        # str(): marshmallow lists a message only when it is a str, not a lazy one
        raise ValidationError(str(DATE_OUT_OF_RANGE))
    return value


# The range as the OpenAPI document states it, so that generated clients and test generators
# know it: the value starts with a year from 1900 to 2100.
YEAR_PATTERN = r"^(19[0-9]{2}|20[0-9]{2}|2100)-"


class _InRange:
    def __init__(self, **kwargs):
        kwargs["metadata"] = {"pattern": YEAR_PATTERN, **kwargs.get("metadata", {})}
        super().__init__(**kwargs)


class Date(_InRange, fields.Date):
    """A calendar day between 1900-01-01 and 2100-12-31."""

    def _deserialize(self, value, attr, data, **kwargs):
        return _within_range(super()._deserialize(value, attr, data, **kwargs))


class AwareDateTime(_InRange, fields.AwareDateTime):
    """A time with its zone, on a day between 1900-01-01 and 2100-12-31."""

    def _deserialize(self, value, attr, data, **kwargs):
        return _within_range(super()._deserialize(value, attr, data, **kwargs))


def page_limit() -> fields.Integer:
    """The ``limit`` of a list query: how many rows a page holds."""
    return fields.Integer(
        load_default=DEFAULT_PAGE_SIZE, validate=validate.Range(min=1, max=MAX_PAGE_SIZE)
    )


def page_offset() -> fields.Integer:
    """The ``offset`` of a list query: how many rows come before the page."""
    in_range = validate.Range(min=0, max=MAX_OFFSET, error=OFFSET_OUT_OF_RANGE)
    return fields.Integer(load_default=0, validate=in_range)


# --- shapes the document states, so that generated clients send what the code accepts ----

# GB 11643: six digits of region (not starting with 0), the birth date, a sequence of three
# digits and the check character. The pattern states all a JSON Schema can; the check
# character (ISO 7064 MOD 11-2) and a birth date that exists and is not in the future are
# checked in code (eldercare.residents.parse_resident_id) and named in the description.
RESIDENT_ID_PATTERN = r"^[1-9]\d{5}(18|19|20)\d{2}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])\d{3}[\dXx]$"
# Months of the programme: years 2000-2099 (vouchers.settlement.statements.run.MONTH_YEARS).
MONTH_PATTERN = r"^20\d{2}-(0[1-9]|1[0-2])$"
DISTRICT_PATTERN = r"^[1-9]\d{5}$"  # GB/T 2260 administrative code


def resident_id_number(**kwargs) -> fields.String:
    """A resident ID number in a request body (never a URL: access logs keep URLs)."""
    metadata = {
        "description": "the 18-character resident ID number (GB 11643); its last character "
        "must be the check character of the first 17 and the birth date a real past day",
        # A name for the shape, so that clients and test generators can supply valid numbers.
        "format": "resident-id",
        **kwargs.pop("metadata", {}),
    }
    wrong = _l("A resident ID number has 18 characters: 17 digits, then a digit or X.")
    return fields.String(
        validate=validate.Regexp(RESIDENT_ID_PATTERN, error=wrong), metadata=metadata, **kwargs
    )


def month(**kwargs) -> fields.String:
    """A month of the programme, YYYY-MM (years 2000-2099, Asia/Shanghai)."""
    metadata = {"description": "YYYY-MM (years 2000-2099, Asia/Shanghai)"}
    metadata.update(kwargs.pop("metadata", {}))
    wrong = _l("Give the month as YYYY-MM, for example 2026-11.")
    return fields.String(
        validate=validate.Regexp(MONTH_PATTERN, error=wrong), metadata=metadata, **kwargs
    )


def district_code(**kwargs) -> fields.String:
    """A district's administrative code; a code no district has is answered with 404."""
    metadata = {"description": "district code (GB/T 2260); 404 when no district has it"}
    metadata.update(kwargs.pop("metadata", {}))
    wrong = _l("No district has this code.")
    return fields.String(
        validate=validate.Regexp(DISTRICT_PATTERN, error=wrong), metadata=metadata, **kwargs
    )


# Text that must say something: at least one character that is not white space. Both Python
# (``str.strip``, which the services use) and JSON Schema's regular expressions must read it
# alike: Python also strips U+001C-U+001F and U+0085, which ECMAScript's \s leaves out. The
# leading [\s\S]*? lets Python's anchored match find the character anywhere, as a JSON Schema
# pattern (a search) does.
NOT_BLANK_PATTERN = r"^[\s\S]*?[^\s\u001c-\u001f\u0085]"


def said(max_length: int | None = None) -> list:
    """Validators of a text that must not be empty or only white space."""
    message = _l("This cannot be left empty.")
    validators = [
        validate.Length(min=1, error=message),
        validate.Regexp(NOT_BLANK_PATTERN, error=message),
    ]
    if max_length is not None:
        # Our own words, so the reader's language: marshmallow's default is English only.
        # marshmallow fills {max} in; the lazy string is rendered then, per request.
        validators.append(validate.Length(max=max_length, error=TOO_LONG))
    return validators
