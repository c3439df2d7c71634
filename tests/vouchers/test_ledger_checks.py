"""The ledger check runs off the page (issue 11): the hourly job, the command and the pool
page's button store a result; the pool page and the API show the last one and its age; the
page itself never reads the whole journal. And the indexes reconciliation and the lists use
are there and usable."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from eldercare.scheduler import JobFailed
from eldercare.timeutil import now_utc
from tests.vouchers.helpers import give_voucher
from vouchers.models import JournalLine, LedgerCheckRun, Voucher
from vouchers.pool import ledger_checks


def _pool(client, language="en") -> str:
    return client.get("/vouchers/bureau/pool", headers={"Accept-Language": language}).get_data(
        as_text=True
    )


def _notice(html: str) -> str:
    found = re.search(r'<div class="notice (\w+)" id="ledger-check".*?</div>', html, re.S)
    return re.sub(r"\s+", " ", found.group(0))


def _count_checks(db_session) -> int:
    return db_session.scalar(sa.select(sa.func.count()).select_from(LedgerCheckRun))


def test_the_pool_page_does_not_verify_the_books(scheme, client, login, db_session):
    """Loading the page reads no journal line: it shows the stored result, and before any
    check it says so (in both languages)."""
    give_voucher(scheme.elder, scheme.today)
    login(scheme.approver)
    engine = db_session.get_bind()
    statements = []

    def seen(conn, cursor, statement, *args):
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        html = _pool(client)
    finally:
        sa.event.remove(engine, "before_cursor_execute", seen)
    assert 'data-checked="never"' in _notice(html)
    assert "The books have not been checked yet" in html
    assert "账目尚未核对过" in _pool(client, "zh-CN")
    # The page's own journal list reads lines of 25 entries by id; no GROUP BY over all.
    whole_journal = [
        s for s in statements if "journal_lines" in s and "GROUP BY journal_lines.account_id" in s
    ]
    assert whole_journal == []
    assert _count_checks(db_session) == 0


def test_the_button_checks_now_and_the_page_shows_when(scheme, client, login, db_session):
    give_voucher(scheme.elder, scheme.today)
    login(scheme.approver)
    response = client.post("/vouchers/bureau/pool/verify", headers={"Accept-Language": "en"})
    assert response.status_code == 302
    run = ledger_checks.last_check()
    assert run.ok and run.requested_by_user_id == scheme.approver.id
    assert run.journal_lines == db_session.scalar(
        sa.select(sa.func.count()).select_from(JournalLine)
    )
    html = _pool(client)
    assert "The books were checked just now and balance to the fen." in html
    assert "(less than a minute ago)" in _notice(html) and 'class="notice ok"' in _notice(html)
    assert 'id="ledger-check-stale"' not in html
    # Three hours later, with no newer check, the page says the hourly check is not running.
    db_session.execute(
        sa.update(LedgerCheckRun)
        .where(LedgerCheckRun.id == run.id)
        .values(
            started_at=now_utc() - timedelta(hours=3),
            finished_at=now_utc() - timedelta(hours=3),
        )
    )
    db_session.expire_all()
    html = _pool(client)
    assert "(3 hours ago)" in _notice(html)
    assert 'id="ledger-check-stale"' in html and "the hourly check is not running" in html
    assert "3 小时前" in _notice(_pool(client, "zh-CN"))


def test_the_job_stores_every_result_and_fails_when_the_books_do_not_balance(
    scheme, app_ctx, db_session
):
    voucher = give_voucher(scheme.elder, scheme.today)
    summary = ledger_checks.verify_ledger_job()
    assert summary["ok"] is True and _count_checks(db_session) == 1
    db_session.execute(sa.update(Voucher).where(Voucher.id == voucher.id).values(balance_fen=1))
    db_session.expire_all()
    with pytest.raises(JobFailed) as failed:
        ledger_checks.verify_ledger_job()
    assert failed.value.summary["subledger_mismatches"][0]["account"] == "vouchers:outstanding"
    run = ledger_checks.last_check()
    assert not run.ok and _count_checks(db_session) == 2  # kept, though the run failed
    assert run.findings["subledger_mismatches"][0]["subledger_fen"] == 1


def test_the_command_checks_stores_and_exits_1_when_the_books_do_not_balance(
    app, scheme, db_session
):
    voucher = give_voucher(scheme.elder, scheme.today)
    result = app.test_cli_runner().invoke(args=["vouchers", "verify-ledger", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["ok"] is True
    db_session.execute(sa.update(Voucher).where(Voucher.id == voucher.id).values(balance_fen=1))
    result = app.test_cli_runner().invoke(args=["vouchers", "verify-ledger"])
    assert result.exit_code == 1 and "THE BOOKS DO NOT BALANCE" in result.output
    assert "vouchers:outstanding" in result.output
    assert _count_checks(db_session) == 2


# --- indexes -------------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("query", "index"),
    [
        (
            "SELECT id FROM journal_entries ORDER BY occurred_at DESC, id DESC LIMIT 26",
            "ix_journal_entries_occurred_at",
        ),
        (
            "SELECT id FROM journal_entries WHERE cause_type = 'redemptions' AND cause_id = '7'",
            "ix_journal_entries_cause",
        ),
        (
            "SELECT id FROM redemptions WHERE checked_in_at >= now() - interval '1 day' "
            "ORDER BY checked_in_at, id",
            "ix_redemptions_checked_in_at",
        ),
    ],
    ids=["journal page", "cause", "redemptions list"],
)
def test_the_queries_can_use_their_index(app_ctx, db_session, query, index):
    """With sequential scans priced out, the planner picks the index: it exists and fits the
    query (on a small test table it would rightly prefer a scan otherwise)."""
    db_session.execute(sa.text("SET LOCAL enable_seqscan = off"))
    plan = "\n".join(db_session.scalars(sa.text(f"EXPLAIN {query}")))
    assert index in plan, plan


def test_clicks_within_a_minute_show_the_last_check_instead_of_scanning_again(
    scheme, client, login, db_session
):
    """Found in review: every click scanned the whole journal and stored a row; a bureau
    officer tapping the button repeatedly loaded the database for nothing."""
    give_voucher(scheme.elder, scheme.today)
    login(scheme.approver)
    for _ in range(3):
        assert client.post("/vouchers/bureau/pool/verify").status_code == 302
    assert _count_checks(db_session) == 1
    html = _pool(client, "zh-CN")
    assert "账目在一分钟内刚核对过" in html
    # A minute later the button checks again.
    db_session.execute(
        sa.update(LedgerCheckRun).values(finished_at=now_utc() - timedelta(minutes=2))
    )
    assert client.post("/vouchers/bureau/pool/verify").status_code == 302
    assert _count_checks(db_session) == 2
