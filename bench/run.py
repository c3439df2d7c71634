"""Benchmarks a person can rerun: `make bench` (add TEST_DATABASE_URL for PostgreSQL).

Each figure is printed beside its baseline from the same run on the same database,
so the ratio is what to read, not the absolute number.

audit.*        appends from 8 threads, sealing and verifying: bench/audit.py (JSON lines)
login          a full sign-in request (scrypt, throttle row, audit row)
               vs. GET of the sign-in page (baseline)
search         marketplace search within 1 km of random points in Shenyang, among PROVIDERS
               providers (bounding box in SQL, then great-circle distance) vs. loading every
               listed service and measuring each distance in Python (baseline);
               bench/search.py measures the search API through gunicorn beside its own SQL
import         residents from a CSV through `import_file` (parse, validate every row, a
               savepoint per row, audit) vs. the same residents registered one by one
               with `register_resident` in one transaction (baseline)
issue          `issue_monthly` for ISSUE_N eligible elders (set-based: the eligible set staged,
               one INSERT … SELECT, journal entry and bulk audit rows per district batch),
               vs. the same number of Voucher rows inserted plainly in batches of 200 (baseline);
               bench/issuance.py measures it at scale beside a bare COPY
ledger.verify  journal lines per second that `verify_ledger` reconciles after the issue run
ledger.post    hot accounts under 8 threads beside pgbench: bench/ledger.py
redeem         REDEEM_N full cash redemptions (rotating QR token made and consumed, check-in,
               price, hold and capture with their ledger entries and audit rows), one commit
               each as a request would, vs. a plain Redemption insert + commit per row (baseline);
               bench/redeem_http.py measures whole redemptions through gunicorn beside pgbench
settlement.*   a month's settlement run, approvals and reconciliation beside a bare GROUP BY
               over the same redemptions: bench/settlement.py (PostgreSQL)
pii.*          personal data at rest at BENCH_PII_N residents: `flask pii rotate`'s work beside
               an UPDATE of the same two columns, look-up by ID number (keyed hash) beside
               look-up by primary key, migration 0020 beside a COPY: bench/pii.py (PostgreSQL)
anomalies.*    every anomaly rule over a month of BENCH_SETTLE_N redemptions (each rule timed,
               then the batch with its flags) beside a bare GROUP BY, and one capture's
               statements and time: bench/anomalies.py (PostgreSQL, run on its own)
insight.*      a month of redemptions exported as XLSX beside a COPY of the same rows (time,
               peak RSS growth, tracemalloc peak; 10x the rows must not mean 10x the memory),
               and the dashboard's figures beside a plain GROUP BY: bench/insight_export.py
               (PostgreSQL)
soak.*         mixed traffic (search, the elder's pages, scan and redeem, settlement reads)
               through gunicorn for BENCH_SOAK_MINUTES, then the books and the reconciliation:
               bench/soak.py (PostgreSQL)
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa  # noqa: E402
from flask_migrate import upgrade  # noqa: E402

from eldercare import create_app  # noqa: E402
from eldercare.db import db  # noqa: E402
from eldercare.demo import DEMO_PASSWORD, build_demo  # noqa: E402
from eldercare.timeutil import local_today, now_utc  # noqa: E402

N = int(os.environ.get("BENCH_N", "2000"))
ISSUE_N = max(N // 2, 1)  # issuing is the slowest figure per row: half of N keeps the run short
REDEEM_N = max(N // 4, 1)


class Databases:
    """Fresh databases for the run: SQLite files, or PostgreSQL databases dropped at the end."""

    def __init__(self, tmp: str):
        self.tmp, self.server, self.created = tmp, os.environ.get("TEST_DATABASE_URL"), []

    @property
    def postgres(self) -> bool:
        return bool(self.server) and self.server.startswith("postgresql")

    def new(self) -> str:
        name = f"eldercare_bench_{secrets.token_hex(4)}"
        if not self.postgres:
            return f"sqlite:///{self.tmp}/{name}.db"
        with sa.create_engine(self.server, isolation_level="AUTOCOMMIT").connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return sa.make_url(self.server).set(database=name).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        if not self.created:
            return
        with sa.create_engine(self.server, isolation_level="AUTOCOMMIT").connect() as conn:
            for name in self.created:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def fresh_databases(keep: bool = False) -> Iterator[Databases]:
    """A benchmark's own databases, dropped when it ends however it ends; with ``keep`` left
    standing instead and named in a JSON line (to EXPLAIN their queries afterwards)."""
    with tempfile.TemporaryDirectory() as tmp:
        databases = Databases(tmp)
        try:
            yield databases
        finally:
            if keep:
                print(json.dumps({"kept": databases.created}), flush=True)
            else:
                databases.drop_all()


def postgres_bench(figure: str, *runs: Callable[[str], object], keep: bool = False) -> None:
    """The main() of a benchmark whose baselines need PostgreSQL: each of ``runs``, in turn, on
    a fresh database of its own (given its URL); without TEST_DATABASE_URL one JSON line says
    ``figure`` was skipped."""
    if not os.environ.get("TEST_DATABASE_URL", "").startswith("postgresql"):
        print(json.dumps({"figure": figure, "skipped": "needs TEST_DATABASE_URL"}))
        return
    with fresh_databases(keep) as databases:
        for run in runs:
            run(databases.new())


def beside_baseline(seconds: float, baseline: float, peak_rss_mb: float) -> dict:
    """A step's figures beside its baseline's from the same run: the ratio is what to read."""
    return {
        "seconds": round(seconds, 3),
        "baseline_seconds": round(baseline, 3),
        "ratio": round(seconds / baseline, 2),
        "peak_rss_mb": round(peak_rss_mb, 1),
    }


def _app(url: str):
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "WTF_CSRF_ENABLED": False})
    with app.app_context():
        upgrade()
    return app


def _rate(label: str, count: int, seconds: float, baseline: float | None = None) -> float:
    per_second = count / seconds
    extra = f"   ({per_second / baseline:.2f}x baseline)" if baseline else ""
    print(f"  {label:<42} {per_second:>10,.0f} /s{extra}")
    return per_second


def _resident_rows(count: int, start: int) -> list[dict]:
    from datetime import date, timedelta

    from eldercare.residents import compose_resident_id

    rows = []
    for i in range(count):
        birth = date(1930, 1, 1) + timedelta(days=(start + i) // 1000)
        rows.append(
            {
                "id_number": compose_resident_id("210102", birth, (start + i) % 1000),
                "name": "测试居民",
                "district": "210102",
                "street": "南湖街道",
                "address": f"三好街 {i} 号",
                "phone": "13800000000",
                "latitude": "41.7741",
                "longitude": "123.4356",
            }
        )
    return rows


def bench_import(app) -> None:
    import csv
    import io

    from assessment.importing import import_file
    from eldercare.register import register_resident
    from eldercare.residents import District

    with app.app_context():
        heping = db.session.scalar(sa.select(District).where(District.code == "210102"))
        start = time.perf_counter()
        for row in _resident_rows(N, 0):
            register_resident(
                id_number=row["id_number"],
                name=row["name"],
                district=heping,
                street=row["street"],
                address=row["address"],
                phone=row["phone"],
                latitude=float(row["latitude"]),
                longitude=float(row["longitude"]),
            )
        db.session.commit()
        baseline = _rate("register_resident x N (baseline)", N, time.perf_counter() - start)

        buffer = io.StringIO()
        rows = _resident_rows(N, N)
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
        data = buffer.getvalue().encode("utf-8")
        start = time.perf_counter()
        report = import_file(data, "residents.csv", "residents")
        db.session.commit()
        assert report.imported and report.created == N, report
        _rate("import_file residents.csv", N, time.perf_counter() - start, baseline)


PROVIDERS = int(os.environ.get("BENCH_PROVIDERS", "2000"))


def _seed_providers(count: int) -> None:
    """Providers spread over Shenyang's urban area (about 30 x 30 km), two services each.
    Inserted directly: the benchmark measures the search, not the certification."""
    import random
    from datetime import timedelta

    from eldercare.credit_codes import compose_credit_code
    from eldercare.residents import District
    from eldercare.timeutil import local_today
    from marketplace.models import Provider, Service

    rng = random.Random(42)
    heping = db.session.scalar(sa.select(District).where(District.code == "210102"))
    until = local_today() + timedelta(days=300)
    for i in range(count):
        provider = Provider(
            name=f"服务机构 {i}",
            credit_code=compose_credit_code("52", "210102", f"{i:08d}"),
            type="community_station",
            status="active",
            certified_until=until,
            district_id=heping.id,
            address="x",
            latitude=41.65 + rng.random() * 0.27,
            longitude=123.25 + rng.random() * 0.36,
            contact_name="c",
            contact_phone="13800000000",
            bank_account_name="b",
            bank_name="b",
            bank_account_number="62148300000000",
        )
        db.session.add(provider)
        db.session.flush()
        for category in ("meal_help", "day_care"):
            db.session.add(
                Service(
                    provider_id=provider.id,
                    category_code=category,
                    title="t",
                    unit="visit",
                    price_fen=1000 + i % 50 * 100,
                    delivery_place="home",
                )
            )
    db.session.commit()


def bench_search(app) -> None:
    import random

    from marketplace.geo import haversine_m
    from marketplace.models import Provider, Service
    from marketplace.search import search_services

    with app.app_context():
        _seed_providers(PROVIDERS)
        rng = random.Random(7)
        points = [(41.70 + rng.random() * 0.17, 123.30 + rng.random() * 0.26) for _ in range(200)]

        start = time.perf_counter()
        naive_counts = []
        for lat, lng in points:
            rows = db.session.execute(
                sa.select(Service.id, Provider.latitude, Provider.longitude)
                .join(Provider, Service.provider_id == Provider.id)
                .where(Provider.status == "active", Service.active.is_(True))
            ).all()
            naive_counts.append(
                sum(1 for _, plat, plng in rows if haversine_m(lat, lng, plat, plng) <= 1000)
            )
        baseline = _rate(
            f"full scan of {PROVIDERS} providers (baseline)",
            len(points),
            time.perf_counter() - start,
        )

        start = time.perf_counter()
        counts = [
            len(search_services(lat=lat, lng=lng, radius_m=1000, limit=200)) for lat, lng in points
        ]
        _rate("search_services within 1 km", len(points), time.perf_counter() - start, baseline)
        assert counts == naive_counts, "the search must find exactly what the full scan finds"
        db.session.remove()


def bench_login(app) -> None:
    client = app.test_client()
    rounds = max(N // 20, 20)
    start = time.perf_counter()
    for _ in range(rounds):
        assert client.get("/login").status_code == 200
    baseline = _rate("GET /login (baseline)", rounds, time.perf_counter() - start)
    start = time.perf_counter()
    for _ in range(rounds):
        response = client.post("/login", data={"username": "auditor", "password": DEMO_PASSWORD})
        assert response.status_code == 302
        client.post("/logout")
    _rate("POST /login + logout (scrypt)", rounds, time.perf_counter() - start, baseline)


def _seed_elders(count: int) -> list[int]:
    """``count`` eligible elders (moderate, approved today, aged 70 to 90) in 和平区 and 沈河区
    by plain bulk inserts, as tests/vouchers/test_issuance_crash.py does: the benchmark
    measures issuing and redeeming, not registering and assessing."""
    from datetime import date, timedelta

    from assessment.eligibility import eligibility_on
    from assessment.models import Assessment
    from eldercare.residents import District, Resident, compose_resident_id

    today = local_today()
    districts = [
        db.session.scalar(sa.select(District.id).where(District.code == code))
        for code in ("210102", "210103")
    ]
    first = db.session.scalar(sa.select(sa.func.coalesce(sa.func.max(Resident.id), 0)))
    births = [date(1935, 1, 1) + timedelta(days=i % 7000) for i in range(count)]
    db.session.execute(
        sa.insert(Resident),
        [
            {
                # Sequences 500 and up: clear of the demo's residents (122, 131).
                "id_number": compose_resident_id("210102", births[i], 500 + i // 7000),
                "name": f"长者{i}",
                "birth_date": births[i],
                "district_id": districts[i % 2],
                "street": "南湖街道",
                "address": f"三好街 {i} 号",
                "latitude": 41.7741,
                "longitude": 123.4356,
            }
            for i in range(count)
        ],
    )
    ids = list(
        db.session.scalars(sa.select(Resident.id).where(Resident.id > first).order_by(Resident.id))
    )
    db.session.execute(
        sa.insert(Assessment),
        [
            {
                "resident_id": rid,
                "type": "first",
                "status": "approved",
                "applied_via": "bureau",
                "assessed_on": today,
                "level": "moderate",
                "base_level": "moderate",
                "total": 50,
                "effective_from": today,
                "valid_until": today + timedelta(days=300),
            }
            for rid in ids
        ],
    )
    db.session.commit()
    assert len(ids) == count
    assert eligibility_on(ids[0], today).eligible and eligibility_on(ids[-1], today).eligible
    return ids


def _fund_districts(count: int) -> None:
    """Money for ``count`` more vouchers in each of the two districts, through the pool's
    services (the demo's own allocation would run out at a few thousand elders)."""
    from eldercare.accounts import User
    from eldercare.residents import District
    from vouchers.issuance.monthly import month_of
    from vouchers.pool import funding as pool
    from vouchers.pool.kinds import DEFAULT_KIND
    from vouchers.pool.policy import policy_on

    approver = db.session.scalar(sa.select(User).where(User.username == "bureau.approver"))
    amount = count * policy_on(DEFAULT_KIND, month_of(local_today())).monthly_cap_fen
    pool.top_up(2 * amount, source="central", memo="bench", actor=approver)
    for district in db.session.scalars(
        sa.select(District).where(District.code.in_(("210102", "210103")))
    ):
        pool.allocate(district, amount, memo="bench", actor=approver)
    db.session.commit()


def bench_issue(app) -> None:
    """Both benchmarks of the issue run's database: issuing, then reconciling its ledger."""
    from eldercare.residents import Resident
    from vouchers.issuance.monthly import issue_monthly, month_of, next_month
    from vouchers.jobs import BATCH_SIZE, commit_every
    from vouchers.models import JournalLine, Voucher
    from vouchers.pool import ledger
    from vouchers.pool.kinds import DEFAULT_KIND
    from vouchers.pool.policy import policy_on

    with app.app_context():
        build_demo()
        db.session.commit()
        ids = _seed_elders(ISSUE_N)
        _fund_districts(ISSUE_N)
        month = month_of(local_today())

        # The baseline's rows are next month's, so they cannot collide with the run's, and
        # are deleted before the run: it starts from the table the baseline started from.
        policy = policy_on(DEFAULT_KIND, month)
        districts = dict(
            db.session.execute(
                sa.select(Resident.id, Resident.district_id).where(Resident.id.in_(ids))
            ).all()
        )
        start = time.perf_counter()
        for done, rid in enumerate(ids, start=1):
            db.session.add(
                Voucher(
                    resident_id=rid,
                    month=next_month(month),
                    kind=DEFAULT_KIND,
                    policy_id=policy.id,
                    district_id=districts[rid],
                    face_value_fen=policy.monthly_cap_fen,
                    balance_fen=policy.monthly_cap_fen,
                    held_fen=0,
                    status="active",
                )
            )
            if done % BATCH_SIZE == 0:
                db.session.commit()
        db.session.commit()
        baseline = _rate(
            f"Voucher rows, {BATCH_SIZE} per commit (baseline)",
            ISSUE_N,
            time.perf_counter() - start,
        )
        db.session.execute(sa.delete(Voucher).where(Voucher.month == next_month(month)))
        db.session.commit()

        start = time.perf_counter()
        report = issue_monthly(month, progress=commit_every())
        db.session.commit()
        seconds = time.perf_counter() - start
        assert report.issued == ISSUE_N and not report.left_out, report
        _rate(f"issue_monthly, {BATCH_SIZE} per commit", report.issued, seconds, baseline)

        lines = db.session.scalar(sa.select(sa.func.count()).select_from(JournalLine))
        start = time.perf_counter()
        check = ledger.verify_ledger()
        seconds = time.perf_counter() - start
        assert check.ok, check
        _rate("verify_ledger journal lines checked", lines, seconds)
        db.session.remove()


def demo_with_vouchers(count: int) -> list[int]:
    """The demo city plus ``count`` eligible elders with money for them and this month's
    vouchers issued (committed); their voucher ids. Runs in the caller's app context."""
    from vouchers.issuance.monthly import issue_monthly, month_of
    from vouchers.jobs import commit_every
    from vouchers.models import Voucher

    build_demo()
    db.session.commit()
    ids = _seed_elders(count)
    _fund_districts(count)
    month = month_of(local_today())
    issue_monthly(month, progress=commit_every())
    db.session.commit()
    vouchers = list(
        db.session.scalars(
            sa.select(Voucher.id)
            .where(Voucher.resident_id.in_(ids), Voucher.month == month)
            .order_by(Voucher.id)
        )
    )
    assert len(vouchers) == count, len(vouchers)
    return vouchers


def bench_redeem(app) -> None:
    from eldercare.accounts import User
    from marketplace import catalogue
    from marketplace.providers import provider_of
    from vouchers.models import Redemption, Voucher
    from vouchers.pool import ledger
    from vouchers.redemption import qr_tokens
    from vouchers.redemption import steps as redemption

    with app.app_context():
        vouchers = demo_with_vouchers(REDEEM_N)
        # The demo's carer at 和平区南湖社区养老服务站: its lunch is served on the premises,
        # so the check-in needs no phone location.
        staff = db.session.scalar(sa.select(User).where(User.username == "provider.staff"))
        provider = provider_of(staff)
        meal = next(
            s
            for s in catalogue.services_of(provider)
            if s.category_code == "meal_help" and s.active
        )
        staff_id, provider_id, meal_id, price = staff.id, provider.id, meal.id, meal.price_fen
        residents = dict(
            db.session.execute(
                sa.select(Voucher.id, Voucher.resident_id).where(Voucher.id.in_(vouchers))
            ).all()
        )

        start = time.perf_counter()
        for voucher_id in vouchers:
            db.session.add(
                Redemption(
                    voucher_id=voucher_id,
                    resident_id=residents[voucher_id],
                    provider_id=provider_id,
                    staff_user_id=staff_id,
                    service_id=meal_id,
                    scan_digest=secrets.token_hex(32),
                    status="checked_in",
                    checked_in_at=now_utc(),
                )
            )
            db.session.commit()
        baseline = _rate(
            "plain redemption row + commit (baseline)", REDEEM_N, time.perf_counter() - start
        )
        db.session.execute(sa.delete(Redemption).where(Redemption.voucher_id.in_(vouchers)))
        db.session.commit()

        start = time.perf_counter()
        for voucher_id in vouchers:
            token = qr_tokens.make_token(voucher_id)
            voucher, use, fresh = qr_tokens.consume_token(token, user=staff)
            assert fresh
            r = redemption.check_in(
                voucher, scan_digest=use.token_digest, staff_user=staff, service_id=meal_id
            )
            redemption.set_price(r, price_fen=price, staff_user=staff)
            redemption.pay_cash(r, staff_user=staff)
            db.session.commit()
        seconds = time.perf_counter() - start
        _rate("token, check-in, price, pay_cash + commit", REDEEM_N, seconds, baseline)

        redeemed = db.session.scalar(
            sa.select(sa.func.count())
            .select_from(Redemption)
            .where(Redemption.voucher_id.in_(vouchers), Redemption.status == "redeemed")
        )
        assert redeemed == REDEEM_N, redeemed
        outstanding = db.session.scalar(
            sa.select(sa.func.sum(Voucher.balance_fen)).where(Voucher.status == "active")
        )
        assert ledger.verify_ledger().ok
        assert ledger.balances()["vouchers:outstanding"] == outstanding
        db.session.remove()


def main() -> None:
    # The benchmarks of their own modules: each makes its own databases and prints JSON
    # lines beside a baseline measured in the same run.
    from bench import audit as audit_bench
    from bench import insight_export as insight_bench
    from bench import issuance as issuance_bench
    from bench import ledger as ledger_bench
    from bench import pii as pii_bench
    from bench import redeem_http as redeem_http_bench
    from bench import search as search_bench
    from bench import settlement as settlement_bench
    from bench import soak as soak_bench

    with fresh_databases() as databases:
        app = _app(databases.new())
        print(f"database: {app.config['SQLALCHEMY_DATABASE_URI'].split('@')[-1]}  N={N}")
        with app.app_context():
            build_demo()
            db.session.commit()
        bench_login(app)
        bench_import(app)
        bench_search(app)
        audit_bench.run(_app(databases.new()))
        bench_issue(_app(databases.new()))
        bench_redeem(_app(databases.new()))
    search_bench.main()  # the search API through gunicorn, beside its own SQL
    ledger_bench.main()  # hot accounts under 8 threads beside pgbench; verify_ledger
    if os.environ.get("TEST_DATABASE_URL"):  # COPY and pgbench baselines: PostgreSQL only
        issuance_bench.main()
        redeem_http_bench.main()
        settlement_bench.main()
        pii_bench.main()
        insight_bench.main()
        soak_bench.main()


if __name__ == "__main__":
    main()
