"""Settling and reconciling one month of BENCH_SETTLE_N redemptions across BENCH_SETTLE_PROVIDERS
providers on PostgreSQL, beside a bare GROUP BY over the same rows (issue 12, scale goal).

    TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        BENCH_SETTLE_N=1000000 python bench/settlement.py

In a fresh database of its own (dropped at the end) it seeds, set-based: elders in ten
districts, last month's vouchers (expired, each with four redemptions), the redemptions
(redeemed, cash, 30 yuan each of which 12 subsidy) spread over the providers, and the
journal as the real flow leaves it — one capture entry per redemption (reconciliation checks
each redemption was captured exactly once), the month's issue, hold and expiry in
aggregate. Then, in the same run:

- baseline: ``SELECT provider_id, count(*), sum(subsidy_fen) … GROUP BY provider_id`` over
  the month's redeemed redemptions (what any settlement must at least read);
- ``run_settlement``: the statements and their lines (INSERT … SELECT), committed;
- approval of every statement by a second person (one ledger entry each), committed;
- ``reconcile_month``: the pool identity in total and per district, the sub-ledgers and
  every statement's hash, committed;
- for context, a bare COPY of N rows as wide as a statement line into a table without
  indexes: what writing one row per redemption costs at the least.

Prints one JSON line per figure: seconds, the ratio to the baseline, the peak RSS.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa  # noqa: E402

from bench import sealed_ids  # noqa: E402
from bench.run import _app, beside_baseline, postgres_bench  # noqa: E402
from eldercare.db import db  # noqa: E402
from eldercare.timeutil import local_today  # noqa: E402

N = int(os.environ.get("BENCH_SETTLE_N", "100000"))
PROVIDERS = int(os.environ.get("BENCH_SETTLE_PROVIDERS", "1000"))
PER_VOUCHER = 4
DISTRICTS = 10
PRICE, SUBSIDY = 3000, 1200  # fen per redemption
NO_PASSWORD = "!"  # noqa: S105  (not a hash: nobody signs in as the benchmark users)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _emit(figure: str, **values) -> None:
    print(json.dumps({"figure": figure, "n": N, "providers": PROVIDERS} | values), flush=True)


def _run(sql: str, **params) -> None:
    db.session.execute(sa.text(sql), params)


def _seed(month: date, n: int = N, providers: int = PROVIDERS) -> None:
    _seed_parties(n, providers)
    _seed_month(month, n, providers)


def _seed_parties(n: int, providers: int) -> None:
    """The districts, the elders for ``n`` redemptions a month, the providers and their staff
    (also the crash tests' seed: tests/vouchers/test_killed_runs.py)."""
    elders = -(-n // PER_VOUCHER)
    codes = [f"2199{i:02d}" for i in range(DISTRICTS)]
    _run(
        "INSERT INTO districts (code, name_zh, name_en) "
        "SELECT c, '区' || c, 'D' || c FROM unnest(CAST(:codes AS text[])) AS c",
        codes=codes,
    )
    first_district = db.session.scalar(
        sa.text("SELECT min(id) FROM districts WHERE code = ANY(:codes)"), {"codes": codes}
    )
    _run(
        "INSERT INTO residents (id_number, id_number_hash, id_number_tail_hash, name,"
        " birth_date, district_id, street, address, created_at)"
        " SELECT u.sealed, u.hash, u.tail, '长者' || g,"
        " DATE '1935-01-01' + (g % 7000)::int, :first + (g % :d), '南湖街道', '三好街 ' || g,"
        " now() AT TIME ZONE 'UTC' FROM unnest(CAST(:sealed AS text[]),"
        " CAST(:hashes AS text[]), CAST(:tails AS text[]))"
        " WITH ORDINALITY AS u(sealed, hash, tail, g)",
        first=first_district,
        d=DISTRICTS,
        **sealed_ids.sealed_ids(elders),
    )
    _run(
        "INSERT INTO users (username, password_hash, display_name, active, created_at) "
        "SELECT 'bench.staff.' || g, '!', '护理员' || g, true, now() AT TIME ZONE 'UTC' "
        "FROM generate_series(1, :p) AS g",
        p=providers,
    )
    _run(
        "INSERT INTO providers (name, credit_code, type, status, district_id, address,"
        " latitude, longitude, contact_name, contact_phone, bank_account_name, bank_name,"
        " bank_account_number, created_at) "
        "SELECT '服务商' || g, '91210100' || lpad(g::text, 10, '0'), 'community_station',"
        " 'active', :first + (g % :d), '地址 ' || g, 41.77, 123.43, '联系人', '13800000000',"
        " '服务商' || g, '中国银行沈阳分行', '6217' || lpad(g::text, 15, '0'),"
        " now() AT TIME ZONE 'UTC' FROM generate_series(1, :p) AS g",
        p=providers,
        first=first_district,
        d=DISTRICTS,
    )
    db.session.commit()


def _seed_month(month: date, n: int, providers: int) -> None:
    """One month of the parties' vouchers (expired), ``n`` redemptions and their books."""
    from vouchers.pool import ledger
    from vouchers.pool.policy import policy_on

    codes = [f"2199{i:02d}" for i in range(DISTRICTS)]
    first_district = db.session.scalar(
        sa.text("SELECT min(id) FROM districts WHERE code = ANY(:codes)"), {"codes": codes}
    )
    policy = policy_on("home_community", month)
    face = policy.monthly_cap_fen
    _run(
        "INSERT INTO vouchers (resident_id, month, kind, policy_id, district_id, face_value_fen,"
        " balance_fen, held_fen, status, issued_at, closed_at) "
        "SELECT r.id, :month, 'home_community', :policy, r.district_id, :face, 0, 0,"
        " 'expired', :issued, :closed FROM residents r WHERE r.district_id >= :first",
        month=month,
        policy=policy.id,
        face=face,
        first=first_district,
        issued=month,
        closed=month + timedelta(days=31),
    )
    first_user = db.session.scalar(
        sa.text("SELECT min(id) FROM users WHERE username LIKE 'bench.staff.%'")
    )
    first_provider = db.session.scalar(sa.text("SELECT min(id) FROM providers"))
    _run(
        "INSERT INTO redemptions (voucher_id, resident_id, provider_id, staff_user_id,"
        " scan_digest, status, checked_in_at, quantity, price_fen, insurance_fen, subsidy_fen,"
        " copay_fen, ratio_bp, payment_method, held_at, redeemed_at) "
        "SELECT v.id, v.resident_id, :fp + (v.id * 4 + k) % :p, :fu + (v.id * 4 + k) % :p,"
        " 'bench-' || v.id || '-' || k, 'redeemed', :at, 1, :price, 0, :subsidy,"
        " :price - :subsidy, 4000, 'cash', :at, :at "
        "FROM vouchers v CROSS JOIN generate_series(1, :per) AS k "
        "WHERE v.month = :month AND (v.id - 1) * :per + k <= :n + :offset",
        fp=first_provider,
        fu=first_user,
        p=providers,
        at=month + timedelta(days=10, hours=2),
        price=PRICE,
        subsidy=SUBSIDY,
        per=PER_VOUCHER,
        month=month,
        n=n,
        offset=(
            db.session.scalar(
                sa.text("SELECT min(id) FROM vouchers WHERE month = :month"), {"month": month}
            )
            - 1
        )
        * PER_VOUCHER,
    )
    of_month = {"month": month}
    redeemed = db.session.scalar(
        sa.text(
            "SELECT count(*) FROM redemptions r JOIN vouchers v ON v.id = r.voucher_id"
            " WHERE v.month = :month"
        ),
        of_month,
    )
    vouchers = db.session.scalar(
        sa.text("SELECT count(*) FROM vouchers WHERE month = :month"), of_month
    )
    issued, spent = vouchers * face, redeemed * SUBSIDY
    # The books as the real flow leaves them: money in, allocated, issued, held, one capture
    # entry per redemption, the rest expired back to the districts.
    total = issued + 10_000_000
    ledger.post("topup", "bench", [("funding:central", -total), ("pool:available", total)])
    per_district = db.session.execute(
        sa.text(
            "SELECT d.code, count(v.id) FROM districts d JOIN vouchers v ON v.district_id = d.id"
            " WHERE v.month = :month GROUP BY d.code"
        ),
        of_month,
    ).all()
    for code, count in per_district:
        account = ledger.district_account_code(code)
        ledger.account(account, create_name=code)
        ledger.post(
            "allocation", "bench", [("pool:available", -count * face), (account, count * face)]
        )
        ledger.post(
            "issue", "bench", [(account, -count * face), ("vouchers:outstanding", count * face)]
        )
    ledger.post("hold", "bench", [("vouchers:outstanding", -spent), ("vouchers:held", spent)])
    for code, count in per_district:
        returned = count * face - int(
            db.session.scalar(
                sa.text(
                    "SELECT coalesce(sum(r.subsidy_fen), 0) FROM redemptions r JOIN vouchers v"
                    " ON v.id = r.voucher_id JOIN districts d ON d.id = v.district_id"
                    " WHERE d.code = :code AND v.month = :month"
                ),
                {"code": code, "month": month},
            )
        )
        ledger.post(
            "expire",
            "bench",
            [("vouchers:outstanding", -returned), (ledger.district_account_code(code), returned)],
        )
    _run(
        "INSERT INTO journal_entries (kind, occurred_at, memo, cause_type, cause_id) "
        "SELECT 'capture', r.redeemed_at, 'redemption ' || r.id, 'redemptions', r.id::text "
        "FROM redemptions r JOIN vouchers v ON v.id = r.voucher_id WHERE v.month = :month",
        month=month,
    )
    for code, sign in (("vouchers:held", -1), ("redeemed:unsettled", 1)):
        _run(
            "INSERT INTO journal_lines (entry_id, account_id, amount_fen) "
            "SELECT e.id, a.id, :sign * r.subsidy_fen FROM journal_entries e "
            "JOIN redemptions r ON e.cause_type = 'redemptions' AND e.cause_id = r.id::text "
            "JOIN vouchers v ON v.id = r.voucher_id AND v.month = :month "
            "CROSS JOIN ledger_accounts a WHERE a.code = :code AND e.kind = 'capture'",
            sign=sign,
            code=code,
            month=month,
        )
        _run(
            "UPDATE ledger_balances SET balance_fen = balance_fen + :amount WHERE shard = 0 AND"
            " account_id = (SELECT id FROM ledger_accounts WHERE code = :code)",
            amount=sign * spent,
            code=code,
        )
    db.session.commit()
    db.session.execute(sa.text("ANALYZE"))
    db.session.commit()


def _timed(work) -> tuple[float, object]:
    start = time.perf_counter()
    result = work()
    db.session.commit()
    return time.perf_counter() - start, result


def _group_by_baseline() -> float:
    seconds, rows = _timed(
        lambda: db.session.execute(
            sa.text(
                "SELECT provider_id, count(*), sum(subsidy_fen) FROM redemptions"
                " WHERE status = 'redeemed' GROUP BY provider_id"
            )
        ).all()
    )
    assert len(rows) == PROVIDERS, len(rows)
    return seconds


def _copy_lines() -> float:
    connection = db.session.connection().connection.driver_connection
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE bench_line_copy (redemption_id integer, statement_id integer,"
            " district_id integer, price_fen bigint, insurance_fen bigint, subsidy_fen bigint,"
            " copay_fen bigint, payment_method varchar(8), card_copay_fen bigint)"
        )
    db.session.commit()
    start = time.perf_counter()
    connection = db.session.connection().connection.driver_connection
    with connection.cursor() as cursor, cursor.copy("COPY bench_line_copy FROM STDIN") as copy:
        for i in range(1, N + 1):
            copy.write_row((i, 1 + i % PROVIDERS, 1, PRICE, 0, SUBSIDY, PRICE - SUBSIDY, "cash", 0))
    db.session.commit()
    seconds = time.perf_counter() - start
    db.session.execute(sa.text("DROP TABLE bench_line_copy"))
    db.session.commit()
    return seconds


def run(url: str) -> None:
    from eldercare.accounts import User, UserRole
    from vouchers.integrity.models import AnomalyRule
    from vouchers.settlement.models import Statement
    from vouchers.settlement.reconcile.reconcile import reconcile_month
    from vouchers.settlement.statements import approval
    from vouchers.settlement.statements.periods import settles_from
    from vouchers.settlement.statements.run import run_settlement

    with _app(url).app_context():
        # The anomaly rules' batch has its own benchmark (bench/anomalies.py); here they are
        # off, or the seed's four lunches a day per elder would hold the whole month out of
        # settlement and this would measure an empty run.
        db.session.execute(sa.update(AnomalyRule).values(enabled=False))
        this_month = local_today().replace(day=1)
        month = (this_month - timedelta(days=1)).replace(day=1)
        start = time.perf_counter()
        _seed(month)
        _emit("settlement.seed", seconds=round(time.perf_counter() - start, 3))
        officer = User(username="bench.officer", password_hash=NO_PASSWORD, display_name="结算员")
        checker = User(username="bench.approver", password_hash=NO_PASSWORD, display_name="审核员")
        officer.role_rows.append(UserRole(role="bureau_officer"))
        checker.role_rows.append(UserRole(role="bureau_approver"))
        db.session.add_all([officer, checker])
        db.session.commit()

        baseline = _group_by_baseline()
        _emit("settlement.group_by_baseline", seconds=round(baseline, 3))

        def ratio(seconds: float) -> dict:
            return beside_baseline(seconds, baseline, _peak_rss_mb())

        today = settles_from(month)
        seconds, report = _timed(lambda: run_settlement(month, actor=officer, today=today))
        lines = db.session.scalar(sa.text("SELECT count(*) FROM statement_lines"))
        assert lines == N, (lines, report)
        _emit("settlement.run", **ratio(seconds), lines=lines)

        def approve_all() -> int:
            ids = db.session.scalars(
                sa.select(Statement.id).where(Statement.month == month).order_by(Statement.id)
            ).all()
            for statement_id in ids:
                approval.approve(db.session.get(Statement, statement_id), actor=checker)
            return len(ids)

        seconds, approved = _timed(approve_all)
        _emit("settlement.approve_all", **ratio(seconds), statements=approved)

        seconds, result = _timed(lambda: reconcile_month(month, actor=officer))
        assert result.ok, result.findings
        _emit("settlement.reconcile", **ratio(seconds))

        copy = _copy_lines()
        _emit("settlement.copy_lines_context", seconds=round(copy, 3))


def main() -> None:
    postgres_bench("settlement", run)


if __name__ == "__main__":
    main()
