"""One exception hierarchy, mapped to HTTP in one place.

API clients get ``{"error": {"code", "message", "details"}}``; browsers get a friendly
page. Either way the unit of work is rolled back first, so bad input changes nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa
from flask import Flask, current_app, jsonify, render_template, request
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel.speaklater import LazyString
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from eldercare.db import db

log = logging.getLogger(__name__)


class DomainError(Exception):
    """Base of every error a user can cause; subclasses set the HTTP status and code."""

    status = 400
    code = "bad_request"
    default_message = _l("The request could not be processed.")

    def __init__(
        self, message: Any = None, *, details: dict | None = None, code: str | None = None
    ):
        self.message = message if message is not None else self.default_message
        self.details = details or {}
        if code:
            self.code = code
        super().__init__(self.message)  # stays lazy: resolved in the reader's language


class InvalidInput(DomainError):
    status = 422
    code = "invalid_input"
    default_message = _l("Some of the information entered is not valid.")


class AuthenticationRequired(DomainError):
    status = 401
    code = "authentication_required"
    default_message = _l("Please sign in first.")


class PermissionDenied(DomainError):
    status = 403
    code = "forbidden"
    default_message = _l("Your account is not allowed to do this.")


class NotFound(DomainError):
    status = 404
    code = "not_found"
    default_message = _l("This page or record does not exist, or you may not see it.")


class Conflict(DomainError):
    status = 409
    code = "conflict"
    default_message = _l("This conflicts with the current state; reload and try again.")


class TooManyRequests(DomainError):
    status = 429
    code = "too_many_requests"
    default_message = _l("Too many attempts; please wait a moment and try again.")


def leading_message(error: DomainError) -> Any:
    """What to say first about ``error``. A refusal raised with only its class's generic
    message ("some of the information entered is not valid") but a single reason in its
    details leads with that reason: the reader learns at once what to do ("a home service
    needs the phone's location"), not that something somewhere is wrong. Details that are
    codes or values, not sentences for people, are not reasons (only lazy translations are,
    as in ``eldercare.forms.field_errors``)."""
    if error.message is not type(error).default_message:
        return error.message
    reasons = list(
        dict.fromkeys(str(v) for v in (error.details or {}).values() if isinstance(v, LazyString))
    )
    return reasons[0] if len(reasons) == 1 else error.message


_HTTP_MESSAGES = {
    400: ("bad_request", _l("The request could not be understood.")),
    401: ("authentication_required", _l("Please sign in first.")),
    403: ("forbidden", _l("Your account is not allowed to do this.")),
    404: ("not_found", _l("This page or record does not exist, or you may not see it.")),
    405: ("method_not_allowed", _l("This action is not available here.")),
    413: ("payload_too_large", _l("The upload is too large.")),
    422: ("invalid_input", _l("Some of the information entered is not valid.")),
    429: ("too_many_requests", _l("Too many attempts; please wait a moment and try again.")),
}


def wants_json() -> bool:
    if request.path.startswith("/api/"):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def _plain(value: Any) -> Any:
    """Resolve lazy translations and nested containers into JSON-safe values."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [_plain(v) for v in value]
        # Two validators of one field may say the same thing (empty, and blank): once is enough.
        return list(dict.fromkeys(items)) if all(isinstance(i, str) for i in items) else items
    if value is None or isinstance(value, bool | int | float):
        return value
    return str(value)


def error_response(
    status: int, code: str, message: Any, details: dict | None = None, headers=None
):
    db.session.rollback()
    message = str(message)
    details = _plain(details or {})
    if wants_json():
        body = {"error": {"code": code, "message": message, "details": details}}
        return jsonify(body), status, headers or {}
    return (
        render_template(
            "errors/error.html", status=status, code=code, message=message, details=details
        ),
        status,
        headers or {},
    )


def _handle_domain_error(error: DomainError):
    return error_response(error.status, error.code, leading_message(error), error.details)


def _handle_csrf_error(error: CSRFError):
    return error_response(
        400,
        "csrf_failed",
        _("This form has expired or did not come from this site. Reload the page and try again."),
    )


def _handle_http_exception(error: HTTPException):
    status = error.code or 500
    code, message = _HTTP_MESSAGES.get(status, ("error", _l("Something went wrong.")))
    details = {}
    data = getattr(error, "data", None)  # flask-smorest puts schema errors here
    if isinstance(data, dict) and "messages" in data:
        details = data["messages"]
    # Keep the headers the exception carries (Allow on a 405, WWW-Authenticate on a 401,
    # Retry-After on a 429...): only the body and its Content-Type are ours.
    headers = [(k, v) for k, v in error.get_headers() if k.lower() != "content-type"]
    return error_response(status, code, message, details, headers)


def connection_lost(error: BaseException | None) -> bool:
    """Whether ``error`` is the database connection dropping (a restart, a failover, the
    server process killed): SQLAlchemy has then invalidated the connection, the server rolled
    the transaction back, and the next request gets a fresh connection (pool_pre_ping)."""
    return isinstance(error, sa.exc.DBAPIError) and error.connection_invalidated


def _database_unavailable():
    return current_app.make_response(
        error_response(
            503,
            "database_unavailable",
            _(
                "The database could not be reached, so nothing was saved. "
                "Please try again in a moment."
            ),
            headers={"Retry-After": "5"},
        )
    )


def _handle_unexpected(error: Exception):
    if isinstance(error, HTTPException):
        return _handle_http_exception(error)
    if connection_lost(error):
        log.warning("database connection lost on %s %s: %s", request.method, request.path, error)
        return _database_unavailable()
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(
        500,
        "internal_error",
        _("Something went wrong on our side. Nothing was changed; please try again later."),
    )


def _commit_unit_of_work(response):
    """A request that returned normally commits; every error path has rolled back already."""
    try:
        db.session.commit()
    except sa.exc.DBAPIError as error:
        if not connection_lost(error):
            raise
        # Raised here, after the view, it would bypass the error handlers (a bare 500).
        log.warning("database connection lost committing %s %s", request.method, request.path)
        return _database_unavailable()
    return response


def register(app: Flask) -> None:
    app.register_error_handler(DomainError, _handle_domain_error)
    app.register_error_handler(CSRFError, _handle_csrf_error)
    app.register_error_handler(HTTPException, _handle_http_exception)
    app.register_error_handler(Exception, _handle_unexpected)
    app.after_request(_commit_unit_of_work)
