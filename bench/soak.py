"""Soak: mixed traffic against gunicorn on PostgreSQL for a set time (issue 13).

gunicorn serves the app (as ``bench/redeem_http.py`` starts it) on a fresh database holding the
demo city and BENCH_SOAK_ELDERS more elders with this month's voucher. For BENCH_SOAK_MINUTES
(default 2) these clients run at once, each in its own thread:

- scanners (BENCH_SOAK_SCANNERS, default 4): scan → check-in → price → pay cash, the four calls of
  a redemption through the scanner API, each with its own vouchers;
- searchers (2): the public search page and the search API, at random points of the city;
- an elder: signs in through the form and reads the voucher page, the QR and the redemptions;
- a bureau reader: settlement statements, the pool, the bureau's redemptions (API).

Then, in process: the ledger check (every sub-ledger equal to its account) and the month's
reconciliation against the gateway and the bank. It prints one JSON line per figure and exits
non-zero if any answer was a 5xx or the books or the reconciliation are not green.

    TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        BENCH_SOAK_MINUTES=1 .venv/bin/python bench/soak.py
"""

from __future__ import annotations

import os
import random
import re
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from bench.redeem_http import (  # noqa: E402
    SECRET_KEY,
    Client,
    _free_port,
    _pct,
    _seed,
    _start_gunicorn,
    _stop,
    emit,
)
from bench.run import _app, fresh_databases  # noqa: E402
from eldercare.db import db  # noqa: E402

MINUTES = float(os.environ.get("BENCH_SOAK_MINUTES", "2"))
SCANNERS = int(os.environ.get("BENCH_SOAK_SCANNERS", "4"))
# Enough vouchers that none runs out in the run (a used-up voucher refuses the price: 409).
PER_SCANNER = int(os.environ.get("BENCH_SOAK_VOUCHERS", "250"))
# Shenyang's centre; searches fall within about 10 km of it.
CENTRE = (41.7968, 123.4290)


class Reader(threading.Thread):
    """A client that repeats a list of GETs until the end, counting every status."""

    def __init__(self, base: str, stop_at: float, seed: int):
        super().__init__(daemon=True)
        self.base, self.stop_at = base, stop_at
        self.random = random.Random(seed)  # noqa: S311 - traffic shape, not security
        self.http = requests.Session()
        self.http.headers["Accept-Language"] = "zh-CN"
        self.statuses: Counter[int] = Counter()
        self.times: list[float] = []
        self.server_errors: list[str] = []
        self.refused: Counter[str] = Counter()  # "status path" of each answer other than 2xx

    def get(self, path: str, **kwargs) -> requests.Response:
        started = time.perf_counter()
        answer = self.http.get(self.base + path, timeout=60, **kwargs)
        self.times.append(time.perf_counter() - started)
        self.statuses[answer.status_code] += 1
        if answer.status_code >= 300:
            self.refused[f"{answer.status_code} {path.split('?')[0]}"] += 1
        if answer.status_code >= 500:
            self.server_errors.append(f"GET {path}: {answer.status_code}")
        return answer

    def paths(self) -> list[str]:
        raise NotImplementedError

    def run(self):
        while time.perf_counter() < self.stop_at:
            for path in self.paths():
                self.get(path)


class Searcher(Reader):
    def __init__(self, base, stop_at, seed, token):
        super().__init__(base, stop_at, seed)
        self.token = token

    def paths(self):
        lat = CENTRE[0] + self.random.uniform(-0.09, 0.09)
        lng = CENTRE[1] + self.random.uniform(-0.12, 0.12)
        self.http.headers["Authorization"] = f"Bearer {self.token}"
        return [
            f"/marketplace/?near=here&lat={lat:.5f}&lng={lng:.5f}",
            f"/api/v1/providers/search?lat={lat:.5f}&lng={lng:.5f}&radius_m=3000",
            f"/api/v1/providers/search?lat={lat:.5f}&lng={lng:.5f}&sort=price&accepts_vouchers=true",
        ]


class Elder(Reader):
    """Signs in as the demo's 王秀英 through the form, then reads what her phone shows."""

    def __init__(self, base, stop_at, seed, resident_id):
        super().__init__(base, stop_at, seed)
        self.resident_id = resident_id

    def sign_in(self):
        form = self.get("/login").text
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', form)
        answer = self.http.post(
            self.base + "/login",
            data={
                "username": "elder.wang",
                "password": "demo-pass-2025",
                "csrf_token": token.group(1) if token else "",
            },
            allow_redirects=False,
            timeout=60,
        )
        self.statuses[answer.status_code] += 1
        if answer.status_code != 302:
            raise RuntimeError(f"the elder could not sign in: {answer.status_code}")

    def paths(self):
        return [
            "/vouchers/",
            f"/vouchers/elder/{self.resident_id}",
            f"/vouchers/elder/{self.resident_id}/qr.json",
            "/messages",
        ]

    def run(self):
        self.sign_in()
        super().run()


class BureauReader(Reader):
    def __init__(self, base, stop_at, seed, token, month):
        super().__init__(base, stop_at, seed)
        self.http.headers["Authorization"] = f"Bearer {token}"
        self.month = month

    def paths(self):
        return [
            f"/api/v1/settlement/statements?month={self.month}",
            "/api/v1/settlement/reconciliations",
            "/api/v1/pool",
            "/api/v1/bureau/redemptions?limit=50",
        ]


def _reader_tokens(app) -> tuple[str, str, int, str]:
    """A read token for the searchers, a bureau officer's token, 王秀英's resident id and the
    month the demo settled."""
    from eldercare.accounts import User
    from eldercare.tokens import issue_token
    from vouchers.settlement.models import ReconciliationRun

    with app.app_context():
        officer = db.session.scalar(sa.select(User).where(User.username == "bureau.officer"))
        elder = db.session.scalar(sa.select(User).where(User.username == "elder.wang"))
        search = issue_token(officer, "soak search", ["read"])[1]
        bureau = issue_token(officer, "soak bureau", ["read", "vouchers:read"])[1]
        settled = db.session.scalar(sa.select(sa.func.max(ReconciliationRun.month)))
        db.session.commit()
        return search, bureau, elder.resident_id, f"{settled:%Y-%m}"


def _books_and_reconciliation(app) -> tuple[bool, dict]:
    """The ledger check and the last settled month's reconciliation, after the traffic."""
    from vouchers.pool import ledger_checks
    from vouchers.settlement.models import ReconciliationRun
    from vouchers.settlement.reconcile import reconcile

    with app.app_context():
        check = ledger_checks.run_check()
        # The demo reconciles the last month it settles; the soak reconciles it again.
        month = db.session.scalar(sa.select(sa.func.max(ReconciliationRun.month)))
        run = reconcile.reconcile_month(month or reconcile.previous_month())
        db.session.commit()
        open_exceptions = reconcile.open_exceptions(run.month)
        green = check.ok and open_exceptions == 0
        return green, {
            "ledger_ok": check.ok,
            "journal_lines": check.journal_lines,
            "reconciled_month": run.month.isoformat(),
            "open_exceptions": open_exceptions,
        }


def _failure_kind(error: str) -> str:
    """"path: status {json}" of a scanner's failed call -> "path status code"."""
    path = re.sub(r"/\d+", "/<id>", error.split(":")[0])
    status = re.search(r": (\d{3}) ", error)
    code = re.search(r'"code": ?"([a-z_]+)"', error)
    return f"{path} {status.group(1) if status else '?'} {code.group(1) if code else ''}".strip()


def main() -> None:
    server_url = os.environ.get("TEST_DATABASE_URL", "")
    if not server_url.startswith("postgresql"):
        sys.exit("bench/soak.py needs TEST_DATABASE_URL=postgresql+psycopg://...")
    with fresh_databases() as databases:
        server = None
        try:
            url = databases.new()
            app = _app(url)
            app.config["SECRET_KEY"] = SECRET_KEY
            vouchers, meal_id, price, scanner_tokens = _seed(app, SCANNERS * PER_SCANNER)
            search_token, bureau_token, resident_id, settled = _reader_tokens(app)
            port = _free_port()
            server = _start_gunicorn(url, port)
            base = f"http://127.0.0.1:{port}"
            stop_at = time.perf_counter() + MINUTES * 60
            scanners = [
                Client(
                    app,
                    base,
                    scanner_tokens[i],
                    vouchers[i * PER_SCANNER : (i + 1) * PER_SCANNER],
                    meal_id,
                    price,
                    stop_at,
                )
                for i in range(SCANNERS)
            ]
            readers = [
                Searcher(base, stop_at, 1, search_token),
                Searcher(base, stop_at, 2, search_token),
                Elder(base, stop_at, 3, resident_id),
                BureauReader(base, stop_at, 4, bureau_token, settled),
            ]
            started = time.perf_counter()
            for client in [*scanners, *readers]:
                client.start()
            for client in [*scanners, *readers]:
                client.join()
            elapsed = time.perf_counter() - started
            _stop(server)
            server = None

            green, books = _books_and_reconciliation(app)
            statuses = sum((r.statuses for r in readers), Counter())
            # A scanner's failed call is kept as "path: status text"; a 5xx shows as " 5xx ".
            scanner_errors = [e for c in scanners for e in c.errors]
            server_errors = [e for r in readers for e in r.server_errors] + [
                e for e in scanner_errors if re.search(r": 5\d\d ", e)
            ]
            redemptions = [t for c in scanners for t in c.redemptions]
            reads = [t for r in readers for t in r.times]
            scanner_requests = [t for c in scanners for t in c.requests]
            emit(
                figure="soak.traffic",
                minutes=round(elapsed / 60, 2),
                requests=len(reads) + len(scanner_requests),
                redemptions=len(redemptions),
                redemptions_per_s=round(len(redemptions) / elapsed, 1),
                reads=len(reads),
                statuses={str(k): v for k, v in sorted(statuses.items())},
                not_2xx=dict(sum((r.refused for r in readers), Counter())),
                scanner_failures=len(scanner_errors),
                scanner_failure_kinds=dict(Counter(_failure_kind(e) for e in scanner_errors)),
                first_scanner_failure=scanner_errors[0][:300] if scanner_errors else None,
                server_errors=len(server_errors),
                first_server_error=server_errors[0] if server_errors else None,
            )
            emit(figure="soak.read_ms", p50=_pct(reads, 0.5), p99=_pct(reads, 0.99))
            emit(
                figure="soak.redemption_ms", p50=_pct(redemptions, 0.5), p99=_pct(redemptions, 0.99)
            )
            emit(figure="soak.books", green=green, **books)
            if server_errors or not green or scanner_errors:
                sys.exit(1)
        finally:
            if server is not None:
                _stop(server)


if __name__ == "__main__":
    main()
