"""Personal data at rest at BENCH_PII_N residents on PostgreSQL (issue 13): key rotation,
look-up by ID number, migration 0020, each beside a plain PostgreSQL baseline.

    TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        BENCH_PII_N=1000000 python bench/pii.py

In a fresh database of its own (dropped at the end) it COPYs N residents whose ID number
and phone are sealed under an old key (bench/sealed_ids.py, row by row: the COPY streams),
then, with the new key first in PII_KEYS and the old one second, in the same run:

- ``pii.lookup_by_pk``: the baseline, a resident loaded by primary key (ORM, decrypted);
- ``pii.lookup_by_id_number``: the same residents found by ID number through the keyed
  hash's unique index (``Resident.id_number_is``);
- ``pii.update_baseline``: ``UPDATE residents SET id_number = id_number, phone = phone``,
  one statement rewriting the same two columns of every row, committed;
- ``pii.rotate``: ``eldercare.pii_rotation.rotate`` with a commit per batch, as
  ``flask pii rotate`` runs it, re-encrypting every ID number and phone under the new key
  (the table is VACUUM FULLed between the two, so each starts from a compact table);
- ``pii.crypto_only``: for context, the Python work per row alone (decrypt and encrypt
  both values, two hashes) on a sample, no database.

Then in a second fresh database (BENCH_PII_MIGRATION=0 skips it): migrated to 0019, N clear
residents COPYed in (``pii.migration_copy_baseline``), upgraded to 0020
(``pii.migration_0020``: encrypts both columns, hashes, builds the unique index).

Prints one JSON line per figure; the peak RSS is the phase's own (reset before each phase
through /proc/self/clear_refs where Linux allows it).
"""

from __future__ import annotations

import base64
import json
import os
import random
import resource
import sys
import time
from datetime import date, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa  # noqa: E402
from flask_migrate import upgrade  # noqa: E402

from bench import sealed_ids  # noqa: E402
from eldercare import create_app  # noqa: E402
from eldercare.db import db  # noqa: E402
from eldercare.pii import parse_keys  # noqa: E402

N = int(os.environ.get("BENCH_PII_N", "1000000"))
LOOKUPS = int(os.environ.get("BENCH_PII_LOOKUPS", "3000"))
BATCH = 1000  # flask pii rotate's default
MIGRATION = os.environ.get("BENCH_PII_MIGRATION", "1") != "0"


def _key(fill: bytes) -> str:
    return base64.b64encode(fill * 32).decode()


# Bench keys (not the demo's, so that nothing here looks like production either way).
OLD = f"old:{_key(b'o')}"
NEW = f"new:{_key(b'n')}"
HMAC = _key(b"h")
CREATED = datetime(2026, 1, 1)


def _reset_peak_rss() -> None:
    """Linux: writing 5 to clear_refs resets the peak RSS to the current one (since 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def _emit(figure: str, **values) -> None:
    print(json.dumps({"figure": figure, "n": N} | values), flush=True)


def _app(url: str, keys: str):
    return create_app(
        {
            "SQLALCHEMY_DATABASE_URI": url,
            "WTF_CSRF_ENABLED": False,
            "PII_KEYS": keys,
            "PII_HMAC_KEY": HMAC,
        }
    )


def _district() -> int:
    district = db.session.scalar(
        sa.text(
            "INSERT INTO districts (code, name_zh, name_en) VALUES ('219900', '区', 'D')"
            " RETURNING id"
        )
    )
    db.session.commit()
    return district


def _copy_residents(n: int, district: int, sealed: bool) -> float:
    """COPY ``n`` residents, ids 1..n, sealed under the old key or (at 0019) clear; seconds."""
    keys = parse_keys(OLD, HMAC)
    columns = "id, id_number, name, birth_date, phone, district_id, street, address, created_at"
    if sealed:
        columns += ", id_number_hash, id_number_tail_hash"
    start = time.perf_counter()
    connection = db.session.connection().connection.driver_connection
    with (
        connection.cursor() as cursor,
        cursor.copy(f"COPY residents ({columns}) FROM STDIN") as copy,  # noqa: S608
    ):
        for g in range(1, n + 1):
            row = [g, None, "长者", date(1935, 1, 1), None, district, "南湖街道", "三好街", CREATED]
            if sealed:
                row[1], id_hash, tail_hash, row[4] = sealed_ids.sealed_resident(keys, g)
                row += [id_hash, tail_hash]
            else:
                row[1], row[4] = sealed_ids.number(g), sealed_ids.phone(g)
            copy.write_row(row)
    db.session.execute(sa.text("SELECT setval('residents_id_seq', :n)"), {"n": n})
    db.session.commit()
    return time.perf_counter() - start


def _vacuum(full: bool = False) -> None:
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM FULL ANALYZE residents" if full else "VACUUM ANALYZE")


def _lookups() -> None:
    from eldercare.residents import Resident

    rng = random.Random(13)
    picks = [rng.randint(1, N) for _ in range(LOOKUPS)]

    def timed(where) -> float:
        for g in picks[:100]:  # warm the caches and the statement cache alike
            db.session.scalar(sa.select(Resident).where(where(g)))
        db.session.expunge_all()
        start = time.perf_counter()
        for g in picks:
            resident = db.session.scalar(sa.select(Resident).where(where(g)))
            assert resident.id == g and resident.id_number == sealed_ids.number(g)
            db.session.expunge_all()  # every look-up reads the row, none the identity map
        return time.perf_counter() - start

    baseline = timed(lambda g: Resident.id == g)
    _emit(
        "pii.lookup_by_pk",
        lookups=LOOKUPS,
        ms_per_lookup=round(baseline / LOOKUPS * 1000, 3),
    )
    seconds = timed(lambda g: Resident.id_number_is(sealed_ids.number(g)))
    _emit(
        "pii.lookup_by_id_number",
        lookups=LOOKUPS,
        ms_per_lookup=round(seconds / LOOKUPS * 1000, 3),
        ratio=round(seconds / baseline, 2),
    )
    db.session.rollback()


def _crypto_only(sample: int) -> float:
    """Seconds per row of rotation's Python work alone: both values opened and resealed,
    the two hashes recomputed."""
    old, new = parse_keys(OLD, HMAC), parse_keys(f"{NEW},{OLD}", HMAC)
    rows = [sealed_ids.sealed_resident(old, g) for g in range(1, sample + 1)]
    start = time.perf_counter()
    for stored_id, _h, _t, stored_phone in rows:
        plain = new.decrypt(stored_id, "residents.id_number")
        new.encrypt(plain, "residents.id_number")
        new.lookup_hash("id_number", plain)
        new.lookup_hash("id_number_tail", plain)
        new.encrypt(new.decrypt(stored_phone, "residents.phone"), "residents.phone")
    return (time.perf_counter() - start) / sample


def _rotation_figures() -> None:
    from eldercare.pii_rotation import key_ids_in_use, rotate

    _reset_peak_rss()
    start = time.perf_counter()
    db.session.execute(sa.text("UPDATE residents SET id_number = id_number, phone = phone"))
    db.session.commit()
    baseline = time.perf_counter() - start
    _emit(
        "pii.update_baseline",
        seconds=round(baseline, 3),
        rows_per_s=round(N / baseline),
        peak_rss_mb=_peak_rss_mb(),
    )
    _vacuum(full=True)

    _reset_peak_rss()
    start, values = time.perf_counter(), 0
    with db.engine.connect() as connection:
        for done in rotate(connection, batch=BATCH):
            connection.commit()  # one transaction per batch, as flask pii rotate does
            values += done
    seconds = time.perf_counter() - start
    peak = _peak_rss_mb()
    with db.engine.connect() as connection:
        assert key_ids_in_use(connection) == {"new": 2 * N}, key_ids_in_use(connection)
    assert values == 2 * N, values
    _emit(
        "pii.rotate",
        seconds=round(seconds, 3),
        rows_per_s=round(N / seconds),
        values=values,
        batch=BATCH,
        baseline_seconds=round(baseline, 3),
        ratio=round(seconds / baseline, 2),
        peak_rss_mb=peak,
    )
    sample = min(N, 50_000)
    per_row = _crypto_only(sample)
    _emit(
        "pii.crypto_only",
        sample=sample,
        us_per_row=round(per_row * 1e6, 2),
        seconds_for_n=round(per_row * N, 3),
        share_of_rotate=round(per_row * N / seconds, 2),
    )


def run(url: str) -> None:
    app = _app(url, f"{NEW},{OLD}")
    with app.app_context():
        upgrade()
        district = _district()
        seconds = _copy_residents(N, district, sealed=True)
        _emit("pii.seed_copy", seconds=round(seconds, 3))
        _vacuum()
        _lookups()
        _rotation_figures()
        db.session.remove()
        db.engine.dispose()


def run_migration(url: str) -> None:
    from eldercare.residents import Resident

    app = _app(url, NEW)
    with app.app_context():
        upgrade(revision="0019")
        district = _district()
        baseline = _copy_residents(N, district, sealed=False)
        _emit("pii.migration_copy_baseline", seconds=round(baseline, 3))
        _vacuum()
        db.session.remove()
        _reset_peak_rss()
        start = time.perf_counter()
        upgrade(revision="0020")
        seconds = time.perf_counter() - start
        peak = _peak_rss_mb()
        _emit(
            "pii.migration_0020",
            seconds=round(seconds, 3),
            rows_per_s=round(N / seconds),
            copy_baseline_seconds=round(baseline, 3),
            ratio=round(seconds / baseline, 2),
            peak_rss_mb=peak,
        )
        # Not timed: every value is sealed under the new key and found by its hash.
        sealed = db.session.scalar(
            sa.text("SELECT count(*) FROM residents WHERE id_number LIKE 'new:%'"
                    " AND phone LIKE 'new:%'")
        )  # fmt: skip
        by_hash = sa.select(Resident.id).where(Resident.id_number_is(sealed_ids.number(1)))
        found = db.session.scalar(by_hash)
        assert sealed == N and found == 1, (sealed, found)
        db.session.remove()
        db.engine.dispose()


def main() -> None:
    from bench.run import postgres_bench

    postgres_bench("pii", *((run, run_migration) if MIGRATION else (run,)))


if __name__ == "__main__":
    main()
