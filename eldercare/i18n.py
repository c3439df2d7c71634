"""Languages: zh_CN by default, English on request, switchable on every page."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from flask import (
    Blueprint,
    Flask,
    current_app,
    has_request_context,
    redirect,
    request,
    session,
    url_for,
)
from flask_babel import get_locale
from flask_login import current_user

from eldercare.db import db
from eldercare.navigation import safe_next

log = logging.getLogger(__name__)
TRANSLATIONS_DIR = Path(__file__).parent / "translations"

bp = Blueprint("prefs", __name__)


def select_locale() -> str:
    if not has_request_context():  # CLI commands and jobs speak the default language
        return current_app.config["BABEL_DEFAULT_LOCALE"]
    supported = current_app.config["SUPPORTED_LOCALES"]
    chosen = session.get("lang")
    if chosen in supported:
        return chosen
    matched = request.accept_languages.best_match(supported + ["zh", "zh_Hans"])
    if matched and matched.startswith("zh"):
        return "zh_CN"
    return matched or current_app.config["BABEL_DEFAULT_LOCALE"]


def current_locale() -> str:
    return str(get_locale() or current_app.config["BABEL_DEFAULT_LOCALE"])


def stale_catalogs(directory: Path = TRANSLATIONS_DIR) -> list[Path]:
    """The .po files whose .mo is missing or older: a few stat calls, cheap enough for every
    start (compiling is the install's job: `make install`, `make test`, `make messages`)."""
    stale = []
    for po_path in sorted(directory.glob("*/LC_MESSAGES/*.po")):
        mo_path = po_path.with_suffix(".mo")
        if not mo_path.exists() or mo_path.stat().st_mtime < po_path.stat().st_mtime:
            stale.append(po_path)
    return stale


def compile_catalogs(directory: Path = TRANSLATIONS_DIR) -> list[Path]:
    """Compile every stale catalog (for the test suite and tools; the app never does it at
    start, as the compiler is slow to import and the package may be read-only)."""
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    written = []
    for po_path in stale_catalogs(directory):
        mo_path = po_path.with_suffix(".mo")
        with po_path.open("rb") as po_file:
            catalog = read_po(po_file)
        partial = mo_path.with_name(f"{mo_path.name}.{os.getpid()}.tmp")
        with partial.open("wb") as mo_file:
            write_mo(mo_file, catalog)
        os.replace(partial, mo_path)  # a reader never sees half a catalog
        written.append(mo_path)
    return written


def page_to_return_to() -> str:
    """Where the language and large-text switches bring the reader back: this page when it
    was opened (GET), else the page the form was sent from (a confirmation or a form shown
    again with its errors answers a POST, and its address may take only POSTs: a 405), when
    that page is on this site; else home."""
    if request.method in ("GET", "HEAD"):
        return request.full_path.rstrip("?")
    referrer = urlsplit(request.referrer or "")
    if referrer.netloc == request.host and referrer.path.startswith("/"):
        return safe_next(urlunsplit(("", "", referrer.path, referrer.query, "")))
    return url_for("home.index")


_CHOSEN_SIGNED_OUT = "lang_chosen_signed_out"


def carry_language_over_sign_in(user) -> None:
    """At sign-in, the account's language and this browser's meet: a language chosen in this
    browser while no one was signed in is the person's latest choice and is kept on the
    account; otherwise the account's language becomes this browser's. A language that came
    with someone else's sign-in (a shared tablet) is not this person's choice. (Pages never
    look the account up for it: an error page shown while the database is away must still
    render.)"""
    supported = current_app.config["SUPPORTED_LOCALES"]
    chosen = session.get("lang")
    if chosen in supported and session.get(_CHOSEN_SIGNED_OUT):
        user.language = chosen  # committed with the sign-in
    elif user.language in supported:
        session["lang"] = user.language
    session.pop(_CHOSEN_SIGNED_OUT, None)


@bp.get("/lang/<code>")
def switch_language(code: str):
    if code in current_app.config["SUPPORTED_LOCALES"]:
        session["lang"] = code
        if not current_user.is_authenticated:
            session[_CHOSEN_SIGNED_OUT] = True  # the next sign-in's own choice
        elif current_user.language != code:
            # Kept on the account: another browser and the mailed notices speak it too.
            current_user.language = code
            db.session.commit()
    return redirect(safe_next(request.args.get("next")))


@bp.get("/display/large-text")
def toggle_large_text():
    session["large_text"] = not session.get("large_text", False)
    return redirect(safe_next(request.args.get("next")))


def register(app: Flask) -> None:
    for po_path in stale_catalogs():
        log.warning(
            "%s is not compiled or older than its source; pages show English for its strings "
            "until `make install` (or `pybabel compile -d eldercare/translations`) is run",
            po_path,
        )
    app.register_blueprint(bp)
    app.jinja_env.globals["page_to_return_to"] = page_to_return_to
