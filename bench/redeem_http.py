"""Redemptions through HTTP, beside PostgreSQL's own rate (issue 11, goal 2).

gunicorn serves the app on a fresh database (BENCH_REDEEM_WORKERS workers, default one per
core, each with BENCH_REDEEM_THREADS threads, default 1); BENCH_REDEEM_CLIENTS client threads
(default 8), each with its own vouchers and the staff's API token, redeem through the scanner API's
four calls (scan → check-in → price → pay cash, the elder paying the co-payment in cash) for
BENCH_REDEEM_SECONDS (default 20). Then, on a scratch database of the same server,
``pgbench -N -c <clients> -j 2 -T <same seconds>`` gives the baseline.

Prints one JSON line per figure: redemptions/s (with pgbench's tps and the ratio), requests/s,
p50/p99 per request and per redemption, and the SQL statements of each call, counted
in-process for one redemption with a ``before_cursor_execute`` listener.

    TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        BENCH_REDEEM_SECONDS=5 .venv/bin/python bench/redeem_http.py
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from bench.run import _app, demo_with_vouchers, fresh_databases  # noqa: E402
from eldercare.db import db  # noqa: E402

SECONDS = float(os.environ.get("BENCH_REDEEM_SECONDS", "20"))
CLIENTS = int(os.environ.get("BENCH_REDEEM_CLIENTS", "8"))
# One worker per core: the requests are CPU-bound, and more workers than cores only queue
# inside the kernel instead (4 on 2 cores: 31.6 redemptions/s, p99 134 ms; 2: 41.5, 82 ms).
WORKERS = int(os.environ.get("BENCH_REDEEM_WORKERS", str(os.cpu_count() or 2)))
THREADS = int(os.environ.get("BENCH_REDEEM_THREADS", "1"))
# Vouchers per client: a voucher has eight codes a minute (vouchers.redemption.qr_tokens).
PER_CLIENT = int(os.environ.get("BENCH_REDEEM_VOUCHERS", "60"))
SECRET_KEY = "bench-secret-key-" + secrets.token_hex(16)


def emit(**figure) -> None:
    print(json.dumps(figure, ensure_ascii=False), flush=True)


def _seed(app, count: int):
    """The demo (a certified station with its staff and a lunch on its premises), ``count``
    eligible elders with this month's voucher, and the staff's scanner token."""
    from eldercare.accounts import User
    from eldercare.tokens import issue_token
    from marketplace import catalogue
    from marketplace.providers import provider_of

    with app.app_context():
        vouchers = demo_with_vouchers(count)
        staff = db.session.scalar(sa.select(User).where(User.username == "provider.staff"))
        meal = next(
            s
            for s in catalogue.services_of(provider_of(staff))
            if s.category_code == "meal_help" and s.active
        )
        secrets_ = [
            issue_token(staff, f"scanner {i}", ["vouchers:redeem"])[1] for i in range(CLIENTS + 1)
        ]
        db.session.commit()
        return vouchers, meal.id, meal.price_fen, secrets_


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_gunicorn(url: str, port: int) -> subprocess.Popen:
    env = os.environ | {
        "DATABASE_URL": url,
        "SECRET_KEY": SECRET_KEY,
        "PYTHONPATH": str(ROOT),
    }
    command = [
        sys.executable, "-m", "gunicorn", "wsgi:app",
        "--bind", f"127.0.0.1:{port}",
        "--workers", str(WORKERS),
        "--threads", str(THREADS),
        "--log-level", "warning",
    ]  # fmt: skip
    # Its own process group (stopped whole at the end); stdout not inherited, so a pipe
    # reading this script's output is not held open by the server.
    server = subprocess.Popen(  # noqa: S603
        command, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            # Each worker answers its first request slowly on a busy machine.
            requests.get(f"http://127.0.0.1:{port}/api/v1/openapi.json", timeout=60)
            return server
        except requests.RequestException:
            time.sleep(0.2)
    _stop(server)
    raise RuntimeError("gunicorn did not start")


def _stop(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(10)


class Client(threading.Thread):
    """One scanner: its own vouchers, the four calls of each redemption, timed."""

    def __init__(self, app, base, secret, vouchers, meal_id, price, stop_at):
        super().__init__(daemon=True)
        self.app, self.base, self.vouchers = app, base, vouchers
        self.meal_id, self.price, self.stop_at = meal_id, price, stop_at
        self.headers = {"Authorization": f"Bearer {secret}", "Accept-Language": "en"}
        self.requests: list[float] = []
        self.redemptions: list[float] = []
        self.errors: list[str] = []
        self.http = requests.Session()

    def _post(self, path, body=None):
        started = time.perf_counter()
        answer = self.http.post(self.base + path, json=body or {}, headers=self.headers, timeout=60)
        self.requests.append(time.perf_counter() - started)
        if answer.status_code not in (200, 201):
            raise RuntimeError(f"{path}: {answer.status_code} {answer.text[:200]}")
        return answer.json()

    def _codes(self):
        """(voucher, code) pairs: each voucher's eight codes of the current minute in turn."""
        from vouchers.redemption import qr_tokens

        used: set[tuple[int, int, int]] = set()
        while True:
            window = int(time.time()) // qr_tokens.WINDOW_SECONDS
            fresh = False
            for voucher_id in self.vouchers:
                for seq in range(qr_tokens.CODES_PER_MINUTE):
                    if (voucher_id, window, seq) in used:
                        continue
                    used.add((voucher_id, window, seq))
                    fresh = True
                    # The token of the window marked used, even if the minute has just
                    # turned (a token made for the new minute would be used twice).
                    minute = datetime.fromtimestamp(window * qr_tokens.WINDOW_SECONDS, tz=UTC)
                    with self.app.app_context():
                        yield qr_tokens.make_token(voucher_id, seq=seq, now=minute)
                    break
            if not fresh:
                time.sleep(0.5)  # every code of this minute used: wait for the next

    def run(self):
        codes = self._codes()
        while time.perf_counter() < self.stop_at:
            code = next(codes)
            started = time.perf_counter()
            try:
                scan = self._post("/api/v1/scans", {"code": code})
                r = self._post(
                    f"/api/v1/scans/{scan['scan_id']}/check-in", {"service_id": self.meal_id}
                )
                self._post(f"/api/v1/redemptions/{r['id']}/price", {"price_fen": self.price})
                paid = self._post(f"/api/v1/redemptions/{r['id']}/cash")
                assert paid["status"] == "redeemed", paid
            except Exception as problem:  # noqa: BLE001 - counted and shown, the run goes on
                self.errors.append(str(problem))
                continue
            self.redemptions.append(time.perf_counter() - started)


class Sampler(threading.Thread):
    """What the app's backends do, every 50 ms (pg_stat_activity): how many sit "idle in
    transaction" (a transaction open while Python works) and how many wait on a lock."""

    def __init__(self, server_url: str, database: str, stop_at: float):
        super().__init__(daemon=True)
        self.engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
        self.database, self.stop_at = database, stop_at
        self.samples: list[tuple[int, int, int]] = []

    def run(self):
        query = sa.text(
            "SELECT count(*) FILTER (WHERE state = 'idle in transaction'),"
            " count(*) FILTER (WHERE wait_event_type = 'Lock'),"
            " count(*) FILTER (WHERE state = 'active')"
            " FROM pg_stat_activity WHERE datname = :db AND pid <> pg_backend_pid()"
        )
        with self.engine.connect() as conn:
            while time.perf_counter() < self.stop_at:
                self.samples.append(tuple(conn.execute(query, {"db": self.database}).one()))
                time.sleep(0.05)
        self.engine.dispose()

    def means(self) -> dict:
        n = max(len(self.samples), 1)
        idle, waiting, active = (sum(column) / n for column in zip(*self.samples, strict=True))
        return {
            "idle_in_transaction": round(idle, 2),
            "waiting_on_locks": round(waiting, 2),
            "active": round(active, 2),
            "samples": len(self.samples),
        }


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return round(values[min(len(values) - 1, int(len(values) * p))] * 1000, 1)


def _pgbench(server_url: str, seconds: float) -> float:
    """``pgbench -N`` tps on a scratch database of the same server."""
    pgbench = shutil.which("pgbench") or next(
        iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"))), None
    )
    if pgbench is None:
        return float("nan")
    url = sa.make_url(server_url)
    name = f"eldercare_pgbench_{secrets.token_hex(4)}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    args = ["-h", url.host or "127.0.0.1", "-p", str(url.port or 5432)]
    args += ["-U", url.username or "postgres"]
    env = os.environ | ({"PGPASSWORD": url.password} if url.password else {})
    try:
        init = [pgbench, "-i", "-q", *args, name]
        subprocess.run(init, check=True, env=env, capture_output=True)  # noqa: S603
        run = subprocess.run(  # noqa: S603
            [pgbench, "-N", "-c", str(CLIENTS), "-j", "2", "-T", str(int(seconds)), *args, name],
            check=True, env=env, capture_output=True, text=True,
        )  # fmt: skip
        for line in run.stdout.splitlines():
            if line.startswith("tps"):
                return float(line.split("=")[1].split()[0])
        return float("nan")
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def count_statements(app, voucher_id, meal_id, price, secret) -> dict[str, int]:
    """The SQL statements of each of the four calls of one redemption, in-process."""
    from vouchers.redemption import qr_tokens

    client = app.test_client()
    headers = {"Authorization": f"Bearer {secret}"}
    with app.app_context():
        engine = db.engine
        code = qr_tokens.make_token(voucher_id, seq=qr_tokens.CODES_PER_MINUTE - 1)
    statements: list[str] = []

    def listener(conn, cursor, statement, *args):
        statements.append(statement)

    client.get("/api/v1/redemptions", headers=headers)  # the token's last use, once a minute
    counts = {}

    def call(name, path, body):
        statements.clear()
        answer = client.post(path, json=body, headers=headers)
        assert answer.status_code in (200, 201), answer.get_json()
        counts[name] = len(statements)
        return answer.get_json()

    sa.event.listen(engine, "before_cursor_execute", listener)
    try:
        scan = call("scan", "/api/v1/scans", {"code": code})
        r = call("check_in", f"/api/v1/scans/{scan['scan_id']}/check-in", {"service_id": meal_id})
        call("price", f"/api/v1/redemptions/{r['id']}/price", {"price_fen": price})
        call("cash", f"/api/v1/redemptions/{r['id']}/cash", {})
    finally:
        sa.event.remove(engine, "before_cursor_execute", listener)
    return counts


def main() -> None:
    server_url = os.environ.get("TEST_DATABASE_URL", "")
    if not server_url.startswith("postgresql"):
        sys.exit("bench/redeem_http.py needs TEST_DATABASE_URL=postgresql+psycopg://...")
    with fresh_databases() as databases:
        server = None
        try:
            url = databases.new()
            app = _app(url)
            app.config["SECRET_KEY"] = SECRET_KEY
            vouchers, meal_id, price, tokens = _seed(app, CLIENTS * PER_CLIENT + 1)
            statements = count_statements(app, vouchers[-1], meal_id, price, tokens[-1])
            emit(
                figure="redeem_http.statements",
                per_call=statements,
                per_redemption=sum(statements.values()),
            )
            port = _free_port()
            server = _start_gunicorn(url, port)
            stop_at = time.perf_counter() + SECONDS
            clients = [
                Client(
                    app,
                    f"http://127.0.0.1:{port}",
                    tokens[i],
                    vouchers[i * PER_CLIENT : (i + 1) * PER_CLIENT],
                    meal_id,
                    price,
                    stop_at,
                )
                for i in range(CLIENTS)
            ]
            sampler = Sampler(server_url, sa.make_url(url).database, stop_at)
            started = time.perf_counter()
            sampler.start()
            for c in clients:
                c.start()
            for c in clients:
                c.join()
            elapsed = time.perf_counter() - started
            sampler.join()
            _stop(server)
            server = None
            tps = _pgbench(server_url, SECONDS)
            per_request = [t for c in clients for t in c.requests]
            per_redemption = [t for c in clients for t in c.redemptions]
            errors = [e for c in clients for e in c.errors]
            rate = len(per_redemption) / elapsed
            emit(
                figure="redeem_http.redemptions_per_s",
                value=round(rate, 1),
                baseline="pgbench -N tps",
                baseline_value=tps,
                ratio=round(rate / tps, 4) if tps == tps and tps else None,
                goal_ratio=0.1,
                clients=CLIENTS,
                workers=WORKERS,
                threads=THREADS,
                seconds=round(elapsed, 1),
                redemptions=len(per_redemption),
                errors=len(errors),
                first_error=errors[0] if errors else None,
            )
            emit(figure="redeem_http.requests_per_s", value=round(len(per_request) / elapsed, 1))
            emit(
                figure="redeem_http.request_ms",
                p50=_pct(per_request, 0.5),
                p99=_pct(per_request, 0.99),
                goal_p99=50,
            )
            emit(
                figure="redeem_http.redemption_ms",
                p50=_pct(per_redemption, 0.5),
                p99=_pct(per_redemption, 0.99),
            )
            emit(figure="redeem_http.backends_mean", **sampler.means())
        finally:
            if server is not None:
                _stop(server)


if __name__ == "__main__":
    main()
