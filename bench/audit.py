"""The audit trail: appending without a lock, sealing in bulk (issue 11, goal 2).

    TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        BENCH_AUDIT_N=2000 /work/main/.venv/bin/python bench/audit.py

Prints one JSON line per figure, each with its baseline measured in the same run on the
same (fresh) database:

audit.append          BENCH_AUDIT_N rows appended by ``audit.record`` from BENCH_AUDIT_THREADS
                      threads (8), each row its own session and transaction (append +
                      commit, as a request does) vs. the same row inserted plainly (Core
                      INSERT + commit, 8 threads) into a table of the same columns with no
                      index, trigger or foreign key but its primary key (baseline).
audit.append_chained  the same, chained at insert as before migration 0014 (advisory lock,
                      read the tail, SHA-256, insert), emulated on a plain table: what the
                      requests paid before the sealer (same baseline).
audit.seal            rows per second that ``audit.seal`` chains (BENCH_AUDIT_SEAL_N unsealed
                      rows, 10 x N by default) vs. a plain UPDATE ... FROM (VALUES ...) of the
                      same three columns of as many rows of the plain table, in the same
                      batches, committed per batch (baseline).
audit.verify          rows per second that ``verify_chain`` checks vs. reading the same rows
                      in the same batches without hashing (baseline).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa  # noqa: E402

from eldercare import audit  # noqa: E402
from eldercare.audit import GENESIS_HASH, SEAL_BATCH, AuditLog  # noqa: E402
from eldercare.db import UTCDateTime, db  # noqa: E402
from eldercare.timeutil import now_utc  # noqa: E402

N = int(os.environ.get("BENCH_AUDIT_N", "2000"))
SEAL_N = int(os.environ.get("BENCH_AUDIT_SEAL_N", str(10 * N)))
THREADS = int(os.environ.get("BENCH_AUDIT_THREADS", "8"))
_CHAIN_LOCK_KEY = 4_215_042_195  # the lock record() took before migration 0014

_plain_metadata = sa.MetaData()


def _plain_table(name: str) -> sa.Table:
    return sa.Table(
        name,
        _plain_metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("occurred_at", UTCDateTime),
        sa.Column("actor_user_id", sa.Integer),
        sa.Column("actor_label", sa.String(100)),
        sa.Column("action", sa.String(64)),
        sa.Column("object_type", sa.String(64)),
        sa.Column("object_id", sa.String(64)),
        sa.Column("district_id", sa.Integer),
        sa.Column("before_json", sa.Text),
        sa.Column("after_json", sa.Text),
        sa.Column("seal_seq", sa.BigInteger),
        sa.Column("prev_hash", sa.String(64)),
        sa.Column("row_hash", sa.String(64)),
    )


PLAIN = _plain_table("bench_audit_plain")
CHAINED = _plain_table("bench_audit_chained")
SEAL_PLAIN = _plain_table("bench_audit_seal_plain")


def _row(i: int) -> dict:
    return {
        "occurred_at": now_utc(),
        "actor_user_id": None,
        "actor_label": "bench",
        "action": "bench.append",
        "object_type": "bench",
        "object_id": str(i),
        "district_id": None,
        "before_json": None,
        "after_json": json.dumps({"i": i}),
    }


def emit(figure: str, count: int, seconds: float, baseline: tuple[int, float] | None, **extra):
    line = {"figure": figure, "n": count, "per_s": round(count / seconds, 1)}
    if baseline is not None:
        base = baseline[0] / baseline[1]
        line |= {"baseline_per_s": round(base, 1), "ratio": round(count / seconds / base, 3)}
    print(json.dumps(line | extra), flush=True)


def _threads(work, count: int, threads: int) -> float:
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(work, range(count)))
    return time.perf_counter() - start


def bench_append(app) -> None:
    with app.app_context():
        engine = db.engine
        _plain_metadata.create_all(engine)
        postgres = engine.dialect.name == "postgresql"

    def plain(i):
        with engine.begin() as conn:
            conn.execute(PLAIN.insert().values(_row(i)))

    def record(i):
        with app.app_context():
            audit.record("bench.append", object_type="bench", object_id=i, after={"i": i})
            db.session.commit()
            db.session.remove()

    def chained(i):  # what record() did before migration 0014
        with app.app_context():
            session = db.session
            if postgres:
                session.execute(sa.select(sa.func.pg_advisory_xact_lock(_CHAIN_LOCK_KEY)))
            tail = session.scalar(
                sa.select(CHAINED.c.row_hash).order_by(CHAINED.c.id.desc()).limit(1)
            )
            row = _row(i) | {"prev_hash": tail or GENESIS_HASH}
            payload = json.dumps(
                [row["prev_hash"], row["occurred_at"].isoformat(), *list(row.values())[1:9]],
                separators=(",", ":"),
            )
            row["row_hash"] = hashlib.sha256(payload.encode()).hexdigest()
            session.execute(CHAINED.insert().values(row))
            session.commit()
            db.session.remove()

    # SQLite has one writer, and a transaction that has read cannot wait to write: one thread.
    threads = THREADS if postgres else 1
    baseline = (N, _threads(plain, N, threads))
    emit("audit.append_plain_baseline", N, baseline[1], None, threads=threads)
    emit("audit.append_chained", N, _threads(chained, N, threads), baseline, threads=threads)
    emit("audit.append", N, _threads(record, N, threads), baseline, threads=threads)
    with app.app_context():
        unsealed = audit.unsealed_backlog().unsealed
        assert unsealed >= N, unsealed


def bench_seal(app) -> None:
    with app.app_context():
        engine = db.engine
        _plain_metadata.create_all(engine)
        audit.seal()  # what the append figures left
        for start in range(0, SEAL_N, 10_000):
            rows = [_row(i) for i in range(start, min(start + 10_000, SEAL_N))]
            db.session.execute(SEAL_PLAIN.insert(), rows)
            audit.record_many(
                {**row, "after": {"i": row["object_id"]}}
                for row in rows  # same width
            )
            db.session.commit()
        ids = list(db.session.scalars(sa.select(SEAL_PLAIN.c.id).order_by(SEAL_PLAIN.c.id)))
        postgres = engine.dialect.name == "postgresql"
        db.session.remove()

    start = time.perf_counter()
    with engine.connect() as conn:
        for at in range(0, len(ids), SEAL_BATCH):
            batch = [
                (row_id, at + k + 1, secrets.token_hex(32), secrets.token_hex(32))
                for k, row_id in enumerate(ids[at : at + SEAL_BATCH])
            ]
            if postgres:  # the sealer's statement, on the plain table
                conn.execute(
                    sa.text(
                        "UPDATE bench_audit_seal_plain SET seal_seq = v.seal_seq,"
                        " prev_hash = v.prev_hash, row_hash = v.row_hash"
                        " FROM unnest(CAST(:ids AS integer[]), CAST(:seqs AS bigint[]),"
                        " CAST(:prevs AS varchar[]), CAST(:hashes AS varchar[]))"
                        " AS v(id, seal_seq, prev_hash, row_hash)"
                        " WHERE bench_audit_seal_plain.id = v.id"
                    ),
                    {
                        "ids": [b[0] for b in batch],
                        "seqs": [b[1] for b in batch],
                        "prevs": [b[2] for b in batch],
                        "hashes": [b[3] for b in batch],
                    },
                )
            else:
                conn.execute(
                    sa.update(SEAL_PLAIN)
                    .where(SEAL_PLAIN.c.id == sa.bindparam("b_id"))
                    .values(
                        seal_seq=sa.bindparam("b_seq"),
                        prev_hash=sa.bindparam("b_prev"),
                        row_hash=sa.bindparam("b_row"),
                    ),
                    [{"b_id": a, "b_seq": b, "b_prev": c, "b_row": d} for a, b, c, d in batch],
                )
            conn.commit()
    baseline = (len(ids), time.perf_counter() - start)

    with app.app_context():
        start = time.perf_counter()
        report = audit.seal()
        seconds = time.perf_counter() - start
        assert report.sealed == SEAL_N, report
        emit("audit.seal", report.sealed, seconds, baseline, batch=SEAL_BATCH)
        db.session.remove()


def bench_verify(app) -> None:
    table = AuditLog.__table__
    with app.app_context():
        start, last, count = time.perf_counter(), 0, 0
        while True:
            rows = db.session.execute(
                sa.select(table)
                .where(table.c.seal_seq > last)
                .order_by(table.c.seal_seq)
                .limit(1000)
            ).all()
            if not rows:
                break
            last, count = rows[-1].seal_seq, count + len(rows)
        baseline = (count, time.perf_counter() - start)
        start = time.perf_counter()
        report = audit.verify_chain()
        seconds = time.perf_counter() - start
        assert report.ok and report.unsealed == 0, report
        emit("audit.verify", report.rows_checked, seconds, baseline)
        db.session.remove()


def run(app) -> None:
    """Every figure, on ``app``'s database (fresh: the figures count its rows)."""
    bench_append(app)
    bench_seal(app)
    bench_verify(app)


def main() -> None:
    from bench.run import _app, fresh_databases

    with fresh_databases() as databases:
        app = _app(databases.new())
        with app.app_context():
            where = app.config["SQLALCHEMY_DATABASE_URI"].split("@")[-1]
        print(json.dumps({"database": where, "n": N, "seal_n": SEAL_N, "threads": THREADS}))
        run(app)
        with app.app_context():
            db.engine.dispose()


if __name__ == "__main__":
    main()
