"""Marshmallow fields every domain's API schemas share.

A number in a request must be a JSON number and a flag a JSON boolean: ``"5"``, ``5.0``
or ``true`` never pass for 5, and ``1`` or ``"yes"`` never pass for true. The domains'
rules (ranges, limits) stay with their service functions; these fields check shapes only.
"""

from __future__ import annotations

from marshmallow import fields, validate

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 50


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


def page_limit() -> fields.Integer:
    """The ``limit`` of a list query: how many rows a page holds."""
    return fields.Integer(
        load_default=DEFAULT_PAGE_SIZE, validate=validate.Range(min=1, max=MAX_PAGE_SIZE)
    )


def page_offset() -> fields.Integer:
    """The ``offset`` of a list query: how many rows come before the page."""
    return fields.Integer(load_default=0, validate=validate.Range(min=0))
