"""Risky actions ask once more, on the server: the first POST changes nothing.

A view calls ``require(...)`` after it has read and checked the form and before it acts.
Without ``confirm=1`` in the form, ``require`` raises ``ConfirmationNeeded``; its handler
rolls the unit of work back and answers a page that states the consequence in words (for
money the amount again, with what is left after), with a button that posts the same fields
once more plus ``confirm=1`` and the CSRF token, and a link back. Only that second POST acts.

Where to ask: after the form is read and the service's own checks have run, so bad input
gets its message first and is never "confirmed". For a service whose every effect is in this
database session, the view may call it and then ``require``: the handler's rollback undoes
it, and the page can show the balances after (a district allocation). A service that reaches
outside the session (a reversal commits and asks the gateway for a refund) must be asked
before it is called, after its check function (``check_reversal``).

Done on the server, not with a script's ``confirm()``: it works on an elder's phone without
JavaScript and under the Content-Security-Policy (no inline script), and an auditor sees the
same page a clerk saw. The API is not asked: a machine confirms by calling.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flask import Flask, render_template, request

from eldercare.db import db

CONFIRM_FIELD = "confirm"
# Not repeated as hidden fields: the CSRF token is made afresh for the page, and a file
# cannot be put back into a form by the server (an upload's confirmation names the file).
_NOT_REPEATED = frozenset({"csrf_token", CONFIRM_FIELD})


@dataclass
class Question:
    """What the confirmation page says. ``consequences`` are sentences in words; ``facts``
    are (label, value) pairs shown as a list (the amount, the district, the balance after);
    ``back`` is where "go back" leads (the page the form was on). ``secrets`` are fields
    never written into the page (a PIN): (name, label) pairs the person types again there."""

    title: Any
    consequences: list[Any]
    button: Any
    back: str
    facts: list[tuple[Any, Any]] = field(default_factory=list)
    danger: bool = True
    secrets: list[tuple[str, Any]] = field(default_factory=list)


class ConfirmationNeeded(Exception):  # noqa: N818 (a request for a page, not an error)
    def __init__(self, question: Question):
        super().__init__(str(question.title))
        self.question = question


def confirmed() -> bool:
    return request.form.get(CONFIRM_FIELD) == "1"


def require(question: Question) -> None:
    """Return when the form was confirmed; otherwise stop the request with the question."""
    if not confirmed():
        raise ConfirmationNeeded(question)


def repeated_fields(secrets=()) -> list[tuple[str, str]]:
    """The posted fields to send again, in order, a field given twice (checkboxes) twice;
    not the ``secrets`` (names), which the page asks for again rather than keep."""
    left_out = _NOT_REPEATED | {name for name, _ in secrets}
    return [(k, v) for k, v in request.form.items(multi=True) if k not in left_out]


def _ask(error: ConfirmationNeeded):
    db.session.rollback()  # nothing the view may have flushed before asking survives
    action = request.full_path if request.query_string else request.path
    return render_template(
        "confirm.html",
        question=error.question,
        action=action,
        fields=repeated_fields(error.question.secrets),
    )


def register(app: Flask) -> None:
    app.register_error_handler(ConfirmationNeeded, _ask)
