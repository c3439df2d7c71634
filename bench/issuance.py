"""Issuance of BENCH_ISSUE_N eligible elders on PostgreSQL, beside a bare COPY (issue 11, goal 1).

    TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        BENCH_ISSUE_N=100000 python bench/issuance.py

In a fresh database of its own (dropped at the end): seeds N eligible elders set-based
(``INSERT … SELECT generate_series`` into residents and assessments, three levels, waiting
since various days, across BENCH_ISSUE_DISTRICTS districts, each funded for all its elders),
refreshes the planner's statistics, then in the same run:

- baseline: a bare ``COPY`` of N rows of the voucher table's width into a scratch table
  without indexes (psycopg ``cursor.copy``, rows made in Python), committed;
- ``issue_monthly`` through the real function with the job's ``commit_every`` (staging, the
  cut-off, INSERT … SELECT of vouchers, one journal entry per district and batch, audit rows
  appended unsealed in bulk), committed;

and, for context, the same COPY into a scratch table with the vouchers table's indexes,
checks and foreign keys (what any way of writing N vouchers must maintain).

Prints one JSON line per figure: seconds, the ratio to the baseline, the process's peak RSS.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa  # noqa: E402

from bench import sealed_ids  # noqa: E402
from bench.run import _app, beside_baseline, fresh_databases  # noqa: E402
from eldercare.db import db  # noqa: E402
from eldercare.timeutil import local_today, now_utc  # noqa: E402

N = int(os.environ.get("BENCH_ISSUE_N", "10000"))
DISTRICTS = int(os.environ.get("BENCH_ISSUE_DISTRICTS", "10"))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _emit(figure: str, **values) -> None:
    print(json.dumps({"figure": figure, "n": N} | values), flush=True)


def _seed(n: int) -> None:
    """``n`` eligible elders, set-based: the benchmark measures issuing, not registering."""
    from vouchers.pool import ledger
    from vouchers.pool.kinds import DEFAULT_KIND
    from vouchers.pool.policy import policy_on

    today = local_today()
    codes = [f"2199{i:02d}" for i in range(DISTRICTS)]
    db.session.execute(
        sa.text(
            "INSERT INTO districts (code, name_zh, name_en) "
            "SELECT c, '区' || c, 'D' || c FROM unnest(CAST(:codes AS text[])) AS c"
        ),
        {"codes": codes},
    )
    first_district = db.session.scalar(
        sa.text("SELECT min(id) FROM districts WHERE code = ANY(:codes)"), {"codes": codes}
    )
    db.session.execute(
        sa.text(
            "INSERT INTO residents (id_number, id_number_hash, id_number_tail_hash, name,"
            " birth_date, district_id, street, address, created_at) "
            "SELECT u.sealed, u.hash, u.tail, '长者' || g,"
            " DATE '1935-01-01' + (g % 7000)::int, :first + (g % :districts), '南湖街道',"
            " '三好街 ' || g || ' 号', now() AT TIME ZONE 'UTC' "
            "FROM unnest(CAST(:sealed AS text[]), CAST(:hashes AS text[]),"
            " CAST(:tails AS text[])) WITH ORDINALITY AS u(sealed, hash, tail, g)"
        ),
        {"first": first_district, "districts": DISTRICTS} | sealed_ids.sealed_ids(n),
    )
    db.session.execute(
        sa.text(
            "INSERT INTO assessments (resident_id, type, status, applied_via, assessed_on,"
            " level, base_level, total, effective_from, valid_until, coma,"
            " care_risk_events_30d, fee_fen, refundable_fee_fen, created_at) "
            "SELECT r.id, 'first', 'approved', 'bureau', :today - (r.id % 200),"
            " (ARRAY['moderate', 'severe', 'complete'])[1 + r.id % 3],"
            " (ARRAY['moderate', 'severe', 'complete'])[1 + r.id % 3], 50,"
            " :today - (r.id % 200), :today + 300, false, 0, 0, 0,"
            " now() AT TIME ZONE 'UTC' "
            "FROM residents r JOIN districts d ON d.id = r.district_id "
            "WHERE d.code = ANY(:codes)"
        ),
        {"today": today, "codes": codes},
    )
    cap = policy_on(DEFAULT_KIND, today).monthly_cap_fen
    per_district = (n // DISTRICTS + 1) * cap
    ledger.post(
        "topup",
        "bench",
        [
            ("funding:central", -per_district * DISTRICTS),
            ("pool:available", per_district * DISTRICTS),
        ],
    )
    for code in codes:
        account = ledger.district_account_code(code)
        ledger.account(account, create_name=code)
        ledger.post(
            "allocation", "bench", [("pool:available", -per_district), (account, per_district)]
        )
    db.session.commit()
    db.session.execute(sa.text("ANALYZE"))
    db.session.commit()


def _copy_baseline(n: int) -> float:
    """A bare COPY of ``n`` rows as wide as a voucher into a scratch table, committed."""
    connection = db.session.connection().connection.driver_connection
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE bench_voucher_copy (id bigint, resident_id integer, month date,"
            " kind varchar(20), policy_id integer, district_id integer, face_value_fen bigint,"
            " balance_fen bigint, held_fen bigint, status varchar(12), issued_at timestamp,"
            " closed_at timestamp, revoked_reason varchar(40))"
        )
    db.session.commit()
    month = local_today().replace(day=1)
    stamp = now_utc().replace(tzinfo=None)
    start = time.perf_counter()
    connection = db.session.connection().connection.driver_connection
    with (
        connection.cursor() as cursor,
        cursor.copy(
            "COPY bench_voucher_copy (id, resident_id, month, kind, policy_id, district_id,"
            " face_value_fen, balance_fen, held_fen, status, issued_at) FROM STDIN"
        ) as copy,
    ):
        for i in range(1, n + 1):
            copy.write_row(
                (
                    i,
                    i,
                    month,
                    "home_community",
                    1,
                    1 + i % DISTRICTS,
                    50_000,
                    50_000,
                    0,
                    "active",
                    stamp,
                )
            )
    db.session.commit()
    seconds = time.perf_counter() - start
    db.session.execute(sa.text("DROP TABLE bench_voucher_copy"))
    db.session.commit()
    return seconds


def _copy_into_voucher_shape(n: int) -> float:
    """Context for the ratio, not the baseline: the same COPY into a scratch table with the
    vouchers table's indexes, checks and foreign keys (what any way of writing N vouchers
    must maintain), committed."""
    from vouchers.pool.kinds import DEFAULT_KIND
    from vouchers.pool.policy import policy_on

    policy = policy_on(DEFAULT_KIND, local_today())
    policy_id, cap = policy.id, policy.monthly_cap_fen  # read now: nothing loads mid-COPY
    residents = db.session.execute(
        sa.text("SELECT id, district_id FROM residents ORDER BY id LIMIT :n"), {"n": n}
    ).all()
    connection = db.session.connection().connection.driver_connection
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE bench_voucher_shape (LIKE vouchers INCLUDING ALL)")
        for column, target in (
            ("resident_id", "residents"),
            ("district_id", "districts"),
            ("policy_id", "voucher_policies"),
        ):
            cursor.execute(
                f"ALTER TABLE bench_voucher_shape ADD FOREIGN KEY ({column})"  # noqa: S608
                f" REFERENCES {target} (id)"
            )
    db.session.commit()
    month = local_today().replace(day=1)
    stamp = now_utc().replace(tzinfo=None)
    start = time.perf_counter()
    connection = db.session.connection().connection.driver_connection
    with (
        connection.cursor() as cursor,
        cursor.copy(
            "COPY bench_voucher_shape (resident_id, month, kind, policy_id, district_id,"
            " face_value_fen, balance_fen, held_fen, status, issued_at) FROM STDIN"
        ) as copy,
    ):
        for resident_id, district_id in residents:
            copy.write_row(
                (
                    resident_id,
                    month,
                    DEFAULT_KIND,
                    policy_id,
                    district_id,
                    cap,
                    cap,
                    0,
                    "active",
                    stamp,
                )
            )
    db.session.commit()
    seconds = time.perf_counter() - start
    del residents
    db.session.execute(sa.text("DROP TABLE bench_voucher_shape"))
    db.session.commit()
    return seconds


def run(url: str) -> dict:
    from vouchers.issuance.monthly import issue_monthly, month_of
    from vouchers.jobs import commit_every
    from vouchers.models import Voucher
    from vouchers.pool import ledger

    with _app(url).app_context():
        start = time.perf_counter()
        _seed(N)
        _emit("issuance.seed", seconds=round(time.perf_counter() - start, 3))

        baseline = _copy_baseline(N)
        _emit("issuance.copy_baseline", seconds=round(baseline, 3))

        month = month_of(local_today())
        start = time.perf_counter()
        report = issue_monthly(month, progress=commit_every())
        db.session.commit()
        seconds = time.perf_counter() - start
        issued = db.session.scalar(
            sa.select(sa.func.count()).select_from(Voucher).where(Voucher.month == month)
        )
        assert report.issued == N == issued and report.left_out_count == 0, report
        figure = {
            # The process's peak so far: seeding is set-based, the COPY streams, so this is
            # the issuance's own (the context COPY below reads every resident into Python).
            **beside_baseline(seconds, baseline, _peak_rss_mb()),
            "issued": report.issued,
            "districts": DISTRICTS,
        }
        _emit("issuance.issue_monthly", **figure)
        shaped = _copy_into_voucher_shape(N)
        _emit(
            "issuance.copy_with_voucher_indexes",
            seconds=round(shaped, 3),
            ratio_to_baseline=round(shaped / baseline, 2),
            issue_monthly_ratio_to_it=round(seconds / shaped, 2),
        )
        # Not timed: the books after the run (one entry per district and batch).
        check = ledger.verify_ledger()
        assert check.ok, check
        entries = db.session.scalar(
            sa.text("SELECT count(*) FROM journal_entries WHERE kind = 'issue'")
        )
        _emit("issuance.journal_entries", entries=entries, ledger_ok=check.ok)
        db.session.remove()
        db.engine.dispose()
    return figure


def main() -> None:
    if not os.environ.get("TEST_DATABASE_URL", "").startswith("postgresql"):
        print("bench/issuance.py needs PostgreSQL: set TEST_DATABASE_URL", file=sys.stderr)
        return
    with fresh_databases() as databases:
        run(databases.new())


if __name__ == "__main__":
    main()
