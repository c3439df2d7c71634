"""A refund's account changed while a bank batch takes the refund, on PostgreSQL with real
transactions: the batch pays the account the refund has when it commits, never an account
that was replaced. The batch here is a stand-in doing what settlement's batch does with a
refund (lock its row, copy its account into a transfer); the change locks the row and then
looks for a live transfer."""

import pytest
import sqlalchemy as sa

from assessment import refund_accounts
from assessment.models import FeeRefund
from eldercare.accounts import User
from eldercare.db import db
from eldercare.demo import build_demo
from eldercare.errors import Conflict
from tests.vouchers.interleave import Interleaving, Pause
from vouchers.settlement.models import BankBatch, BankTransfer

pytestmark = pytest.mark.postgres

OLD = {
    "account_name": "王秀英",
    "bank_name": "中国工商银行沈阳和平支行",
    "account_number": "6222021234567890",
}
NEW = OLD | {"account_number": "6217000011112222"}
# One session holds the refund's row; the other stops just before asking for it, so it
# asks only once the first holds it (and then waits for it).
LOCKED = Pause("after", "SELECT assessment_fee_refunds", contains="FOR UPDATE")
ABOUT_TO_LOCK = Pause("before", "SELECT assessment_fee_refunds", contains="FOR UPDATE")


@pytest.fixture
def refund_id(private_app):
    with private_app.app_context():
        build_demo()
        refund = db.session.scalar(
            sa.select(FeeRefund).where(FeeRefund.status == "owed").order_by(FeeRefund.id)
        )
        refund_accounts.set_account(refund, actor=_officer(), note="电话核实", **OLD)
        db.session.commit()
        rid = refund.id
        db.session.remove()
    return rid


def _officer() -> User:
    return db.session.scalar(sa.select(User).where(User.username == "bureau.officer"))


def _batch(rid):
    def work():
        refund = db.session.scalar(
            sa.select(FeeRefund).where(FeeRefund.id == rid).with_for_update()
        )
        batch = BankBatch(reference="EC-RACE", line_count=1, total_fen=refund.amount_fen)
        db.session.add(batch)
        db.session.flush()
        db.session.add(
            BankTransfer(
                batch_id=batch.id,
                line_no=1,
                reference="EC-RACE-1",
                kind="fee_refund",
                fee_refund_id=rid,
                payee_account_name=refund.payee_account_name,
                payee_bank_name=refund.payee_bank_name,
                payee_account_number=refund.payee_account_number,
                amount_fen=refund.amount_fen,
            )
        )
        db.session.flush()
        return "batched"

    return work


def _change(rid):
    def work():
        refund = db.session.get(FeeRefund, rid)
        refund_accounts.set_account(refund, actor=_officer(), note="家属来电更改", **NEW)
        return "changed"

    return work


def _paid_to(app, rid):
    with app.app_context():
        result = (
            db.session.get(FeeRefund, rid).payee_account_number,
            db.session.scalar(
                sa.select(BankTransfer.payee_account_number).where(
                    BankTransfer.fee_refund_id == rid
                )
            ),
        )
        db.session.remove()
    return result


def test_a_change_waiting_for_a_batch_is_refused(private_app, refund_id):
    results = Interleaving(private_app, {"batch": LOCKED, "change": ABOUT_TO_LOCK}).run(
        batch=_batch(refund_id), change=_change(refund_id)
    )
    assert results["batch"] == "batched"
    assert isinstance(results["change"], Conflict), results
    assert _paid_to(private_app, refund_id) == (OLD["account_number"], OLD["account_number"])


def test_a_batch_waiting_for_a_change_pays_the_new_account(private_app, refund_id):
    results = Interleaving(private_app, {"change": LOCKED, "batch": ABOUT_TO_LOCK}).run(
        change=_change(refund_id), batch=_batch(refund_id)
    )
    assert results == {"change": "changed", "batch": "batched"}
    assert _paid_to(private_app, refund_id) == (NEW["account_number"], NEW["account_number"])
