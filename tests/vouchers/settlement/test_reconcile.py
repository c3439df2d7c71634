"""Reconciliation (issue 12, item 7): a consistent settled world reconciles green; each
injected fault (an intent at the gateway the platform does not know, a statement line edited
in the database, a ledger balance nudged by one fen, a missing journal entry) is caught, turns
the page red, makes ``flask reconcile`` exit non-zero and lands in the queue once."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from eldercare.db import db
from tests.vouchers.settlement.conftest import spend
from tests.vouchers.settlement.recon_builders import approve_statement, pay_statement
from vouchers.models import JournalEntry
from vouchers.settlement.models import SettlementException, StatementLine
from vouchers.settlement.reconcile import reconcile


@pytest.fixture
def world(shop, bureau):
    """Three redemptions: one in a paid statement, one in an approved one, one unsettled."""
    first, second, third = spend(shop, 1500), spend(shop, 1400), spend(shop, 1200)
    paid = approve_statement([first], prepared_by=bureau.officer, approved_by=bureau.approver)
    pay_statement(paid, actor=bureau.officer)
    approved = approve_statement([second], prepared_by=bureau.officer, approved_by=bureau.approver)
    db.session.commit()
    shop.month = shop.voucher.month
    shop.paid, shop.approved, shop.unsettled = paid, approved, third
    return shop


def _run(month):
    run = reconcile.reconcile_month(month)
    db.session.commit()
    return run


def _queue(kind=None):
    query = sa.select(SettlementException).order_by(SettlementException.id)
    if kind:
        query = query.where(SettlementException.kind == kind)
    return list(db.session.scalars(query))


def test_a_consistent_world_reconciles_green(world):
    run = _run(world.month)
    assert run.ok, run.findings["mismatches"]
    identity = run.findings["identity"]
    assert identity["difference"] == 0 and identity["ok"]
    terms = identity["terms"]
    assert terms["settled"] == world.paid.subsidy_fen
    assert terms["provider_payable"] == world.approved.subsidy_fen
    assert terms["unsettled"] == world.unsettled.subsidy_fen
    [district] = [d for d in run.findings["districts"] if d["code"] == world.heping.code]
    assert district["ok"] and district["terms"]["paid"] == world.paid.subsidy_fen
    assert district["terms"]["approved"] == world.approved.subsidy_fen
    assert run.findings["gateway"] == {"status": "not_checked"}
    assert _queue() == []


def test_a_statement_line_edited_in_the_database_is_caught(world):
    bypass_freeze(
        "UPDATE statement_lines SET subsidy_fen = subsidy_fen + 100 WHERE redemption_id = :r",
        {"r": _line(world)},
    )
    run = _run(world.month)
    assert not run.ok
    kinds = {m["kind"] for m in run.findings["mismatches"]}
    assert {"statement.hash", "statement.totals", "identity.district"} <= kinds
    assert len(_queue("statement.hash")) == 1
    _run(world.month)
    assert len(_queue("statement.hash")) == 1  # found again: the same row


def _line(world) -> int:
    return db.session.scalar(
        sa.select(StatementLine.redemption_id).where(
            StatementLine.statement_id == world.approved.id
        )
    )


def bypass_freeze(sql: str, params: dict) -> None:
    """Change frozen or append-only rows as an intruder with database access would: on
    PostgreSQL with triggers off for this connection, on SQLite by dropping the triggers
    and putting them back."""
    connection = db.session.connection()
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("SET session_replication_role = replica")
        connection.execute(sa.text(sql), params)
        connection.exec_driver_sql("SET session_replication_role = DEFAULT")
    else:
        triggers = connection.execute(
            sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
        ).all()
        for name, _ in triggers:
            connection.exec_driver_sql(f'DROP TRIGGER "{name}"')
        connection.execute(sa.text(sql), params)
        for _, create in triggers:
            connection.exec_driver_sql(create)
    db.session.commit()


def test_a_balance_nudged_by_one_fen_is_caught(world):
    bypass_freeze(
        "UPDATE ledger_balances SET balance_fen = balance_fen + 1 WHERE shard = 0 AND "
        "account_id = (SELECT id FROM ledger_accounts WHERE code = 'settled')",
        {},
    )
    run = _run(world.month)
    assert not run.ok
    kinds = {m["kind"] for m in run.findings["mismatches"]}
    assert {"identity.total", "ledger.drift", "ledger.subledger"} <= kinds
    assert run.findings["identity"]["difference"] == -1
    _run(world.month)
    assert len(_queue("identity.total")) == 1


def test_a_missing_journal_entry_is_caught(world):
    entry = db.session.scalar(
        sa.select(JournalEntry.id).where(
            JournalEntry.kind == "pay", JournalEntry.cause_id == str(world.paid.id)
        )
    )
    bypass_freeze("DELETE FROM journal_lines WHERE entry_id = :e", {"e": entry})
    bypass_freeze("DELETE FROM journal_entries WHERE id = :e", {"e": entry})
    run = _run(world.month)
    assert not run.ok
    kinds = {m["kind"] for m in run.findings["mismatches"]}
    assert {"ledger.drift", "statement.entries"} <= kinds
    assert len(_queue("statement.entries")) == 1


# --------------------------------------------------------------------------- the command


def _cli(app, *args):
    return app.test_cli_runner().invoke(args=["reconcile", *args])


def test_the_command_exits_zero_when_green_and_non_zero_while_a_finding_is_open(app, world):
    month = f"{world.month:%Y-%m}"
    green = _cli(app, "--month", month)
    assert green.exit_code == 0, green.output
    assert "RECONCILED" in green.output and "difference                           0" in green.output
    as_json = json.loads(_cli(app, "--month", month, "--json").output)
    assert as_json["ok"] is True and as_json["identity"]["difference"] == 0
    bypass_freeze(
        "UPDATE ledger_balances SET balance_fen = balance_fen - 1 WHERE shard = 0 AND "
        "account_id = (SELECT id FROM ledger_accounts WHERE code = 'pool:available')",
        {},
    )
    red = _cli(app, "--month", month)
    assert red.exit_code == 1 and "NOT RECONCILED" in red.output
    assert "identity.total" in red.output
    # Put right, the finding is still open until someone resolves it in writing.
    bypass_freeze(
        "UPDATE ledger_balances SET balance_fen = balance_fen + 1 WHERE shard = 0 AND "
        "account_id = (SELECT id FROM ledger_accounts WHERE code = 'pool:available')",
        {},
    )
    still = _cli(app, "--month", month, "--json")
    assert still.exit_code == 1
    assert json.loads(still.output)["ok"] is True
    assert json.loads(still.output)["open_exceptions"] >= 1
    assert _cli(app, "--month", "2026-13").exit_code == 2


def test_the_daily_job_reconciles_last_month_and_this_month(world, app):
    from eldercare.scheduler import JobFailed
    from vouchers.settlement.jobs import JOBS

    [job] = [j for j in JOBS if j.id == "settlement-reconcile"]
    result = job.func()
    assert len(result) == 2 and all(r["ok"] for r in result.values())
    bypass_freeze(
        "UPDATE ledger_balances SET balance_fen = balance_fen + 1 WHERE shard = 0 AND "
        "account_id = (SELECT id FROM ledger_accounts WHERE code = 'settled')",
        {},
    )
    with pytest.raises(JobFailed):
        job.func()
    assert len(_queue("identity.total")) == 1


# --------------------------------------------------------------------------- the pages


def _page(client, month, language="en"):
    return client.get(
        f"/settlement/reconcile?month={month:%Y-%m}", headers={"Accept-Language": language}
    ).get_data(as_text=True)


def _state(html: str) -> str:
    import re

    return re.search(r'id="reconcile-state"[^>]*data-state="(\w+)"', html).group(1)


def test_the_page_is_green_then_red_until_the_finding_is_resolved_in_writing(
    world, client, login, bureau, db_session
):
    from eldercare.audit import AuditLog

    login(bureau.officer)
    assert _state(_page(client, world.month)) == "never"
    client.post("/settlement/reconcile", data={"month": f"{world.month:%Y-%m}"})
    html = _page(client, world.month)
    assert _state(html) == "green" and 'data-term="settled"' in html
    bypass_freeze(
        "UPDATE statement_lines SET price_fen = price_fen + 1 WHERE redemption_id = :r",
        {"r": _line(world)},
    )
    # Clicked again within the minute: the last run is shown, nothing is rerun.
    client.post("/settlement/reconcile", data={"month": f"{world.month:%Y-%m}"})
    assert _state(_page(client, world.month)) == "green"
    run = reconcile.reconcile_month(world.month)
    db.session.commit()
    assert not run.ok
    html = _page(client, world.month)
    assert _state(html) == "red" and 'id="check-statement" data-status="red"' in html
    assert "对账未通过" in _page(client, world.month, "zh-CN")
    [finding] = _queue("statement.hash")
    queue_html = client.get("/settlement/exceptions").get_data(as_text=True)
    assert f'id="exception-{finding.id}"' in queue_html
    assert finding.evidence["stored"] in queue_html and finding.evidence["now"] in queue_html
    # A resolution needs words: refused, nothing changed.
    refused = client.post(f"/settlement/exceptions/{finding.id}/resolve", data={"resolution": " "})
    assert refused.status_code == 422
    db.session.refresh(finding)
    assert finding.status == "open"
    done = client.post(
        f"/settlement/exceptions/{finding.id}/resolve",
        data={"resolution": "Line restored from the approved PDF; DBA access revoked."},
    )
    assert done.status_code == 302
    db.session.refresh(finding)
    assert finding.status == "resolved" and finding.resolved_by_user_id == bureau.officer.id
    audited = db_session.scalar(
        sa.select(sa.func.count())
        .select_from(AuditLog)
        .where(AuditLog.action == "settlement.exception_resolve")
    )
    assert audited == 1
    # Still edited: found again, it opens a new row (the resolved one stays resolved).
    reconcile.reconcile_month(world.month)
    db.session.commit()
    rows = _queue("statement.hash")
    assert [r.status for r in rows] == ["resolved", "open"]


def test_a_district_officer_sees_only_their_district(world, client, login, factory):
    other = factory.district("210103")
    heping_officer = factory.user("recon.heping", roles=["bureau_officer"], district=world.heping)
    other_officer = factory.user("recon.other", roles=["bureau_officer"], district=other)
    bypass_freeze(
        "UPDATE statement_lines SET subsidy_fen = subsidy_fen + 1 WHERE redemption_id = :r",
        {"r": _line(world)},
    )
    reconcile.reconcile_month(world.month)
    db.session.commit()
    [district_finding] = _queue("identity.district")
    assert district_finding.district_id == world.heping.id
    login(world.station_admin)  # a provider's admin: not the bureau's page
    assert client.get("/settlement/reconcile").status_code == 403
    assert client.get("/settlement/exceptions").status_code == 403
    client.post("/logout")
    login(heping_officer)
    html = _page(client, world.month)
    assert f'data-district="{world.heping.code}"' in html and 'id="identity"' not in html
    assert f'id="exception-{district_finding.id}"' in client.get("/settlement/exceptions").get_data(
        as_text=True
    )
    # Reading only: no reconciling, no resolving.
    assert client.post("/settlement/reconcile", data={}).status_code == 403
    client.post("/logout")
    login(other_officer)
    html = _page(client, world.month)
    assert f'data-district="{world.heping.code}"' not in html
    queue_html = client.get("/settlement/exceptions?status=all").get_data(as_text=True)
    assert f'id="exception-{district_finding.id}"' not in queue_html
    resolve = client.post(
        f"/settlement/exceptions/{district_finding.id}/resolve",
        data={"resolution": "not mine to resolve at all"},
    )
    assert resolve.status_code == 403


# --------------------------------------------------------------------------- the API


def _bearer(user, scopes):
    from eldercare.tokens import issue_token

    secret = issue_token(user, "finance", scopes)[1]
    db.session.commit()
    return {"Authorization": f"Bearer {secret}"}


def test_the_api_reconciles_lists_and_resolves(world, client, bureau, factory):
    write = _bearer(bureau.officer, ["bureau:write", "read"])
    month = f"{world.month:%Y-%m}"
    bad = client.post(
        "/api/v1/settlement/reconciliations", json={"month": "2026-13"}, headers=write
    )
    assert bad.status_code == 422
    bypass_freeze(
        "UPDATE statement_lines SET subsidy_fen = subsidy_fen + 5 WHERE redemption_id = :r",
        {"r": _line(world)},
    )
    made = client.post("/api/v1/settlement/reconciliations", json={"month": month}, headers=write)
    assert made.status_code == 201, made.get_json()
    assert made.get_json()["ok"] is False and made.get_json()["open_exceptions"] >= 1
    runs = client.get(f"/api/v1/settlement/reconciliations?month={month}", headers=write)
    assert [r["id"] for r in runs.get_json()["runs"]] == [made.get_json()["id"]]
    listed = client.get("/api/v1/settlement/exceptions?status=open", headers=write).get_json()
    hashes = [x for x in listed["exceptions"] if x["kind"] == "statement.hash"]
    assert len(hashes) == 1 and hashes[0]["evidence"]["statement"] == world.approved.id
    path = f"/api/v1/settlement/exceptions/{hashes[0]['id']}/resolve"
    assert client.post(path, json={"resolution": ""}, headers=write).status_code == 422
    done = client.post(path, json={"resolution": "Restored from the approved copy."}, headers=write)
    assert done.status_code == 200 and done.get_json()["status"] == "resolved"
    assert client.post(path, json={"resolution": "Again, twice."}, headers=write).status_code == 409
    district = factory.user("recon.api.d", roles=["bureau_officer"], district=world.heping)
    scoped = _bearer(district, ["bureau:write", "read"])
    assert (
        client.post(
            "/api/v1/settlement/reconciliations", json={"month": month}, headers=scoped
        ).status_code
        == 403
    )
    seen = client.get("/api/v1/settlement/exceptions?status=all", headers=scoped).get_json()
    assert all(x["district_id"] == world.heping.id for x in seen["exceptions"])
    assert [x["kind"] for x in seen["exceptions"]] == ["identity.district"]
    assert not any(x["kind"] == "statement.hash" for x in seen["exceptions"])


def test_a_clawback_netted_against_the_next_statement_still_reconciles(world, bureau):
    """The paid statement's redemption is reversed (the provider owes it back), then netted
    against the next statement: receivable, returns and the pool all agree with the rows."""
    from tests.vouchers.settlement.recon_builders import claw_back

    clawed = db.session.get(type(world.unsettled), _paid_line(world))
    claw_back(clawed, actor=bureau.approver)
    db.session.commit()
    run = _run(world.month)
    assert run.ok, run.findings["mismatches"]
    owed = clawed.subsidy_fen
    assert ledger_balance(f"provider:{world.unsettled.provider_id}:receivable") == owed
    netted = owed  # the next statement (subsidy 480 + 600 fen) covers it all
    later = approve_statement(
        [world.unsettled, spend(world, 1500)],
        prepared_by=bureau.officer,
        approved_by=bureau.approver,
        clawback_fen=netted,
    )
    pay_statement(later, actor=bureau.officer)
    db.session.commit()
    run = _run(world.month)
    assert run.ok, run.findings["mismatches"]
    assert run.findings["identity"]["clawback_pair"] == 0
    assert ledger_balance(f"provider:{world.unsettled.provider_id}:receivable") == owed - netted
    # The netted money is back in the city's pool, not in the district: the district's
    # identity keeps the clawed-back line in its paid statement.
    [district] = [d for d in run.findings["districts"] if d["code"] == world.heping.code]
    assert district["ok"] and district["terms"]["unsettled"] == 0
    assert later.subsidy_fen - later.clawback_fen == 480


def _paid_line(world) -> int:
    return db.session.scalar(
        sa.select(StatementLine.redemption_id).where(StatementLine.statement_id == world.paid.id)
    )


def ledger_balance(code: str) -> int:
    from vouchers.pool import ledger

    return ledger.balances([code])[code]


def _edit_line(world):
    bypass_freeze(
        "UPDATE statement_lines SET subsidy_fen = subsidy_fen - 1 WHERE redemption_id = :r",
        {"r": _line(world)},
    )
    return "statement.hash"


def _nudge(world):
    bypass_freeze(
        "UPDATE ledger_balances SET balance_fen = balance_fen + 1 WHERE shard = 0 AND "
        "account_id = (SELECT id FROM ledger_accounts WHERE code = 'pool:available')",
        {},
    )
    return "identity.total"


def _drop_entry(world):
    entry = db.session.scalar(
        sa.select(JournalEntry.id).where(
            JournalEntry.kind == "settle", JournalEntry.cause_id == str(world.approved.id)
        )
    )
    bypass_freeze("DELETE FROM journal_lines WHERE entry_id = :e", {"e": entry})
    bypass_freeze("DELETE FROM journal_entries WHERE id = :e", {"e": entry})
    return "statement.entries"


@pytest.mark.parametrize("fault", [_edit_line, _nudge, _drop_entry])
def test_each_fault_turns_the_page_red_fails_the_command_and_is_queued_once(
    fault, world, app, client, login, bureau
):
    month = f"{world.month:%Y-%m}"
    assert _cli(app, "--month", month).exit_code == 0
    kind = fault(world)
    assert _cli(app, "--month", month).exit_code == 1
    login(bureau.officer)
    assert _state(_page(client, world.month)) == "red"
    assert _cli(app, "--month", month).exit_code == 1  # found again
    assert len(_queue(kind)) == 1


def test_the_bank_checks_catch_a_transfer_without_a_result_and_a_wrong_amount(world):
    """A transfer marked paid without a bank result file; a paid amount that is not what the
    statement owes; a statement the bank paid while the books still have it unpaid."""
    transfer = world.paid.id
    bypass_freeze(
        "UPDATE bank_transfers SET result_import_id = NULL, amount_fen = amount_fen + 1 "
        "WHERE statement_id = :s",
        {"s": transfer},
    )
    run = _run(world.month)
    kinds = {m["kind"] for m in run.findings["mismatches"]}
    assert {"bank.paid_without_import", "bank.amount"} <= kinds
    [amount] = [m for m in run.findings["mismatches"] if m["kind"] == "bank.amount"]
    assert amount["evidence"]["paid_amount_fen"] == amount["evidence"]["payable_fen"] + 1
    bypass_freeze("UPDATE statements SET status = 'approved' WHERE id = :s", {"s": world.paid.id})
    run = _run(world.month)
    assert "bank.paid_not_booked" in {m["kind"] for m in run.findings["mismatches"]}


def _statements_run(month) -> int:
    engine = db.session.get_bind()
    seen = []

    def count(conn, cursor, statement, *args):
        if not statement.startswith(("SAVEPOINT", "RELEASE SAVEPOINT")):  # the test's session
            seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        reconcile.reconcile_month(month)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    db.session.rollback()
    return seen


def test_reconciliation_is_set_based(world, bureau):
    """The SQL a reconciliation runs does not grow with the redemptions, the statements or
    their lines: more of each run the same statements."""
    before = _statements_run(world.month)
    more = [spend(world, 1000) for _ in range(4)]
    approve_statement(more[:3], prepared_by=bureau.officer, approved_by=bureau.approver)
    db.session.commit()
    after = _statements_run(world.month)
    # One more frozen statement: the hashes are still one streamed pass over the lines.
    extra = [s for s in after if s not in before]
    assert len(after) == len(before), extra
