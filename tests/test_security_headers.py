"""Security headers on every response (issue 13 item 4).

The sweep takes every GET route from ``app.url_map``, fills its arguments from the demo
city's rows (so that most pages render for real, with their ID numbers and phones), and asks
each as an anonymous visitor and as every demo account: whatever the status, the headers
are there; a signed-in user's pages and every API answer are ``no-store``; the static files
keep caching.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa

from assessment.models import Assessment, FeeRefund
from eldercare.demo import DEMO_ACCOUNTS, DEMO_PASSWORD
from eldercare.residents import Resident
from eldercare.security_headers import content_security_policy
from marketplace.models import Booking, Provider, ProviderDocument, Service
from vouchers.models import Redemption, TokenUse, Voucher
from vouchers.settlement.models import BankBatch, Statement

ROOT = Path(__file__).resolve().parents[1]

ROW_FOR_ARGUMENT = {
    "resident_id": Resident,
    "case_id": Assessment,
    "assessment_id": Assessment,
    "refund_id": FeeRefund,
    "service_id": Service,
    "document_id": ProviderDocument,
    "provider_id": Provider,
    "booking_id": Booking,
    "voucher_id": Voucher,
    "redemption_id": Redemption,
    "use_id": TokenUse,
    "batch_id": BankBatch,
    "statement_id": Statement,
}
OTHER_VALUES = {
    "code": "en",  # /lang/<code>; /r/<code> answers "unknown code", headers all the same
    "token": "not-a-token",
    "fmt": "svg",
    "month_text": "2026-01",
    "table": "districts",  # the bureau's dashboard downloads
    "name": "months",  # the bureau's report downloads
    "filename": None,  # per static folder, below
}


def _static_file(app, endpoint: str) -> str:
    folder = app.static_folder if endpoint == "static" else None
    if folder is None:
        folder = app.blueprints[endpoint.rsplit(".", 1)[0]].static_folder
    first = sorted(p for p in Path(folder).rglob("*") if p.is_file())[0]
    return first.relative_to(folder).as_posix()


def _get_urls(app, session) -> list[tuple[str, str]]:
    """(endpoint, URL) of every GET route, with real rows' ids where the route takes one."""
    first_id = {
        name: session.scalar(sa.select(model.id).order_by(model.id).limit(1)) or 1
        for name, model in ROW_FOR_ARGUMENT.items()
    }
    elder = session.scalar(sa.select(Resident.id).where(Resident.name == "王秀英"))
    first_id["resident_id"] = elder or first_id["resident_id"]
    urls = []
    with app.test_request_context():
        from flask import url_for

        for rule in app.url_map.iter_rules():
            if "GET" not in rule.methods:
                continue
            values = {}
            for name in rule.arguments:
                if name == "filename":
                    values[name] = _static_file(app, rule.endpoint)
                elif name == "fmt" and "csv" in rule.rule:
                    values[name] = "csv"
                else:
                    values[name] = first_id.get(name, OTHER_VALUES.get(name))
            urls.append((rule.endpoint, url_for(rule.endpoint, **values)))
    return urls


def _is_static(endpoint: str) -> bool:
    return endpoint == "static" or endpoint.endswith(".static")


def _check(response, endpoint: str, url: str, signed_in: bool) -> list[str]:
    problems = []
    headers = response.headers
    csp = headers.get("Content-Security-Policy", "")
    for directive in (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ):
        if directive not in csp:
            problems.append(f"CSP lacks {directive!r}")
    if "unsafe-inline" in csp or "unsafe-eval" in csp:
        problems.append("CSP allows inline code")
    expected = {
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "strict-origin-when-cross-origin",
    }
    for name, value in expected.items():
        if headers.get(name) != value:
            problems.append(f"{name}: {headers.get(name)!r}")
    if "camera=(self)" not in headers.get("Permissions-Policy", ""):
        problems.append("Permissions-Policy lacks camera=(self)")
    if "Strict-Transport-Security" in headers:
        problems.append("HSTS outside production")
    no_store = "no-store" in headers.get("Cache-Control", "")
    if _is_static(endpoint):
        if no_store:
            problems.append("a static file is no-store")
    elif (signed_in or url.startswith("/api/")) and not no_store:
        problems.append(f"Cache-Control: {headers.get('Cache-Control')!r}")
    return [f"{url} ({response.status_code}): {p}" for p in problems]


@pytest.fixture
def demo_city(app, db_session):
    result = app.test_cli_runner().invoke(args=["demo"])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "username", [None] + [account[0] for account in DEMO_ACCOUNTS], ids=lambda u: u or "anonymous"
)
def test_every_get_route_carries_the_security_headers(app, db_session, demo_city, username):
    client = app.test_client()
    if username:
        signed_in = client.post("/login", data={"username": username, "password": DEMO_PASSWORD})
        assert signed_in.status_code == 302
    urls = _get_urls(app, db_session)
    assert len(urls) > 100  # the sweep reaches the whole app, not a corner of it
    problems, shown = [], 0
    for endpoint, url in urls:
        if endpoint == "prefs.switch_language":
            continue  # sets the language cookie and redirects: asked last, below
        with client.get(url) as response:  # closes a static file's handle
            shown += response.status_code == 200
            problems += _check(response, endpoint, url, signed_in=bool(username))
    response = client.get("/lang/en")
    problems += _check(response, "prefs.switch_language", "/lang/en", signed_in=bool(username))
    assert problems == []
    assert shown >= 10  # real pages were rendered, not only refusals


def test_production_adds_hsts(app, db_session, client, monkeypatch):
    monkeypatch.setitem(app.config, "ENV_NAME", "production")
    response = client.get("/login")
    assert response.headers["Strict-Transport-Security"].startswith("max-age=31536000")


def test_signed_out_pages_and_static_files_may_be_cached(client):
    # The sign-in page shows nobody's data; CSS and scripts are the same for everyone.
    assert "no-store" not in client.get("/login").headers.get("Cache-Control", "")
    with client.get("/static/css/app.css") as response:
        assert response.status_code == 200
        assert "no-store" not in response.headers.get("Cache-Control", "")


def test_card_payments_may_send_the_form_on_to_the_gateway():
    csp = content_security_policy({"PAYMENT_GATEWAY_URL": "https://pay.example.com/v1"})
    assert "form-action 'self' https://pay.example.com" in csp.split("; ")
    assert "form-action 'self'" in content_security_policy({}).split("; ")


INLINE_CODE = [
    # <script> without src, unless it is a JSON data block (data, never run).
    (re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>"), "script"),
    (re.compile(r"<style\b"), "style element"),
    (re.compile(r"\sstyle=\""), "style attribute"),
    (re.compile(r"\son[a-z]+=[\"']"), "event handler attribute"),
    (re.compile(r"javascript:"), "javascript: URL"),
]


def test_no_template_has_inline_code_or_styles():
    """What the CSP would block in a browser, found in the source before a browser does."""
    found = []
    for template in ROOT.glob("*/**/templates/**/*.html"):
        if ".venv" in template.parts:
            continue
        text = template.read_text(encoding="utf-8")
        for pattern, what in INLINE_CODE:
            for match in pattern.finditer(text):
                found.append(f"{template.relative_to(ROOT)}: {what}: {match.group(0)}")
    assert found == []
