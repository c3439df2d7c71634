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
from vouchers.models import JournalEntry, JournalLine, LedgerAccount, LedgerBalance
from vouchers.settlement import reconcile
from vouchers.settlement.models import SettlementException, StatementLine


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
