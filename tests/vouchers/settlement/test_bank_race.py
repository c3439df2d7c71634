"""On PostgreSQL, with real commits from threads: two bureau officers make a bank batch at
the same moment. Each statement lands in one live transfer, whoever wins."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import date

import pytest
import sqlalchemy as sa

from eldercare.accounts import User
from eldercare.credit_codes import compose_credit_code
from eldercare.db import db
from eldercare.errors import Conflict
from marketplace import providers
from marketplace.sample_documents import give_required_documents
from tests.conftest import Factory
from tests.vouchers.settlement.builders import result_csv
from vouchers.models import JournalEntry
from vouchers.pool import ledger
from vouchers.settlement.bank import bank_files, bank_results
from vouchers.settlement.models import BankBatch, BankTransfer, Statement

pytestmark = pytest.mark.postgres
STATEMENTS = 20


def _world(app) -> list[int]:
    with app.app_context():
        factory = Factory(app, db.session)
        district = factory.district("210102", "和平区")
        officers = [factory.user(f"race.officer{i}", roles=["bureau_officer"]) for i in (1, 2)]
        admin = factory.user("race.admin", roles=["provider_admin"])
        provider = providers.apply_provider(
            applicant=admin,
            name="南湖社区养老服务站",
            credit_code=compose_credit_code("52", district.code, "NH000001"),
            type="community_station",
            district=district,
            address="三好街 1 号",
            latitude=41.776,
            longitude=123.434,
            service_districts=[district],
            contact_name="联系人",
            contact_phone="13800001111",
            bank_account_name="南湖社区养老服务站",
            bank_name="盛京银行",
            bank_account_number="6222000011112222",
        )
        give_required_documents(provider, uploader=admin)
        providers.approve(provider)
        db.session.add_all(
            Statement(
                provider_id=provider.id,
                month=date(2026, 10, 1),
                seq=seq,
                status="approved",
                line_count=1,
                subsidy_fen=1000 * seq,
                card_copay_fen=0,
                clawback_fen=0,
                payee_account_name=provider.bank_account_name,
                payee_bank_name=provider.bank_name,
                payee_account_number=provider.bank_account_number,
                prepared_by_user_id=admin.id,
            )
            for seq in range(1, STATEMENTS + 1)
        )
        ids = [o.id for o in officers]
        db.session.commit()
        db.session.remove()
        return ids


def _make_batch(app, officer_id, barrier):
    with app.app_context():
        try:
            officer = db.session.get(User, officer_id)
            barrier.wait()
            batch = bank_files.create_batch(actor=officer)
            db.session.commit()
            return ("batch", batch.line_count)
        except Conflict:
            db.session.rollback()
            return ("conflict", 0)
        finally:
            db.session.remove()


def _race(app) -> list[tuple]:
    officer_ids = _world(app)
    barrier = threading.Barrier(2)
    with ThreadPoolExecutor(max_workers=2) as threads:
        return list(threads.map(lambda i: _make_batch(app, i, barrier), officer_ids))


def _live_per_statement(app) -> dict:
    with app.app_context():
        counts = dict(
            db.session.execute(
                sa.select(BankTransfer.statement_id, sa.func.count())
                .where(BankTransfer.status != "failed")
                .group_by(BankTransfer.statement_id)
            ).all()
        )
        batches = db.session.scalar(sa.select(sa.func.count()).select_from(BankBatch))
        db.session.remove()
        return counts, batches


def test_two_batches_at_once_put_each_statement_in_one(private_app):
    results = _race(private_app)
    assert sorted(results) == [("batch", STATEMENTS), ("conflict", 0)]
    counts, batches = _live_per_statement(private_app)
    assert batches == 1 and len(counts) == STATEMENTS and set(counts.values()) == {1}


def test_without_the_lock_the_index_still_refuses_a_second_payment(private_app, monkeypatch):
    monkeypatch.setattr(bank_files, "_serialize", lambda: None)
    results = _race(private_app)
    assert ("batch", STATEMENTS) in results
    assert results.count(("conflict", 0)) == 1  # refused by an index, or found nothing left
    counts, batches = _live_per_statement(private_app)
    assert batches == 1 and len(counts) == STATEMENTS and set(counts.values()) == {1}


def _sent_batch(app) -> tuple[int, int, list]:
    """The world's statements approved in the books and sent in one batch."""
    officer_ids = _world(app)
    with app.app_context():
        officer = db.session.get(User, officer_ids[0])
        for statement in db.session.scalars(sa.select(Statement)):
            code = f"provider:{statement.provider_id}:payable"
            ledger.account(code, create_name="payable")
            ledger.post(
                "settle",
                "test approval",
                [("redeemed:unsettled", -statement.subsidy_fen), (code, statement.subsidy_fen)],
                cause=("statements", statement.id),
            )
        batch = bank_files.create_batch(actor=officer)
        lines = [(t.reference, t.payee_account_number, t.amount_fen) for t in batch.transfers]
        batch_id = batch.id
        db.session.commit()
        db.session.remove()
        return batch_id, officer_ids, lines


def _import(app, batch_id, officer_id, data, name, barrier):
    with app.app_context():
        try:
            officer = db.session.get(User, officer_id)
            batch = db.session.get(BankBatch, batch_id)
            barrier.wait()
            outcome = bank_results.import_result(batch, data, name, actor=officer)
            db.session.commit()
            return ("imported", len(outcome.paid), len(outcome.already))
        except Conflict:
            db.session.rollback()
            return ("conflict", 0, 0)
        finally:
            db.session.remove()


def _pay_entries(app) -> dict:
    with app.app_context():
        counts = dict(
            db.session.execute(
                sa.select(JournalEntry.cause_id, sa.func.count())
                .where(JournalEntry.kind == "pay")
                .group_by(JournalEntry.cause_id)
            ).all()
        )
        paid = db.session.scalar(sa.select(sa.func.count()).where(Statement.status == "paid"))
        db.session.remove()
        return counts, paid


@pytest.mark.parametrize("same_file", [True, False])
def test_two_imports_at_once_pay_each_line_once(private_app, same_file):
    batch_id, officer_ids, lines = _sent_batch(private_app)
    rows = [(ref, number, fen, "成功", "") for ref, number, fen in lines]
    first = result_csv(rows)
    # Another file with the same lines (a copy re-exported by the bank: other bytes).
    second = first if same_file else result_csv(list(reversed(rows)))
    barrier = threading.Barrier(2)
    with ThreadPoolExecutor(max_workers=2) as threads:
        results = list(
            threads.map(
                lambda job: _import(private_app, batch_id, job[0], job[1], job[2], barrier),
                [(officer_ids[0], first, "a.csv"), (officer_ids[1], second, "b.csv")],
            )
        )
    counts, paid = _pay_entries(private_app)
    assert paid == STATEMENTS and len(counts) == STATEMENTS and set(counts.values()) == {1}
    if same_file:
        assert sorted(results) == [("conflict", 0, 0), ("imported", STATEMENTS, 0)]
    else:
        assert sorted(results) == [("imported", 0, STATEMENTS), ("imported", STATEMENTS, 0)]
