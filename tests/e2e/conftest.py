"""Browser fixtures: one live server and one Chromium per run, a fresh context per test.

The live server runs the real app on a migrated SQLite file holding the demo city, and
commits for real (not the rolled-back ``db_session`` of the unit tests), because the
browser's requests arrive on the server's own threads.

Chromium is Debian's (``/usr/bin/chromium``); ``playwright install`` needs the internet,
which these machines do not have. Without Chromium the tests skip on a workstation and
fail in CI (``CI=true``), so a broken CI image cannot pass by skipping them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask_migrate import upgrade
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wsgi import FileWrapper

from eldercare import create_app
from eldercare.db import db, unit_of_work
from eldercare.demo import build_demo
from tests.e2e.helpers import watch_csp

E2E_DIR = Path(__file__).parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
PHONE = {"width": 375, "height": 812}
DEFAULT_LOCALE = "zh-CN"  # the people this platform serves; tests that need English say so


def pytest_collection_modifyitems(config, items):
    for item in items:
        if Path(item.path).is_relative_to(E2E_DIR):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    if not os.path.exists(CHROMIUM):
        message = f"{CHROMIUM} is missing; install Debian's chromium (scripts/system-deps.sh)"
        if os.environ.get("CI") == "true":
            pytest.fail(message + " - CI must run the browser tests, not skip them")
        pytest.skip(message)
    return CHROMIUM


class _QuietHandler(WSGIRequestHandler):
    """No access log: a failing test's captured output should show what matters."""

    def log_request(self, *args, **kwargs):
        pass


def _files_read_whole(app):
    """Werkzeug's server closes a response only after reading what is left of the request;
    when the browser has reset the connection (a page left before its favicon arrived), that
    read raises and the close is skipped. A static file's handle then leaks (also behind a 304:
    the file was opened to answer the conditional request), and the warning
    (an error under filterwarnings) fails whichever test is running when it is collected.
    Files are small here: read whole and closed before the server writes anything."""

    def wrapped(environ, start_response):
        iterable = app(environ, start_response)
        # A static file's answer: its FileWrapper, or (a 304 to the browser's conditional
        # request for a cached favicon) an iterator whose close() closes the file it opened.
        static = "/static/" in environ.get("PATH_INFO", "")  # the app's and blueprints'
        if not static and not isinstance(iterable, FileWrapper):
            return iterable
        try:
            return [b"".join(iterable)]
        finally:
            if hasattr(iterable, "close"):
                iterable.close()

    return wrapped


@pytest.fixture(scope="session")
def live_server_app(chromium_executable, tmp_path_factory):
    """The app the live server runs, for tests that prepare data in its database."""
    database = tmp_path_factory.mktemp("e2e-db") / "e2e.db"
    app = create_app(
        {
            "TESTING": False,
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{database}",
            "SECRET_KEY": "e2e-test-secret-key-long-enough-for-any-check-0000",
            "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",
            # The demo's providers carry their documents: in the run's directory.
            "DOCUMENT_STORE": str(tmp_path_factory.mktemp("e2e-documents")),
        }
    )
    with app.app_context():
        upgrade()
        with unit_of_work():
            build_demo()
        db.session.remove()
    yield app
    with app.app_context():
        db.engine.dispose()


@pytest.fixture(scope="session")
def live_server(live_server_app) -> Iterator[str]:
    server = make_server(
        "127.0.0.1",
        0,
        _files_read_whole(live_server_app),
        threaded=True,
        request_handler=_QuietHandler,
    )
    thread = threading.Thread(target=server.serve_forever, name="e2e-live-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture(scope="session")
def playwright(chromium_executable) -> Iterator[Playwright]:
    """One Playwright per run (a second sync one cannot start while the first runs)."""
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="session")
def browser(playwright, chromium_executable) -> Iterator[Browser]:
    browser = playwright.chromium.launch(
        executable_path=chromium_executable, headless=True, args=CHROMIUM_ARGS
    )
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture
def csp_violations() -> list[str]:
    """The CSP violations seen by every page this test opened: any fails the test at its
    end, so every browser test also checks that the policy leaves its pages' scripts and
    styles alone."""
    return []


@pytest.fixture
def new_page(browser, live_server, csp_violations) -> Iterator[Callable[..., Page]]:
    """Open a page in a fresh context (own cookies): ``new_page(locale="en")``."""
    contexts: list[BrowserContext] = []

    def _new_page(locale: str = DEFAULT_LOCALE, viewport: dict | None = None) -> Page:
        context = browser.new_context(
            base_url=live_server, locale=locale, viewport=viewport or PHONE
        )
        context.set_default_timeout(10_000)
        watch_csp(context, csp_violations)
        contexts.append(context)
        return context.new_page()

    yield _new_page
    for context in contexts:
        context.close()
    assert csp_violations == [], "the Content-Security-Policy refused parts of a page"


@pytest.fixture
def page(new_page) -> Page:
    """A phone-sized page (375 x 812) in a fresh context, browser locale zh-CN."""
    return new_page()
