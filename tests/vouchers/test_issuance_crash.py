"""Issuance against a database of its own, committed for real: a process killed part-way,
and (PostgreSQL) two runs at once."""

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask_migrate import upgrade

from assessment.eligibility import eligibility_on
from assessment.models import Assessment
from eldercare import audit, create_app
from eldercare.accounts import User
from eldercare.audit import AuditLog
from eldercare.db import db
from eldercare.residents import District, Resident, compose_resident_id
from eldercare.timeutil import local_today
from tests.conftest import ON_POSTGRES, TEST_CONFIG, fresh_postgres_database
from tests.killed_runs import flask_command
from tests.vouchers.helpers import approved_moderate
from vouchers.issuance.monthly import issue_monthly, month_of, try_issue
from vouchers.models import JournalEntry, JournalLine, LedgerAccount, Voucher
from vouchers.pool import ledger

CAP = 50_000
DISTRICTS = ("210102", "210103")


@contextmanager
def private_database(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield "sqlite:///" + str(tmp_path / "issuance.db")
    else:
        with fresh_postgres_database("eldercare_issuance") as url:
            yield url


@contextmanager
def migrated_app(url: str):
    app = create_app(TEST_CONFIG | {"SQLALCHEMY_DATABASE_URI": url})
    with app.app_context():
        upgrade()
    try:
        yield app
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


def seed_elders(app, n: int) -> list[int]:
    """``n`` eligible elders (moderate, approved today, aged 70-odd) in two districts, with
    money for all of them, by plain bulk inserts: the real services would take minutes."""
    today = local_today()
    with app.app_context():
        districts = [District(code=c, name_zh=f"区{c}", name_en=f"D{c}") for c in DISTRICTS]
        db.session.add_all(districts)
        db.session.flush()
        db.session.execute(
            sa.insert(Resident),
            [
                {
                    "id_number": compose_resident_id(
                        "210102", date(1950, 1, 1) + timedelta(days=i), 101
                    ),
                    "name": f"长者{i}",
                    "birth_date": date(1950, 1, 1) + timedelta(days=i),
                    "district_id": districts[i % 2].id,
                    "street": "南湖街道",
                    "address": f"三好街 {i} 号",
                }
                for i in range(n)
            ],
        )
        ids = list(db.session.scalars(sa.select(Resident.id).order_by(Resident.id)))
        db.session.execute(
            sa.insert(Assessment),
            approved_moderate(ids, today),
        )
        money = (n + 2) * CAP
        ledger.post("topup", "seed", [("funding:central", -money), ("pool:available", money)])
        for code in DISTRICTS:
            account = ledger.district_account_code(code)
            ledger.account(account, create_name=code)
            share = (n // 2 + 1) * CAP
            ledger.post("allocation", "seed", [("pool:available", -share), (account, share)])
        db.session.commit()
        assert eligibility_on(ids[0], today).eligible  # the shortcut makes real eligibility
    return ids


def flask_issue(url: str, month: date, *, crash_after: int | None = None):
    # The process exits abruptly after ``crash_after`` elders (vouchers/cli.py's test hook):
    # a deterministic point; tests/vouchers/test_killed_runs.py kills at random ones.
    env = {"VOUCHERS_ISSUE_CRASH_AFTER": str(crash_after or "")}
    outcome = flask_command(
        url, "vouchers", "issue", "--month", f"{month:%Y-%m}", "--json", env=env
    )
    return outcome.returncode, outcome.out, outcome.err


def check_books(app, expected_count: int | None = None) -> int:
    """No half-issued voucher: the issue entries (one per district and batch) carry exactly
    what the vouchers hold, each voucher has its audit row and the chain holds; the ledger
    verifies; what is outstanding is what the vouchers hold; one voucher per elder."""
    with app.app_context():
        vouchers = dict(db.session.execute(sa.select(Voucher.id, Voucher.face_value_fen)).all())
        issued_fen = db.session.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(JournalLine.amount_fen), 0))
            .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
            .join(LedgerAccount, LedgerAccount.id == JournalLine.account_id)
            .where(JournalEntry.kind == "issue", LedgerAccount.code == "vouchers:outstanding")
        )
        assert issued_fen == sum(vouchers.values())
        causes = set(
            db.session.scalars(
                sa.select(JournalEntry.cause_type).where(JournalEntry.kind == "issue")
            )
        )
        assert causes <= {"issuance", "vouchers"}  # a monthly batch, a single elder's issue
        audited = list(
            db.session.scalars(
                sa.select(AuditLog.object_id).where(AuditLog.action == "voucher.issue")
            )
        )
        assert sorted(audited) == sorted(str(v) for v in vouchers)
        assert audit.verify_chain().ok
        assert ledger.verify_ledger().ok
        assert ledger.balances().get("vouchers:outstanding", 0) == sum(vouchers.values())
        per_elder = db.session.execute(
            sa.select(Voucher.resident_id, sa.func.count()).group_by(Voucher.resident_id)
        ).all()
        assert all(n == 1 for _, n in per_elder)
        db.session.remove()
    if expected_count is not None:
        assert len(vouchers) == expected_count
    return len(vouchers)


BACKENDS = [
    "sqlite",
    pytest.param("postgres", marks=pytest.mark.postgres),
]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_crash_part_way_leaves_no_half_issued_voucher_and_a_rerun_completes(backend, tmp_path):
    month = month_of(local_today())
    with private_database(backend, tmp_path) as url, migrated_app(url) as app:
        ids = seed_elders(app, 600)
        code, out, err = flask_issue(url, month, crash_after=250)
        assert code == 1 and out == "", err  # died before printing a report
        kept = check_books(app)
        assert kept == 300  # the first district's batch, committed before the crash

        code, out, err = flask_issue(url, month)
        assert code == 0, err
        report = json.loads(out)
        assert (report["issued"], report["already_issued"]) == (300, 300)
        assert report["total_fen"] == 300 * CAP and report["left_out"] == []
        check_books(app, expected_count=len(ids))
        with app.app_context():
            holders = set(db.session.scalars(sa.select(Voucher.resident_id)))
            db.session.remove()
        assert holders == set(ids)

        code, out, _ = flask_issue(url, month)
        assert code == 0 and json.loads(out)["issued"] == 0
        check_books(app, expected_count=len(ids))


@pytest.mark.postgres
def test_two_runs_at_once_issue_every_elder_once(tmp_path):
    if not ON_POSTGRES:
        pytest.skip("PostgreSQL-only; set TEST_DATABASE_URL (CI does)")
    month = month_of(local_today())
    with private_database("postgres", tmp_path) as url, migrated_app(url) as app:
        ids = seed_elders(app, 300)

        def run(_):
            with app.app_context():
                try:

                    def commit_each_batch(done):
                        db.session.commit()

                    report = issue_monthly(month, progress=commit_each_batch, batch_size=25)
                    db.session.commit()
                    return report
                finally:
                    db.session.remove()

        with ThreadPoolExecutor(max_workers=2) as threads:
            reports = list(threads.map(run, range(2)))
        assert all(r.issued + r.already_issued == len(ids) for r in reports)
        assert sum(r.issued for r in reports) == len(ids)
        assert sum(r.total_fen for r in reports) == len(ids) * CAP
        check_books(app, expected_count=len(ids))
        with app.app_context():
            reserved = ledger.balances()["vouchers:outstanding"]
            db.session.remove()
        assert reserved == len(ids) * CAP


@pytest.mark.postgres
def test_the_feed_issuing_while_a_monthly_run_goes_issues_every_elder_once(tmp_path):
    """The eligibility feed (one elder at a time, ``try_issue``) racing a monthly run that
    staged the same elders: nobody gets two vouchers, every fen is accounted for."""
    if not ON_POSTGRES:
        pytest.skip("PostgreSQL-only; set TEST_DATABASE_URL (CI does)")
    month = month_of(local_today())
    with private_database("postgres", tmp_path) as url, migrated_app(url) as app:
        ids = seed_elders(app, 300)

        def monthly(_):
            with app.app_context():
                try:
                    report = issue_monthly(
                        month, progress=lambda done: db.session.commit(), batch_size=20
                    )
                    db.session.commit()
                    return report
                finally:
                    db.session.remove()

        def feed(_):
            with app.app_context():
                try:
                    outcomes = []
                    for rid in reversed(ids):  # from the other end of the priority list
                        outcomes.append(
                            try_issue(rid, month, actor_id=None, reason="eligibility").status
                        )
                        db.session.commit()
                    return outcomes
                finally:
                    db.session.remove()

        with ThreadPoolExecutor(max_workers=2) as threads:
            run = threads.submit(monthly, 0)
            fed = threads.submit(feed, 0)
            report, outcomes = run.result(), fed.result()
        by_feed = outcomes.count("issued")
        assert report.issued + by_feed == len(ids)
        assert report.issued + report.already_issued == len(ids)
        assert report.left_out == [] and report.left_out_count == 0
        check_books(app, expected_count=len(ids))


@pytest.mark.postgres
def test_a_withdrawal_from_the_district_while_a_batch_is_sized_cannot_make_it_overdraw(tmp_path):
    """Found in review: a batch read its district's balance, sized itself to it, and posted
    its total later; a withdrawal committing in between made the post refuse (insufficient
    funds) and the whole run fail. The batch now reads the balance with the row locked, so
    the withdrawal waits for the batch (and then finds the money reserved)."""
    from tests.vouchers.interleave import Interleaving, Pause
    from vouchers.errors import InsufficientFunds
    from vouchers.pool import funding as pool

    month = month_of(local_today())
    with private_database("postgres", tmp_path) as url, migrated_app(url) as app:
        seed_elders(app, 20)  # 10 per district, each district funded for 11
        with app.app_context():
            approver_id = db.session.execute(
                sa.insert(User)
                .values(username="approver", display_name="审批人", password_hash="x")
                .returning(User.id)
            ).scalar_one()
            db.session.commit()
            db.session.remove()

        def withdraw():
            district = db.session.scalar(sa.select(District).where(District.code == DISTRICTS[0]))
            pool.allocate(district, -2 * CAP, memo="back", actor=db.session.get(User, approver_id))

        results = Interleaving(
            app, {"issue": Pause("after", "SELECT", "ledger_balances.balance_fen")}
        ).run(issue=lambda: issue_monthly(month), withdraw=withdraw)
        report = results["issue"]
        assert not isinstance(report, Exception), report
        if isinstance(results["withdraw"], InsufficientFunds):
            assert report.issued == 20  # the batch first: one elder's worth was left
        else:
            assert results["withdraw"] is None  # the withdrawal first: one elder left out
            assert (report.issued, report.left_out_count) == (19, 1)
        check_books(app, expected_count=report.issued)
