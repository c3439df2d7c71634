"""Ledger benchmark (issue 11): concurrent postings on the accounts every redemption moves,
and verify_ledger over a large journal. Prints one JSON line per figure, each with the
baseline measured in the same run on the same server.

    TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        .venv/bin/python bench/ledger.py

ledger.post     BENCH_LEDGER_THREADS (8) threads, each posting hold- and capture-like
                entries (journal entry, lines, balance updates; one commit per entry) with
                causes of its own, for BENCH_LEDGER_SECONDS (10) s: once with one row per
                account (the design before issue 11: the three hot accounts in one guarded
                row each), once with the hot accounts in 32 shards (now). The audit chain's
                lock is left out of both (branch i11-audit takes it off every path); another
                figure keeps it, as main has it until then. Both designs again with
                BENCH_LEDGER_WORK_MS (5) ms between each posting and its commit, as a request
                spends on its audit row and response while holding the rows (0: skip).
                Baseline: `pgbench -N -c 8 -j 2 -T <seconds>` on a scratch database of the
                same server. PostgreSQL only.
ledger.verify   journal lines per second that verify_ledger reconciles, with
                BENCH_LEDGER_LINES (1,000,000) lines seeded by INSERT ... SELECT
                generate_series (a recursive CTE on SQLite), vs. one bare
                `SELECT account_id, sum(amount_fen) FROM journal_lines GROUP BY account_id`
                (baseline: the least any check of every line must read).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa  # noqa: E402
from flask_migrate import upgrade  # noqa: E402

from bench.run import Databases, fresh_databases  # noqa: E402
from eldercare import create_app  # noqa: E402
from eldercare.db import db  # noqa: E402

THREADS = int(os.environ.get("BENCH_LEDGER_THREADS", "8"))
SECONDS = float(os.environ.get("BENCH_LEDGER_SECONDS", "10"))
LINES = int(os.environ.get("BENCH_LEDGER_LINES", "1000000"))
# Time a request spends between its posting and its commit (audit row, other rows, the
# response): the row locks are held meanwhile. 0 for the bare figures.
WORK_MS = float(os.environ.get("BENCH_LEDGER_WORK_MS", "5"))
HOT = ("vouchers:outstanding", "vouchers:held", "redeemed:unsettled")
DISTRICT = "district:210102:available"
FUNDS = 10**15  # more than any run can hold


def emit(bench: str, figure: str, value: float, unit: str, baseline: str, base: float) -> None:
    print(
        json.dumps(
            {
                "bench": bench,
                "figure": figure,
                "value": round(value, 1),
                "unit": unit,
                "baseline": baseline,
                "baseline_value": round(base, 1),
                "ratio": round(value / base, 3) if base else None,
            },
            ensure_ascii=False,
        ),
        flush=True,
    )


def _app(url: str):
    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": url,
            "SQLALCHEMY_ENGINE_OPTIONS": {"pool_size": THREADS + 2, "max_overflow": 4},
        }
    )
    with app.app_context():
        upgrade()
    return app


def _fund(app) -> None:
    from vouchers.pool import ledger

    with app.app_context():
        ledger.account(DISTRICT, create_name="Heping")
        ledger.post("topup", "bench", [("funding:central", -FUNDS), ("pool:available", FUNDS)])
        ledger.post("allocation", "bench", [("pool:available", -FUNDS), (DISTRICT, FUNDS)])
        ledger.post("issue", "bench", [(DISTRICT, -FUNDS), ("vouchers:outstanding", FUNDS)])
        db.session.commit()


def _set_design(app, shards: int) -> None:
    """One guarded row per hot account (shards=1: the design before issue 11, where the row
    may not go negative) or ``shards`` rows; each account's balance is kept."""
    from vouchers.models import LedgerAccount, LedgerBalance

    with app.app_context():
        for code in HOT:
            account = db.session.scalar(sa.select(LedgerAccount).where(LedgerAccount.code == code))
            total = db.session.scalar(
                sa.select(sa.func.sum(LedgerBalance.balance_fen)).where(
                    LedgerBalance.account_id == account.id
                )
            )
            db.session.execute(
                sa.delete(LedgerBalance).where(LedgerBalance.account_id == account.id)
            )
            db.session.add_all(
                LedgerBalance(
                    account_id=account.id,
                    shard=s,
                    balance_fen=total if s == 0 else 0,
                    may_go_negative=shards > 1,
                )
                for s in range(shards)
            )
            account.shards = shards
        db.session.commit()


def _post_for(app, seconds: float, *, chain_lock: bool, work_ms: float = 0) -> float:
    """Entries per second from THREADS threads posting hold then capture, one commit each."""
    from vouchers.pool import ledger

    # chain_lock: the global advisory lock every money transaction took before the audit
    # chain was sealed by a job (migration 0014), emulated to show what it cost.
    def old_chain_lock() -> None:
        if chain_lock:
            db.session.execute(sa.select(sa.func.pg_advisory_xact_lock(4_215_042_195)))

    counts = [0] * THREADS
    errors: list[BaseException] = []
    start_gate = threading.Barrier(THREADS + 1)

    def worker(index: int) -> None:
        with app.app_context():
            try:
                start_gate.wait()
                deadline = time.perf_counter() + seconds
                n = 0
                while time.perf_counter() < deadline:
                    cause = ("redemptions", index * 10_000_000 + n)
                    old_chain_lock()
                    ledger.post(
                        "hold",
                        "bench hold",
                        [("vouchers:outstanding", -100), ("vouchers:held", 100)],
                        cause=cause,
                    )
                    if work_ms:
                        time.sleep(work_ms / 1000)
                    db.session.commit()
                    old_chain_lock()
                    ledger.post(
                        "capture",
                        "bench capture",
                        [("vouchers:held", -100), ("redeemed:unsettled", 100)],
                        cause=cause,
                    )
                    if work_ms:
                        time.sleep(work_ms / 1000)
                    db.session.commit()
                    n += 1
                    counts[index] += 2
            except BaseException as error:
                errors.append(error)
                db.session.rollback()
            finally:
                db.session.remove()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    start_gate.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise errors[0]
    return sum(counts) / elapsed


def _pgbench(databases: Databases, seconds: float) -> float:
    pgbench = shutil.which("pgbench") or "/usr/bin/pgbench"
    url = sa.make_url(databases.new())
    args = ["-h", url.host or "127.0.0.1", "-p", str(url.port or 5432), "-U", url.username]
    env = os.environ | ({"PGPASSWORD": url.password} if url.password else {})
    subprocess.run(  # noqa: S603 (our own pgbench, our own arguments)
        [pgbench, "-i", "-q", "-s", "1", *args, url.database],
        check=True,
        capture_output=True,
        env=env,
    )
    out = subprocess.run(  # noqa: S603
        [pgbench, "-N", "-c", "8", "-j", "2", "-T", str(int(seconds)), *args, url.database],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    return float(re.search(r"tps = ([\d.]+)", out).group(1))


def bench_post(databases: Databases) -> None:
    if not databases.postgres:
        print(json.dumps({"bench": "ledger.post", "skipped": "PostgreSQL only"}), flush=True)
        return
    tps = _pgbench(databases, SECONDS)
    base = f"pgbench -N -c 8 -j 2 -T {int(SECONDS)} (tps)"
    app = _app(databases.new())
    _fund(app)
    _set_design(app, 1)
    single = _post_for(app, SECONDS, chain_lock=False)
    emit(
        "ledger.post",
        f"{THREADS} threads, one row per account (before)",
        single,
        "entries/s",
        base,
        tps,
    )
    if WORK_MS:
        single_work = _post_for(app, SECONDS, chain_lock=False, work_ms=WORK_MS)
        emit(
            "ledger.post",
            f"{THREADS} threads, one row per account, {WORK_MS:g} ms before each commit (before)",
            single_work,
            "entries/s",
            base,
            tps,
        )
    _set_design(app, 32)
    sharded = _post_for(app, SECONDS, chain_lock=False)
    emit("ledger.post", f"{THREADS} threads, 32 shards (now)", sharded, "entries/s", base, tps)
    if WORK_MS:
        sharded_work = _post_for(app, SECONDS, chain_lock=False, work_ms=WORK_MS)
        emit(
            "ledger.post",
            f"{THREADS} threads, 32 shards, {WORK_MS:g} ms before each commit (now)",
            sharded_work,
            "entries/s",
            base,
            tps,
        )
    chained = _post_for(app, SECONDS, chain_lock=True)
    emit(
        "ledger.post",
        f"{THREADS} threads, 32 shards, audit chain lock kept (main until i11-audit)",
        chained,
        "entries/s",
        base,
        tps,
    )
    _check_books(app)
    with app.app_context():
        db.engine.dispose()


def _check_books(app) -> None:
    from vouchers.pool import ledger

    with app.app_context():
        check = ledger.verify_ledger()
        # No voucher rows stand behind the bench's entries: the books themselves must agree.
        assert check.unbalanced_entries == check.drifted_accounts == [], check
        assert check.total_fen == 0, check
        db.session.remove()


def _seed_lines(app, lines: int) -> None:
    """lines/2 entries, holds and their releases (outstanding <-> held), so every account's
    lines sum to zero, as its balance does. Written in SQL, past post() and the
    balanced-at-commit trigger (every seeded entry balances by construction). The SQL is
    made of integers only."""
    entries = max(2, lines // 4 * 2)  # an even number: every hold has its release
    with app.app_context():
        ids = dict(db.session.execute(sa.text("SELECT code, id FROM ledger_accounts")).all())
        out, held = int(ids["vouchers:outstanding"]), int(ids["vouchers:held"])
        postgres = db.engine.dialect.name == "postgresql"
        numbers = (
            f"SELECT generate_series(1, {entries}) AS i"
            if postgres
            else "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "  # noqa: S608
            f"WHERE i < {entries}) SELECT i FROM n"
        )
        first = int(db.session.scalar(sa.text("SELECT COALESCE(MAX(id), 0) FROM journal_entries")))
        now = "now()" if postgres else "CURRENT_TIMESTAMP"
        if postgres:
            db.session.execute(
                sa.text("ALTER TABLE journal_lines DISABLE TRIGGER journal_lines_balanced")
            )
        db.session.execute(
            sa.text(
                "INSERT INTO journal_entries (id, kind, occurred_at, memo, cause_type, cause_id) "  # noqa: S608
                f"SELECT {first} + i, CASE WHEN i % 2 = 1 THEN 'hold' ELSE 'release' END, {now}, "
                "'bench', 'redemptions', CAST((i + 1) / 2 AS VARCHAR(40)) "
                f"FROM ({numbers}) AS s"
            )
        )
        # Entry i moves 100 + (i+1)/2 fen; its release (i+1) moves it back.
        amount = "(100 + (i + 1) / 2)"
        sign = "CASE WHEN i % 2 = 1 THEN 1 ELSE -1 END"
        for account, direction in ((out, -1), (held, 1)):
            db.session.execute(
                sa.text(
                    "INSERT INTO journal_lines (entry_id, account_id, amount_fen) "  # noqa: S608
                    f"SELECT {first} + i, {account}, {direction} * {sign} * {amount} "
                    f"FROM ({numbers}) AS s"
                )
            )
        if postgres:
            db.session.execute(
                sa.text("ALTER TABLE journal_lines ENABLE TRIGGER journal_lines_balanced")
            )
            db.session.execute(
                sa.text(
                    "SELECT setval('journal_entries_id_seq', (SELECT MAX(id) FROM journal_entries))"
                )
            )
        db.session.commit()
        if postgres:
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.exec_driver_sql("VACUUM ANALYZE journal_lines")
                conn.exec_driver_sql("VACUUM ANALYZE journal_entries")


def bench_verify(databases: Databases) -> None:
    from vouchers.pool import ledger

    app = _app(databases.new())
    _seed_lines(app, LINES)
    with app.app_context():
        lines = db.session.scalar(sa.text("SELECT COUNT(*) FROM journal_lines"))
        start = time.perf_counter()
        db.session.execute(
            sa.text("SELECT account_id, SUM(amount_fen) FROM journal_lines GROUP BY account_id")
        ).all()
        base = lines / (time.perf_counter() - start)
        db.session.rollback()
        start = time.perf_counter()
        check = ledger.verify_ledger()
        rate = lines / (time.perf_counter() - start)
        db.session.rollback()
    assert check.ok, check  # holds and releases net to zero: the books are clean
    emit(
        "ledger.verify",
        f"verify_ledger over {lines:,} journal lines",
        rate,
        "lines/s",
        "SELECT account_id, sum(amount_fen) FROM journal_lines GROUP BY account_id",
        base,
    )
    with app.app_context():
        db.engine.dispose()


def main() -> None:
    with fresh_databases() as databases:
        bench_post(databases)
        bench_verify(databases)


if __name__ == "__main__":
    main()
