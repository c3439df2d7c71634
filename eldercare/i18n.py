"""Languages: zh_CN by default, English on request, switchable on every page."""

from __future__ import annotations

import logging
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from flask import Blueprint, Flask, current_app, has_request_context, redirect, request, session
from flask_babel import get_locale

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


def compile_catalogs(directory: Path = TRANSLATIONS_DIR) -> list[Path]:
    """Compile every .po whose .mo is missing or older, so no manual step is ever needed."""
    written = []
    for po_path in directory.glob("*/LC_MESSAGES/*.po"):
        mo_path = po_path.with_suffix(".mo")
        if mo_path.exists() and mo_path.stat().st_mtime >= po_path.stat().st_mtime:
            continue
        with po_path.open("rb") as po_file:
            catalog = read_po(po_file)
        try:
            with mo_path.open("wb") as mo_file:
                write_mo(mo_file, catalog)
        except OSError:
            log.warning("cannot write %s; English will be shown until it is compiled", mo_path)
            continue
        written.append(mo_path)
    return written


@bp.get("/lang/<code>")
def switch_language(code: str):
    if code in current_app.config["SUPPORTED_LOCALES"]:
        session["lang"] = code
    return redirect(safe_next(request.args.get("next")))


@bp.get("/display/large-text")
def toggle_large_text():
    session["large_text"] = not session.get("large_text", False)
    return redirect(safe_next(request.args.get("next")))


def register(app: Flask) -> None:
    compile_catalogs()
    app.register_blueprint(bp)
