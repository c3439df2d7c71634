"""Text written now and read later, in whichever language its reader reads.

A row written by a job or a service (a journal memo, a payment's failure reason, a policy's
basis, a notice in someone's Messages) is read later, by people who do not all read the same
language; no language chosen at writing time is right for all of them. So such a row holds a
message code and its parameters, ``§ledger.hold {"redemption":5}`` (``encode``), and the page
says the words through gettext in its reader's language when it shows them (``render``, the
``stored`` template filter). A parameter may itself be stored text (a release's reason inside
its journal memo); it is rendered in the same language.

What people typed (a funding document's number, a reversal's reason) is stored and shown as
typed, and is never read as a code, whatever it begins with: a column that holds both passes
typed text through ``typed`` (which escapes a leading marker), and a parameter is said as stored
text only when its writer marks it ``nested`` (a parameter is otherwise the words it holds). So
a memo typed as ``§ledger.settle …`` reads as typed, not as a settlement. Rows written before
this module are free text and shown as they are, except the few sentences the migrations seeded,
which ``legacy`` maps to codes so existing books need no rewrite (the journal is append-only).

Each domain registers its codes (``message``) in the module that writes them; the shell knows
none of them. A code that is unknown when read (removed since) shows the stored text as it is.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

from flask_babel import force_locale

MARKER = "§"
_NESTED = MARKER  # a parameter stored as {"§": <stored text>} is said as stored text
_ELLIPSIS = "…"

# code -> a lazy gettext string with %(name)s placeholders, or a function of the parameters
Message = object | Callable[[Mapping], str]
_MESSAGES: dict[str, Message] = {}
_LEGACY: dict[str, str] = {}  # seeded free text -> its stored form


def message(code: str, text: Message) -> str:
    """Register ``code`` (``text``: ``_l("... %(name)s ...")`` or ``f(params) -> str``);
    returns the code. Registering it again replaces it (module reloads in tests)."""
    if " " in code or code.startswith(MARKER):
        raise ValueError(f"bad message code {code!r}")
    _MESSAGES[code] = text
    return code


def legacy(literal: str, code: str, **params) -> None:
    """Show the free text ``literal`` written by older code as ``code`` with ``params``."""
    _LEGACY[literal] = _dump(code, params)


class Nested(str):
    """A parameter that is the platform's own stored text (``nested``)."""


def nested(stored: str) -> Nested:
    """Mark ``stored`` (what ``encode`` returned) as stored text inside another's parameters,
    said in the reader's language; an unmarked parameter is words, shown as they are."""
    return Nested(stored)


def typed(text: str | None) -> str | None:
    """What a person typed, for a column that also holds stored text: unchanged, unless it
    begins with the marker, which is escaped (doubled) so it is never read as a code."""
    if text is not None and text.startswith(MARKER):
        return MARKER + text
    return text


def _json(value):
    return {_NESTED: str(value)} if isinstance(value, Nested) else value


def _dump(code: str, params: Mapping) -> str:
    if not params:
        return f"{MARKER}{code}"
    return f"{MARKER}{code} " + json.dumps(
        {key: _json(value) for key, value in params.items()},
        ensure_ascii=False,
        separators=(",", ":"),
        sort_keys=True,
    )


def encode(code: str, *, limit: int | None = None, **params) -> str:
    """The stored form of message ``code`` with ``params`` (JSON values: str, int, None...).

    ``limit`` is the column's length: the longest text parameters are shortened (ending in
    "…") until the whole fits, so the JSON stays whole and readable; cutting the stored
    string itself would leave it unreadable."""
    if code not in _MESSAGES:
        raise ValueError(f"unknown message code {code!r}")
    params = dict(params)
    text = _dump(code, params)
    while limit is not None and len(text) > limit:
        texts = [k for k, v in params.items() if isinstance(v, str) and len(v) > 1]
        if not texts:
            raise ValueError(f"{code} does not fit in {limit} characters")
        longest = max(texts, key=lambda k: len(params[k]))
        value = params[longest]
        keep = max(len(value) - (len(text) - limit) - len(_ELLIPSIS), 0)
        inner = decode(value) if isinstance(value, Nested) else None
        if inner is not None:
            # Stored text inside: shortened by its own text parameters, never cut (a cut
            # one is no longer readable); the ellipsis alone when that cannot be done.
            try:
                params[longest] = Nested(encode(inner[0], limit=keep, **_unjson(inner[1])))
            except ValueError:
                params[longest] = _ELLIPSIS
        else:
            params[longest] = value[:keep] + _ELLIPSIS
        text = _dump(code, params)
    return text


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters unless it is stored text (already fitted by
    ``encode``; cutting it would break it)."""
    return text if decode(text) is not None else text[:limit]


def _unjson(params: dict) -> dict:
    """Parameters as read back, ready to be encoded again (nested ones marked again)."""
    return {
        key: Nested(value[_NESTED]) if _is_nested(value) else value
        for key, value in params.items()
    }


def _is_nested(value) -> bool:
    return isinstance(value, dict) and set(value) == {_NESTED} and isinstance(value[_NESTED], str)


def decode(stored: str | None) -> tuple[str, dict] | None:
    """(code, parameters) of stored text, or None for free text."""
    if not isinstance(stored, str):
        return None
    stored = _LEGACY.get(stored, stored)
    if not stored.startswith(MARKER):
        return None
    code, _, rest = stored[len(MARKER) :].partition(" ")
    if code not in _MESSAGES:
        return None
    if not rest:
        return code, {}
    try:
        params = json.loads(rest)
    except ValueError:
        return None
    return (code, params) if isinstance(params, dict) else None


def render(stored: str | None, locale: str | None = None) -> str:
    """The words of stored text in the current language (or ``locale``); free text as it
    is; "" for None."""
    if stored is None:
        return ""
    if locale is not None:
        with force_locale(locale):
            return render(stored)
    found = decode(stored)
    if found is None:
        # Typed text that began with the marker was stored escaped (``typed``).
        return str(stored[1:] if stored.startswith(MARKER + MARKER) else stored)
    code, params = found
    values = {
        key: render(value[_NESTED]) if _is_nested(value) else value
        for key, value in params.items()
    }
    text = _MESSAGES[code]
    try:
        if callable(text):
            return str(text(values))
        words = str(text)
        # Formatted whenever it has placeholders, so missing parameters are noticed; words
        # without any may hold a bare "%" (gettext leaves those unformatted too).
        return words % values if "%(" in words else words
    except (KeyError, TypeError, ValueError):
        # A code whose words changed their parameters since the row was written: the words
        # without them would mislead; the stored form at least says what happened.
        return str(stored)
