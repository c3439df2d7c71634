"""Checks every request passes before any view or schema reads it.

JSON nested 100,000 deep makes Python's parser (and every parser after it: webargs, the NUL
check) raise RecursionError, a 500. No body the API documents is more than a few levels
deep, so a body deeper than MAX_JSON_DEPTH is refused here, once, with a clear 400.
"""

from __future__ import annotations

import json

from flask import request
from flask_babel import lazy_gettext as _l

from eldercare.errors import DomainError

MAX_JSON_DEPTH = 32


class JSONTooDeep(DomainError):
    status = 400
    code = "json_too_deep"
    default_message = _l("The JSON body is nested too deeply (at most 32 levels).")


def _deeper_than(value, limit: int) -> bool:
    """Whether ``value`` nests lists and objects more than ``limit`` levels (no recursion:
    the point is a value too deep to recurse through)."""
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if level > limit:
            return True
        stack.extend((child, level + 1) for child in children)
    return False


def refuse_deep_json() -> None:
    """A ``before_request`` hook: a JSON body nested past MAX_JSON_DEPTH is a 400. Any other
    unreadable body is left to the schema's parser, which says what is wrong with it."""
    if request.method not in ("POST", "PUT", "PATCH", "DELETE") or not request.is_json:
        return
    try:
        body = json.loads(request.get_data(cache=True))
    except RecursionError:
        raise JSONTooDeep() from None
    except ValueError:
        return
    if _deeper_than(body, MAX_JSON_DEPTH):
        raise JSONTooDeep()
