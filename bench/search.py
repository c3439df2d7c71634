"""The public search API at city scale, through HTTP, beside its own SQL (issue 11, goal 3).

    TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \
        .venv/bin/python bench/search.py

Seeds BENCH_SEARCH_PROVIDERS (default 10,000) certified providers spread over Shenyang's urban
area (about 30 x 30 km; two services each, some reviewed, some without hours, a few not
listed), starts gunicorn (BENCH_SEARCH_WORKERS x BENCH_SEARCH_THREADS, default one worker per
core x 1 thread: on 2 cores 2 x 1 gave p99 49 ms, 3 x 1 51 ms, 4 x 1 60 ms, 2 x 4 worse) on a
fresh database and sends BENCH_SEARCH_REQUESTS searches (default 2,000) from 8 client threads,
each with its own HTTP session, at random points (1 km, the first page of 50).

The baseline, in the same run on the same database: the SQL statements that one search request
issues (captured with a SQLAlchemy ``before_cursor_execute`` listener, one request per point),
replayed directly through the database driver by 8 threads, one transaction per request.

Before measuring, every point's answer is checked against a reference computed in Python from
the whole table (every listed service, its great-circle distance, its provider's reviews): the
same services, in the same order, with the same distances and ratings.

Prints one JSON line per figure: req/s, p50 and p99 in ms, and the ratio to the baseline.
Without TEST_DATABASE_URL it runs on a SQLite file.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from flask_migrate import upgrade  # noqa: E402

from bench.run import fresh_databases  # noqa: E402
from eldercare import create_app  # noqa: E402
from eldercare.db import db  # noqa: E402

PROVIDERS = int(os.environ.get("BENCH_SEARCH_PROVIDERS", "10000"))
REQUESTS = int(os.environ.get("BENCH_SEARCH_REQUESTS", "2000"))
WORKERS = int(os.environ.get("BENCH_SEARCH_WORKERS", str(os.cpu_count() or 2)))
THREADS = int(os.environ.get("BENCH_SEARCH_THREADS", "1"))
CLIENTS = 8
POINTS = 200  # distinct search points, reused round-robin
RADIUS_M = 1000
LIMIT = 50
# Shenyang's urban area; the points stay a little inside it so every circle is full.
AREA = (41.65, 0.27, 123.25, 0.36)
INNER = (41.70, 0.17, 123.30, 0.26)


def seed(count: int, rng: random.Random) -> None:
    """``count`` providers with two services each, in a few set-based inserts."""
    from eldercare.credit_codes import compose_credit_code
    from eldercare.residents import District, Resident
    from eldercare.timeutil import local_today
    from marketplace.models import (
        PROVIDER_TYPES,
        Booking,
        Provider,
        Review,
        Service,
        ServiceCategory,
        service_districts,
    )

    districts = db.session.execute(sa.select(District.id, District.code)).all()
    categories = db.session.execute(
        sa.select(ServiceCategory.code, ServiceCategory.provider_types)
    ).all()
    allowed = {
        t: [code for code, types in categories if t in types.split()] for t in PROVIDER_TYPES
    }
    today = local_today()
    hours = json.dumps({d: [["08:00", "18:00"]] for d in ("mon", "tue", "wed", "thu", "fri")})
    evenings = json.dumps(
        {d: [["06:00", "22:00"]] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    )
    rows = []
    for i in range(count):
        district_id, code = rng.choice(districts)
        kind = rng.choice([t for t in PROVIDER_TYPES if allowed[t]])
        beds = rng.randrange(20, 200) if kind == "care_institution" else None
        listed = rng.random() > 0.03
        rows.append(
            {
                "name": f"服务机构 {i}",
                "credit_code": compose_credit_code("52", code, f"9{i:07d}"),
                "type": kind,
                "status": "active" if listed else "suspended",
                "certified_until": today + timedelta(days=rng.randrange(1, 365)),
                "district_id": district_id,
                "address": f"沈阳市 {i} 号",
                "latitude": AREA[0] + rng.random() * AREA[1],
                "longitude": AREA[2] + rng.random() * AREA[3],
                "contact_name": "联系人",
                "contact_phone": "13800000000",
                "bank_account_name": "b",
                "bank_name": "b",
                "bank_account_number": "62148300000000",
                "star_level": rng.choice([None, 1, 2, 3, 4, 5]),
                "opening_hours_json": rng.choice([hours, evenings, None]),
                "beds_total": beds,
                "beds_free": beds // 3 if beds else None,
                "created_at": datetime.now(UTC),
            }
        )
    db.session.execute(sa.insert(Provider), rows)
    ids = db.session.execute(
        sa.select(Provider.id, Provider.type, Provider.district_id).where(
            Provider.credit_code.in_([r["credit_code"] for r in rows])
        )
    ).all()
    services = []
    for provider_id, kind, _district in ids:
        for category in rng.sample(allowed[kind], min(2, len(allowed[kind]))):
            services.append(
                {
                    "provider_id": provider_id,
                    "category_code": category,
                    "title": f"{category} {provider_id}",
                    "description": "",
                    "unit": "visit",
                    "delivery_place": "home",
                    "price_fen": rng.randrange(10, 200) * 100,
                    "capacity_per_slot": 2,
                    "active": rng.random() > 0.05,
                    "created_at": datetime.now(UTC),
                }
            )
    db.session.execute(sa.insert(Service), services)
    district_of = {provider_id: district for provider_id, _kind, district in ids}
    offered = db.session.execute(
        sa.select(Service.id, Service.provider_id, Service.price_fen).where(
            Service.provider_id.in_(list(district_of))
        )
    ).all()
    others = [d for d, _code in districts]
    links = {(sid, district_of[pid]) for sid, pid, _price in offered}
    links |= {(sid, rng.choice(others)) for sid, _pid, _price in offered if rng.random() < 0.5}
    db.session.execute(
        sa.insert(service_districts), [{"service_id": s, "district_id": d} for s, d in links]
    )

    # Reviews of completed bookings: about a third of the providers have one to five.
    resident_id = db.session.scalar(sa.select(sa.func.min(Resident.id)))
    user_id = db.session.scalar(sa.text("SELECT min(id) FROM users"))
    start = datetime(2026, 1, 5, 1, 0, tzinfo=UTC)
    bookings = []
    for sid, pid, price in offered:
        if rng.random() < 0.2:
            for _ in range(rng.randrange(1, 6)):
                bookings.append(
                    {
                        "service_id": sid,
                        "provider_id": pid,
                        "resident_id": resident_id,
                        "booked_by_user_id": user_id,
                        "slot_start": start,
                        "slot_end": start + timedelta(hours=1),
                        "status": "completed",
                        "price_fen": price,
                        "note": f"bench {rng.randrange(1, 6)}",
                        "completed_at": start + timedelta(hours=1),
                        "created_at": start,
                    }
                )
    if bookings:
        db.session.execute(sa.insert(Booking), bookings)
    db.session.execute(
        sa.insert(Review).from_select(
            ["booking_id", "provider_id", "rating", "text", "created_by_user_id", "created_at"],
            sa.select(
                Booking.id,
                Booking.provider_id,
                sa.cast(sa.func.substr(Booking.note, 7, 1), sa.Integer),
                sa.literal(""),
                Booking.booked_by_user_id,
                Booking.completed_at,
            ).where(Booking.note.like("bench %")),
        )
    )
    db.session.commit()
    if db.engine.dialect.name == "postgresql":
        with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")


def reference(points) -> list[list[tuple]]:
    """Each point's first page, computed from every listed service in Python."""
    from eldercare.timeutil import local_today
    from marketplace.geo import haversine_m
    from marketplace.models import Provider, Review, Service

    today = local_today()
    listed = db.session.execute(
        sa.select(Service.id, Provider.id, Provider.latitude, Provider.longitude)
        .join(Provider, Service.provider_id == Provider.id)
        .where(Service.active, Provider.status == "active", Provider.certified_until >= today)
    ).all()
    reviews: dict[int, list[int]] = {}
    for provider_id, rating in db.session.execute(sa.select(Review.provider_id, Review.rating)):
        reviews.setdefault(provider_id, []).append(rating)
    pages = []
    for lat, lng in points:
        near = []
        for sid, pid, plat, plng in listed:
            distance = haversine_m(lat, lng, plat, plng)
            if distance <= RADIUS_M:
                ratings = reviews.get(pid, [])
                average = round(sum(ratings) / len(ratings), 2) if ratings else None
                near.append((distance, sid, pid, average, len(ratings)))
        near.sort()
        pages.append([(s, p, round(d, 1), a, c) for d, s, p, a, c in near[:LIMIT]])
    return pages


def _page(body: dict) -> list[tuple]:
    return [
        (
            item["service"]["id"],
            item["provider"]["id"],
            item["distance_m"],
            item["rating"]["average"],
            item["rating"]["count"],
        )
        for item in body["items"]
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _run(clients: int, total: int, one) -> tuple[float, list[float]]:
    """``total`` calls of ``one(client, i)`` shared by ``clients`` threads: rate, latencies."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    counter = iter(range(total))
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work(client: int) -> None:
        try:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                start = time.perf_counter()
                one(client, i)
                latencies[client].append(time.perf_counter() - start)
        except BaseException as error:  # reported below, after every thread stopped
            errors.append(error)

    threads = [threading.Thread(target=work, args=(c,)) for c in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    if errors:
        raise errors[0]
    flat = [x for per in latencies for x in per]
    return len(flat) / seconds, flat


def _figure(name: str, rate: float, latencies: list[float], **extra) -> dict:
    line = {
        "bench": "search",
        "figure": name,
        "providers": PROVIDERS,
        "requests": len(latencies),
        "clients": CLIENTS,
        "per_s": round(rate, 1),
        "p50_ms": round(_percentile(latencies, 0.50) * 1000, 1),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 1),
    } | extra
    print(json.dumps(line), flush=True)
    return line


def capture(app, token: str, points) -> tuple[list[list[tuple]], list[dict]]:
    """The SQL each point's request issues (statement, parameters), and its answer."""
    captured: list[tuple] = []

    def listen(_conn, _cursor, statement, parameters, _context, _many):
        captured.append((statement, parameters))

    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    with app.app_context():
        engine = db.engine
    client.get("/api/v1/providers/search", query_string=_query(points[0]), headers=headers)
    sa.event.listen(engine, "before_cursor_execute", listen)
    statements, bodies = [], []
    try:
        for point in points:
            captured.clear()
            response = client.get(
                "/api/v1/providers/search", query_string=_query(point), headers=headers
            )
            assert response.status_code == 200, response.get_data(as_text=True)
            statements.append(list(captured))
            bodies.append(response.get_json())
    finally:
        sa.event.remove(engine, "before_cursor_execute", listen)
    return statements, bodies


def _query(point) -> dict:
    return {"lat": point[0], "lng": point[1], "radius_m": RADIUS_M, "limit": LIMIT}


def replay(url: str, statements: list[list[tuple]], total: int) -> tuple[float, list[float]]:
    """The captured statements, straight through the driver: one transaction a request."""
    if url.startswith("sqlite"):
        import sqlite3

        path = url.split("///", 1)[1]
        connections = [sqlite3.connect(path, check_same_thread=False) for _ in range(CLIENTS)]
    else:
        import psycopg

        conninfo = sa.engine.make_url(url).set(drivername="postgresql").render_as_string(False)
        connections = [psycopg.connect(conninfo) for _ in range(CLIENTS)]

    def one(client: int, i: int) -> None:
        conn = connections[client]
        cursor = conn.cursor()
        for statement, parameters in statements[i % len(statements)]:
            cursor.execute(statement, parameters)
            if cursor.description is not None:
                cursor.fetchall()
        conn.commit()

    try:
        for c in range(CLIENTS):
            one(c, c)
        return _run(CLIENTS, total, one)
    finally:
        for conn in connections:
            conn.close()


def serve(url: str):
    """gunicorn on a free port, started as production would start it."""
    port = _free_port()
    env = os.environ | {"DATABASE_URL": url, "PYTHONPATH": str(ROOT)}
    command = [
        str(Path(sys.executable).with_name("gunicorn")),
        "--workers", str(WORKERS),
        "--threads", str(THREADS),
        "--bind", f"127.0.0.1:{port}",
        "--log-level", "warning",
        "wsgi:app",
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env=env)  # noqa: S603 - our own command
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                requests.get(base + "/api/v1/service-categories", timeout=10)
                return process, base
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("gunicorn did not start")
    except BaseException:
        process.terminate()
        process.wait(timeout=30)
        raise


def main() -> None:
    from eldercare.accounts import User
    from eldercare.demo import build_demo
    from eldercare.tokens import issue_token

    rng = random.Random(11)
    points = [
        (INNER[0] + rng.random() * INNER[1], INNER[2] + rng.random() * INNER[3])
        for _ in range(POINTS)
    ]
    with fresh_databases() as databases:
        url = databases.new()
        process = None
        try:
            app = create_app({"SQLALCHEMY_DATABASE_URI": url})
            with app.app_context():
                upgrade()
                build_demo()
                db.session.commit()
                start = time.perf_counter()
                seed(PROVIDERS, rng)
                seeded = time.perf_counter() - start
                user = db.session.scalar(sa.select(User).order_by(User.id))
                _token, secret = issue_token(user, "bench search", ["read"])
                db.session.commit()
                expected = reference(points)
            statements, bodies = capture(app, secret, points)
            pages = [_page(b) for b in bodies]
            for point, found, page in zip(points, pages, expected, strict=True):
                assert found == page, f"at {point} the search differs from the full scan"
            digest = hashlib.sha256(json.dumps(pages).encode()).hexdigest()[:16]
            per_request = sorted({len(s) for s in statements})

            process, base = serve(url)
            sessions = [requests.Session() for _ in range(CLIENTS)]
            headers = {"Authorization": f"Bearer {secret}"}

            def search(client: int, i: int) -> None:
                response = sessions[client].get(
                    base + "/api/v1/providers/search",
                    params=_query(points[i % POINTS]),
                    headers=headers,
                    timeout=30,
                )
                assert response.status_code == 200, response.text
                if i < POINTS:
                    assert _page(response.json()) == expected[i], i

            _run(CLIENTS, CLIENTS * WORKERS * THREADS, search)  # warm every worker
            rate, latencies = _run(CLIENTS, REQUESTS, search)
            base_rate, base_latencies = replay(url, statements, REQUESTS)
            backend = url.split(":", 1)[0].split("+")[0]
            _figure(
                "search SQL replayed through the driver (baseline)",
                base_rate,
                base_latencies,
                database=backend,
                statements_per_request=per_request,
            )
            _figure(
                f"GET /api/v1/providers/search via gunicorn {WORKERS}x{THREADS}",
                rate,
                latencies,
                database=backend,
                ratio=round(rate / base_rate, 3),
                seed_s=round(seeded, 1),
                answers=digest,
            )
        finally:
            if process is not None:
                process.terminate()
                process.wait(timeout=30)


if __name__ == "__main__":
    main()
