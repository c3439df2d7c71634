"""Start-up stays cheap: every `flask` command, script and job creates the app, so creating it
must not import what only one command or one page needs, nor compile the catalogs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Each is imported where it is used: spreadsheets (imports), PDF (settlement statements),
# images and QR codes (cards, the scan page), the card gateway's HTTP client, Alembic (`flask
# db` and the migration tests), APScheduler (`flask scheduler`), the browser driver (tests
# only), the catalog compiler (`make install`).
HEAVY_MODULES = (
    "openpyxl",
    "reportlab",
    "PIL",
    "qrcode",
    "zxingcpp",
    "playwright",
    "requests",
    "alembic",
    "flask_migrate",
    "apscheduler",
    "babel.messages.pofile",
)

_PROBE = """
import json, sys
from eldercare import create_app
app = create_app({"SECRET_KEY": "x" * 40})
with app.test_request_context("/"):
    pass
print(json.dumps(sorted(m for m in json.loads(sys.argv[1]) if m in sys.modules)))
"""


def _run(code: str, *args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env.pop("TEST_DATABASE_URL", None)
    env.update(
        PYTHONPATH=str(ROOT),
        DATABASE_URL=f"sqlite:///{tmp_path / 'startup.db'}",
        ELDERCARE_ENV="development",
    )
    return subprocess.run(  # noqa: S603 - our own interpreter and code
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_creating_the_app_imports_none_of_the_heavy_modules(tmp_path):
    result = _run(_PROBE, json.dumps(HEAVY_MODULES), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_the_openapi_document_is_built_when_first_asked_for(tmp_path):
    code = """
from eldercare import create_app
from eldercare.api import api
app = create_app({"SECRET_KEY": "x" * 40})
print(len(api.pending_documentation()))
with app.test_client() as client:
    paths = client.get("/api/v1/openapi.json").get_json()["paths"]
print(len(api.pending_documentation()), "/api/v1/me" in paths, "/api/v1/vouchers" in paths)
"""
    result = _run(code, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    before, after = result.stdout.strip().splitlines()[-2:]
    assert int(before) > 0  # nothing documented at start-up...
    assert after == "0 True True"  # ...everything once the document is read


@pytest.mark.parametrize(
    ("args", "shown"),
    [(["--help"], "Perform database migrations"), (["db", "--help"], "upgrade")],
)
def test_flask_db_still_works_though_alembic_is_loaded_only_when_used(app, args, shown):
    # The test app has already migrated its database through flask_migrate.upgrade().
    result = app.test_cli_runner().invoke(args=args)
    assert result.exit_code == 0, result.output
    assert shown in result.output


def test_a_missing_or_stale_catalog_is_reported_without_compiling_it(tmp_path):
    from eldercare.i18n import stale_catalogs

    messages = tmp_path / "zh_Hans_CN" / "LC_MESSAGES"
    messages.mkdir(parents=True)
    po = messages / "messages.po"
    po.write_text('msgid ""\nmsgstr ""\n', encoding="utf-8")
    assert stale_catalogs(tmp_path) == [po]  # no .mo at all
    mo = messages / "messages.mo"
    mo.write_bytes(b"")
    os.utime(po, (mo.stat().st_mtime + 10,) * 2)
    assert stale_catalogs(tmp_path) == [po]  # the .po was edited after the compile
    os.utime(mo, (po.stat().st_mtime + 10,) * 2)
    assert stale_catalogs(tmp_path) == []
    assert mo.read_bytes() == b""  # reported, never compiled at start
