"""The anomaly rules over one month of BENCH_SETTLE_N redemptions on PostgreSQL, beside a bare
GROUP BY over the same rows (issue 15, scale goal), and what they add to one capture.

    TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        BENCH_SETTLE_N=1000000 python bench/anomalies.py

In a fresh database of its own (dropped at the end) it seeds the month as bench/settlement.py
does (its ``_seed``: elders, expired vouchers, redeemed redemptions across the providers, the
journal), then makes the rows something the rules can work on, set-based (one UPDATE of the
redemptions): every provider sells a lunch at its premises, cleaning and bathing at home and a
respite stay, opens 07:00–21:00 and has five staff; each redemption gets a service, a staff
member and a service day at random, the staff member's visits of a day one after another
(50 minutes apart, 20 to 39 minutes long), the phone's location near the elder's home for home
visits, a device and an address, and a review draw 0..9999. A few in a thousand are anomalies
of each kind: short visits, a visit overlapping the one before, check-ins at 23:30, home
check-ins 5 km away, one phone at many doors, four lunches a day, subsidies of 320 yuan,
elders dead in mid-month and elders on a respite stay all month, two providers taking the
whole remaining voucher on every lunch.

Then, in the same run, with every rule enabled as migration 0024 seeds them:

- baseline: ``SELECT provider_id, count(*), sum(subsidy_fen) … GROUP BY provider_id`` over
  the month's redeemed redemptions;
- each rule's ``detect`` alone over what ``check_batch`` gives it (the month's settleable
  redemptions, as ``run_settlement`` passes them, in the version's days), with the version's
  params: the findings and the statements it issued;
- ``anomalies.check_batch`` over the same: the flags raised, by rule (flags, their audit
  rows); committed;
- capture: ``anomalies.check_captured`` on a few single redemptions of the 1M-row table (each
  rolled back): the statements it issues and its average time, beside a primary-key read.

Prints one JSON line per figure: seconds, the ratio to the baseline, the peak RSS of that step
(VmHWM, reset before it: the seeding's own peak is not the rules').
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sqlalchemy as sa  # noqa: E402

from bench import settlement  # noqa: E402
from bench.run import _app, beside_baseline, postgres_bench  # noqa: E402
from eldercare.db import db  # noqa: E402
from eldercare.timeutil import local_today  # noqa: E402

N, PROVIDERS = settlement.N, settlement.PROVIDERS
STAFF_PER_PROVIDER = 5
CAPTURES = 5
HOURS = {day: [["07:00", "21:00"]] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
# Services every provider sells, kind 0..3 in this order: (category, title, unit, where).
SERVICES = (
    ("meal_help", "助餐", "meal", "provider"),
    ("cleaning", "助洁", "hour", "home"),
    ("bathing", "助浴", "visit", "home"),
    ("respite_stay", "短期托养", "day", "institution"),
)


def _reset_peak_rss() -> None:
    """Start the peak RSS (VmHWM) again from the current RSS (Linux): what a step needs, not
    the seeding before it (``ru_maxrss`` cannot be reset)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_mb() -> float:
    """The peak RSS since the last reset (VmHWM), else over the whole run (``ru_maxrss``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return settlement._peak_rss_mb()


def _emit(figure: str, **values) -> None:
    print(json.dumps({"figure": figure, "n": N, "providers": PROVIDERS} | values), flush=True)


def _run(sql: str, **params) -> None:
    db.session.execute(sa.text(sql), params)


def _enrich(month: date) -> None:
    """The seeded month made realistic for the rules (see the module's docstring)."""
    days = (settlement_month_after(month) - month).days
    _run(
        "INSERT INTO services (provider_id, category_code, title, description, unit, price_fen,"
        " capacity_per_slot, delivery_place, active, created_at)"
        " SELECT p.id, s.code, s.title, '', s.unit, 3000, 1, s.place, true,"
        " now() AT TIME ZONE 'UTC' FROM providers p CROSS JOIN unnest(CAST(:codes AS text[]),"
        " CAST(:titles AS text[]), CAST(:units AS text[]), CAST(:places AS text[]))"
        " AS s(code, title, unit, place)",
        codes=[row[0] for row in SERVICES],
        titles=[row[1] for row in SERVICES],
        units=[row[2] for row in SERVICES],
        places=[row[3] for row in SERVICES],
    )
    _run(
        "UPDATE providers SET opening_hours_json = :hours,"
        " latitude = 41.70 + (id % 100) * 0.0015, longitude = 123.35 + (id / 100 % 100) * 0.0015",
        hours=json.dumps(HOURS),
    )
    _run(
        "UPDATE residents SET latitude = 41.70 + random() * 0.15,"
        " longitude = 123.35 + random() * 0.15,"
        " date_of_death = CASE WHEN id % 2000 = 7 THEN CAST(:died AS date) END",
        died=month + timedelta(days=14),
    )
    _run(
        "INSERT INTO users (username, password_hash, display_name, active, created_at) "
        "SELECT 'bench.staff.x.' || g, '!', '护理员x' || g, true, now() AT TIME ZONE 'UTC' "
        "FROM generate_series(1, :n) AS g",
        n=PROVIDERS * (STAFF_PER_PROVIDER - 1),
    )
    ids = db.session.execute(
        sa.text(
            "SELECT (SELECT min(id) FROM providers),"
            " (SELECT min(id) FROM users WHERE username LIKE 'bench.staff.%'"
            "  AND username NOT LIKE 'bench.staff.x.%'),"
            " (SELECT min(id) FROM users WHERE username LIKE 'bench.staff.x.%')"
        )
    ).one()
    first_provider, first_staff, first_extra = ids
    db.session.execute(sa.text("SELECT setseed(0.15)"))
    # drawn: a service kind, a staff member (0..4 of the provider's), a day at random; four
    # lunches on one day for the elders of one voucher in a thousand; a respite stay all
    # month (its first redemption) with home cleaning beside it for one elder in 2,000.
    # slotted: the staff member's visits of the day, one after another.
    _run(
        """
        WITH drawn AS (
          SELECT r.id, r.provider_id, r.resident_id, r.provider_id - :fp AS pi,
            CASE WHEN r.voucher_id % 1000 = 5 THEN 0
                 WHEN r.resident_id % 2000 = 11 AND r.id = min(r.id) OVER w THEN 3
                 WHEN r.resident_id % 2000 = 11 THEN 1
                 ELSE (ARRAY[0,0,0,0,0,0,1,1,1,2])[1 + floor(random() * 10)::int] END AS kind,
            floor(random() * :spp)::int AS j,
            CASE WHEN r.voucher_id % 1000 = 5 THEN (r.voucher_id % :days)::int
                 WHEN r.resident_id % 2000 = 11 AND r.id = min(r.id) OVER w THEN 0
                 ELSE floor(random() * :days)::int END AS d,
            floor(random() * 20)::int AS len,
            floor(random() * 10000)::int AS draw
          FROM redemptions r WINDOW w AS (PARTITION BY r.voucher_id)
        ), slotted AS (
          SELECT x.*, row_number() OVER (PARTITION BY x.pi, x.j, x.d ORDER BY x.id) - 1 AS slot,
            CASE WHEN x.j = 0 THEN :fu + x.pi ELSE :fx + x.pi * (:spp - 1) + x.j - 1
            END AS staff
          FROM drawn x
        ), timed AS (
          SELECT s.*, sv.id AS service_id, s.kind IN (1, 2) AS home,
            -- naive UTC: Shanghai 07:00 of the day is 23:00 UTC the day before
            CAST(:month AS timestamp) + make_interval(days => s.d)
              + CASE WHEN s.id % 1000 = 3 THEN interval '15 hours 30 minutes'
                     ELSE interval '-1 hours' + make_interval(mins => CAST(s.slot AS int) * 50) END
              - CASE WHEN s.id % 1000 = 2 AND s.slot > 0 THEN interval '40 minutes'
                     ELSE interval '0' END AS at_utc
          FROM slotted s JOIN services sv ON sv.provider_id = s.provider_id
            AND sv.category_code = (ARRAY['meal_help','cleaning','bathing','respite_stay'])
                                   [s.kind + 1]
        )
        UPDATE redemptions r SET
          service_id = t.service_id, staff_user_id = t.staff, checked_in_at = t.at_utc,
          checked_out_at = CASE WHEN t.kind = 3 THEN NULL
            WHEN t.id % 1000 = 1 THEN t.at_utc + interval '2 minutes'
            ELSE t.at_utc + make_interval(mins => 20 + t.len) END,
          quantity = CASE WHEN t.kind = 3 THEN 30 ELSE 1 END,
          held_at = t.at_utc, redeemed_at = t.at_utc + interval '1 hour',
          check_in_latitude = CASE WHEN t.home THEN e.latitude + (random() - 0.5) * 0.001
            + CASE WHEN t.id % 1000 = 4 THEN 0.05 ELSE 0 END END,
          check_in_longitude = CASE WHEN t.home THEN e.longitude + (random() - 0.5) * 0.001 END,
          check_in_distance_m = CASE WHEN NOT t.home THEN NULL
            WHEN t.id % 1000 = 4 THEN 5560 ELSE 40 END,
          check_in_device = CASE WHEN t.home AND t.id / 7 % :shared = 3 THEN 'shared-phone'
            ELSE 'phone-' || t.staff END,
          check_in_ip = CASE WHEN t.home THEN '100.64.' || (t.id % 256) || '.' || (t.id / 256 % 256)
            ELSE '10.' || (t.pi / 256) || '.' || (t.pi % 256) || '.1' END,
          review_draw = t.draw,
          price_fen = CASE WHEN t.id % 1000 = 8 THEN 80000 ELSE r.price_fen END,
          subsidy_fen = CASE WHEN t.id % 1000 = 8 THEN 32000
            WHEN t.pi < 2 AND t.kind = 0 THEN 1000 ELSE r.subsidy_fen END,
          copay_fen = CASE WHEN t.id % 1000 = 8 THEN 48000
            WHEN t.pi < 2 AND t.kind = 0 THEN 2000 ELSE r.copay_fen END
        FROM timed t JOIN residents e ON e.id = t.resident_id
        WHERE r.id = t.id
        """,
        fp=first_provider,
        fu=first_staff,
        fx=first_extra,
        spp=STAFF_PER_PROVIDER,
        days=days,
        month=month,
        # about twelve home visits a day on the shared phone, whatever N
        shared=max(N // 900, 2),
    )
    db.session.commit()
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.exec_driver_sql("VACUUM ANALYZE")


def settlement_month_after(month: date) -> date:
    return (month + timedelta(days=32)).replace(day=1)


class Statements:
    """Counts the SQL statements the session issues while it is on."""

    def __init__(self):
        self.count = 0

    def __enter__(self):
        self.engine = db.engine
        sa.event.listen(self.engine, "before_cursor_execute", self._one)
        return self

    def __exit__(self, *exc):
        sa.event.remove(self.engine, "before_cursor_execute", self._one)

    def _one(self, *args, **kwargs):
        self.count += 1


def run(url: str) -> None:
    from vouchers.integrity import anomalies
    from vouchers.integrity.rules import RULES
    from vouchers.models import Redemption
    from vouchers.settlement.statements import periods

    with _app(url).app_context():
        this_month = local_today().replace(day=1)
        month = (this_month - timedelta(days=1)).replace(day=1)
        last_day = settlement_month_after(month) - timedelta(days=1)
        start = time.perf_counter()
        settlement._seed(month)
        _emit("anomalies.seed", seconds=round(time.perf_counter() - start, 3))
        start = time.perf_counter()
        _enrich(month)
        _emit("anomalies.enrich", seconds=round(time.perf_counter() - start, 3))

        settlement._group_by_baseline()  # warm the cache for both
        baseline = settlement._group_by_baseline()
        _emit("anomalies.group_by_baseline", seconds=round(baseline, 3))

        def ratio(seconds: float) -> dict:
            return beside_baseline(seconds, baseline, _peak_rss_mb())

        candidates = periods.settleable_lines(month).with_only_columns(Redemption.id)
        versions = anomalies.versions_between(month, last_day)
        assert set(versions) == set(RULES), set(RULES) - set(versions)
        params = {code: dict(v[0].params or {}) for code, v in versions.items()}

        # Each rule alone first, on what check_batch gives it (the version's part of the
        # settleable redemptions), with the version's params.
        for code, rule in RULES.items():
            version = versions[code][0]
            part = anomalies._in_force_part(candidates, version, month, last_day)
            _reset_peak_rss()
            with Statements() as counted:
                seconds, found = settlement._timed(
                    lambda rule=rule, part=part, code=code: list(rule.detect(part, params[code]))
                )
            _emit(
                f"anomalies.detect.{code}",
                **ratio(seconds),
                statements=counted.count,
                findings=len(found),
            )

        _reset_peak_rss()
        with Statements() as counted:
            seconds, flagged = settlement._timed(
                lambda: anomalies.check_batch(candidates, month, last_day)
            )
        _emit(
            "anomalies.check_batch",
            **ratio(seconds),
            statements=counted.count,
            flags=sum(flagged.values()),
            by_rule=dict(sorted(flagged.items())),
        )

        _captures(ratio)


def _captures(ratio) -> None:
    """check_captured on a few single redemptions, each rolled back."""
    from vouchers.integrity import anomalies
    from vouchers.integrity.rules import RULES
    from vouchers.models import Redemption

    # Ordinary home visits and lunches (no finding: the common case), spread over the table.
    ids = db.session.scalars(
        sa.text(
            "SELECT id FROM redemptions WHERE review_draw >= 500 AND id % 1000 > 10"
            " AND id % 97 = 0 ORDER BY id LIMIT :n"
        ),
        {"n": CAPTURES},
    ).all()
    db.session.commit()
    _reset_peak_rss()
    capture, statements, pk_read = 0.0, 0, 0.0
    per_rule: dict[str, list] = {code: [0.0, 0] for code, r in RULES.items() if r.at_capture}
    for rid in ids:
        start = time.perf_counter()
        db.session.execute(sa.text("SELECT * FROM redemptions WHERE id = :id"), {"id": rid}).one()
        pk_read += time.perf_counter() - start
        redemption = db.session.get(Redemption, rid)
        with Statements() as counted:
            start = time.perf_counter()
            anomalies.check_captured(redemption)
            capture += time.perf_counter() - start
        statements += counted.count
        # Each rule alone, as the capture runs it (one redemption as the candidates).
        one = sa.select(Redemption.id).where(Redemption.id == rid, Redemption.status == "redeemed")
        day = local_today(redemption.checked_in_at)
        versions = anomalies.versions_between(day, day)
        for code in per_rule:
            with Statements() as counted:
                start = time.perf_counter()
                RULES[code].detect(one, dict(versions[code][0].params or {}))
                per_rule[code][0] += time.perf_counter() - start
            per_rule[code][1] += counted.count
        db.session.rollback()
    n = len(ids)
    _emit(
        "anomalies.capture",
        captures=n,
        seconds_each=round(capture / n, 4),
        statements_each=statements / n,
        pk_read_seconds_each=round(pk_read / n, 5),
        peak_rss_mb=round(_peak_rss_mb(), 1),
    )
    for code, (seconds, count) in per_rule.items():
        _emit(
            f"anomalies.capture.{code}",
            seconds_each=round(seconds / n, 4),
            statements_each=count / n,
        )


def main() -> None:
    # BENCH_KEEP_DB=1 keeps the database, to EXPLAIN the rules' queries afterwards.
    postgres_bench("anomalies", run, keep=bool(os.environ.get("BENCH_KEEP_DB")))


if __name__ == "__main__":
    main()
