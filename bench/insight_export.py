"""Exporting a month of redemptions as XLSX stays within bounded memory, and the dashboard's
figures stay set-based at scale (issue 15), on PostgreSQL, beside baselines in the same run.

    TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        BENCH_INSIGHT_N=100000 BENCH_INSIGHT_SCALE_N=1000000 python bench/insight_export.py

In a fresh database of its own (dropped at the end) it seeds, set-based (INSERT … SELECT
over generate_series, bench/settlement.py's parties): elders in ten districts, providers,
and two months of vouchers with BENCH_INSIGHT_N and BENCH_INSIGHT_N / 10 redeemed
redemptions. Then, for each month:

- ``insight.copy_baseline``: ``COPY (SELECT <the export's columns> …) TO STDOUT`` of the same
  rows in the same order, read to the end (what any export must at least read);
- ``insight.xlsx_export``: the bureau's redemption export as XLSX
  (``vouchers.exports.xlsx_chunks``: a server-side cursor read in batches, openpyxl's
  write-only workbook), every chunk read to the end.

Each prints seconds, bytes, the peak RSS growth during the export (Linux: the high-water mark
reset through /proc/self/clear_refs before it) and, in a second pass of the same export
under tracemalloc, Python's peak allocation. Bounded memory reads as: the peak is far below
the month's data (the COPY's bytes), and ten times the rows does not make it ten times
larger.

With BENCH_INSIGHT_SCALE_N (0: skip) a third month of that many redemptions is seeded, and
the dashboard's month figures (``vouchers.insight.figures``) are timed beside a plain
``SELECT provider_id, count(*), sum(subsidy_fen) … GROUP BY provider_id`` of that month.

Prints one JSON line per figure.
"""

from __future__ import annotations

import json
import os
import sys
import time
import tracemalloc
from datetime import date, timedelta
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa  # noqa: E402

from bench.run import _app, postgres_bench  # noqa: E402
from eldercare.db import db  # noqa: E402
from eldercare.timeutil import local_today  # noqa: E402

N = int(os.environ.get("BENCH_INSIGHT_N", "100000"))
SMALL = max(N // 10, 1)
SCALE_N = int(os.environ.get("BENCH_INSIGHT_SCALE_N", "0"))
PROVIDERS = int(os.environ.get("BENCH_INSIGHT_PROVIDERS", "1000"))
PER_VOUCHER = 4
PRICE, SUBSIDY = 3000, 1200


def _emit(figure: str, **values) -> None:
    print(json.dumps({"figure": figure} | values), flush=True)


def _run(sql: str, **params) -> None:
    db.session.execute(sa.text(sql), params)


def _month_before(month: date, count: int) -> date:
    for _ in range(count):
        month = (month - timedelta(days=1)).replace(day=1)
    return month


def _seed_month(month: date, n: int) -> None:
    """Vouchers of ``month`` for every bench elder (expired) and ``n`` redeemed redemptions
    on them, PER_VOUCHER each, spread over the providers: two INSERT … SELECT."""
    from vouchers.pool.policy import policy_on

    policy = policy_on("home_community", month)
    _run(
        "INSERT INTO vouchers (resident_id, month, kind, policy_id, district_id, face_value_fen,"
        " balance_fen, held_fen, status, issued_at, closed_at) "
        "SELECT r.id, :month, 'home_community', :policy, r.district_id, :face, 0, 0,"
        " 'expired', :issued, :closed FROM residents r "
        "WHERE r.id <= (SELECT min(id) FROM residents) + :elders - 1",
        month=month,
        policy=policy.id,
        face=policy.monthly_cap_fen,
        issued=month,
        closed=month + timedelta(days=31),
        elders=-(-n // PER_VOUCHER),
    )
    first_user = db.session.scalar(
        sa.text("SELECT min(id) FROM users WHERE username LIKE 'bench.staff.%'")
    )
    first_provider = db.session.scalar(sa.text("SELECT min(id) FROM providers"))
    first_voucher = db.session.scalar(
        sa.text("SELECT min(id) FROM vouchers WHERE month = :month"), {"month": month}
    )
    _run(
        "INSERT INTO redemptions (voucher_id, resident_id, provider_id, staff_user_id,"
        " scan_digest, status, checked_in_at, quantity, price_fen, insurance_fen, subsidy_fen,"
        " copay_fen, ratio_bp, payment_method, held_at, redeemed_at) "
        "SELECT v.id, v.resident_id, :fp + (v.id * 4 + k) % :p, :fu + (v.id * 4 + k) % :p,"
        " 'insight-' || v.id || '-' || k, 'redeemed',"
        " CAST(:at AS timestamp) + (v.id % 600) * interval '1 hour', 1, :price, 0, :subsidy,"
        " :price - :subsidy, 4000, 'cash', :at, :at "
        "FROM vouchers v CROSS JOIN generate_series(1, :per) AS k "
        "WHERE v.month = :month AND (v.id - :first) * :per + k <= :n",
        fp=first_provider,
        fu=first_user,
        p=PROVIDERS,
        at=month + timedelta(days=1),
        price=PRICE,
        subsidy=SUBSIDY,
        per=PER_VOUCHER,
        month=month,
        first=first_voucher,
        n=n,
    )
    db.session.commit()
    db.session.execute(sa.text("ANALYZE"))
    db.session.commit()


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")  # resets VmHWM, the peak resident set (Linux 4.0+)
        return True
    except OSError:
        return False


def _measure(work) -> dict:
    """Seconds, bytes and the peak RSS growth of ``work()`` (which answers bytes read)."""
    db.session.commit()
    reset = _reset_peak_rss()
    before = _rss_kb("VmRSS")
    start = time.perf_counter()
    size = work()
    seconds = time.perf_counter() - start
    growth = (_rss_kb("VmHWM") - before) / 1024 if reset else None
    db.session.commit()
    return {
        "seconds": round(seconds, 3),
        "bytes": size,
        "peak_rss_growth_mb": round(growth, 1) if growth is not None else None,
    }


def _traced_peak(work) -> float:
    db.session.commit()
    tracemalloc.start()
    try:
        work()
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    db.session.commit()
    return round(peak / 2**20, 2)


_COPY_SQL = (
    "COPY (SELECT r.id, r.voucher_id, to_char(v.month, 'YYYY-MM'), d.code, res.id_number,"
    " r.provider_id, p.name, r.service_id, s.category_code, r.status, r.quantity, r.price_fen,"
    " r.insurance_fen, r.subsidy_fen, r.copay_fen, r.payment_method, r.checked_in_at,"
    " r.redeemed_at, r.reversed_at FROM redemptions r"
    " JOIN vouchers v ON v.id = r.voucher_id JOIN districts d ON d.id = v.district_id"
    " JOIN residents res ON res.id = r.resident_id JOIN providers p ON p.id = r.provider_id"
    " LEFT JOIN services s ON s.id = r.service_id"
    " WHERE v.month = '{month}' ORDER BY r.checked_in_at, r.id) TO STDOUT"
)


def _copy(month: date) -> int:
    connection = db.session.connection().connection.driver_connection
    size = 0
    with (
        connection.cursor() as cursor,
        cursor.copy(_COPY_SQL.format(month=month.isoformat())) as copy,
    ):
        for block in copy:
            size += len(block)
    return size


def _xlsx(month: date) -> int:
    from vouchers import exports

    city = SimpleNamespace(district_id=None)  # a city-wide bureau account: no district filter
    statement, order = exports.redemption_query({"month": f"{month:%Y-%m}"}, city)
    size = 0
    for chunk in exports.xlsx_chunks(statement, order, exports.REDEMPTION_COLUMNS, "redemptions"):
        size += len(chunk)
    return size


def _export_figures(month: date, rows: int) -> dict:
    copy = _measure(lambda: _copy(month))
    copy["tracemalloc_peak_mb"] = _traced_peak(lambda: _copy(month))
    _emit("insight.copy_baseline", rows=rows, **copy)
    xlsx = _measure(lambda: _xlsx(month))
    xlsx["tracemalloc_peak_mb"] = _traced_peak(lambda: _xlsx(month))
    _emit(
        "insight.xlsx_export",
        rows=rows,
        **xlsx,
        ratio_to_copy=round(xlsx["seconds"] / copy["seconds"], 1),
        data_mb=round(copy["bytes"] / 2**20, 1),
    )
    return xlsx


def _scale(month: date) -> None:
    from vouchers.insight import figures

    def timed(work) -> float:
        db.session.commit()
        start = time.perf_counter()
        work()
        seconds = time.perf_counter() - start
        db.session.commit()
        return seconds

    baseline = min(
        timed(
            lambda: db.session.execute(
                sa.text(
                    "SELECT r.provider_id, count(*), sum(r.subsidy_fen) FROM redemptions r"
                    " JOIN vouchers v ON v.id = r.voucher_id"
                    " WHERE r.status = 'redeemed' AND v.month = :month GROUP BY r.provider_id"
                ),
                {"month": month},
            ).all()
        )
        for _ in range(2)
    )
    _emit("insight.group_by_baseline", rows=SCALE_N, seconds=round(baseline, 3))
    for name, work in (
        ("by_month", lambda: figures.by_month(None, figures.months_ending(month))),
        ("burn_down", lambda: figures.burn_down(None, figures.months_ending(month))),
        ("by_district", lambda: figures.by_district(None, month)),
        ("by_category", lambda: figures.by_category(None, month)),
        ("by_provider", lambda: figures.by_provider(None, month)),
        ("take_up", lambda: figures.take_up(None, month)),
    ):
        seconds = min(timed(work) for _ in range(2))
        _emit(
            f"insight.figure.{name}",
            rows=SCALE_N,
            seconds=round(seconds, 3),
            ratio=round(seconds / baseline, 2),
        )


def run(url: str) -> None:
    from bench.settlement import _seed_parties

    with _app(url).app_context():
        this_month = local_today().replace(day=1)
        big, small = _month_before(this_month, 1), _month_before(this_month, 2)
        start = time.perf_counter()
        _seed_parties(max(N, SCALE_N), PROVIDERS)
        _seed_month(big, N)
        _seed_month(small, SMALL)
        _emit("insight.seed", rows=N + SMALL, seconds=round(time.perf_counter() - start, 3))
        small_figures = _export_figures(small, SMALL)
        big_figures = _export_figures(big, N)
        _emit(
            "insight.xlsx_growth",
            rows_ratio=round(N / SMALL, 1),
            tracemalloc_peak_ratio=round(
                big_figures["tracemalloc_peak_mb"] / small_figures["tracemalloc_peak_mb"], 2
            ),
            rss_growth_mb=[small_figures["peak_rss_growth_mb"], big_figures["peak_rss_growth_mb"]],
        )
        if SCALE_N:
            scale = _month_before(this_month, 3)
            start = time.perf_counter()
            _seed_month(scale, SCALE_N)
            _emit("insight.scale_seed", rows=SCALE_N, seconds=round(time.perf_counter() - start, 3))
            _scale(scale)


def main() -> None:
    postgres_bench("insight", run)


if __name__ == "__main__":
    main()
