"""A fee refund's account changed while the real ``bank_files.create_batch`` takes the
refund (PostgreSQL, two real transactions): the transfer always carries the account the
refund row has when the batch commits."""

# ruff: noqa: F811 (the fixture is imported)

import pytest
import sqlalchemy as sa

from assessment.models import FeeRefund
from eldercare.db import db
from eldercare.errors import Conflict
from tests.assessment.test_refund_account_race import (  # noqa: F401 (fixture)
    NEW,
    OLD,
    _change,
    _officer,
    refund_id,
)
from tests.vouchers.interleave import Interleaving, Pause
from vouchers.settlement.bank import bank_files
from vouchers.settlement.models import BankTransfer

pytestmark = pytest.mark.postgres


def _batch():
    bank_files.create_batch(actor=_officer())
    return "batched"


def _accounts(app, rid):
    with app.app_context():
        refund = db.session.get(FeeRefund, rid).payee_account_number
        transfer = db.session.scalar(
            sa.select(BankTransfer.payee_account_number).where(
                BankTransfer.fee_refund_id == rid, BankTransfer.status != "failed"
            )
        )
        db.session.remove()
    return refund, transfer


def test_a_change_made_while_the_batch_starts_is_what_the_batch_pays(private_app, refund_id):
    """The change holds the refund's row (updated, not committed) when the batch begins:
    the batch waits for it and copies the new account."""
    results = Interleaving(
        private_app,
        {
            "batch": Pause("before", "SELECT pg_advisory_xact_lock"),
            "change": Pause("after", "UPDATE assessment_fee_refunds"),
        },
    ).run(batch=_batch, change=_change(refund_id))
    assert results == {"batch": "batched", "change": "changed"}, results
    assert _accounts(private_app, refund_id) == (NEW["account_number"], NEW["account_number"])


def test_a_change_after_the_batch_took_the_refund_is_refused(private_app, refund_id):
    results = Interleaving(
        private_app,
        {
            "batch": Pause("after", "SELECT assessment_fee_refunds", contains="FOR UPDATE"),
            "change": Pause("before", "SELECT assessment_fee_refunds", contains="FOR UPDATE"),
        },
    ).run(batch=_batch, change=_change(refund_id))
    assert results["batch"] == "batched"
    assert isinstance(results["change"], Conflict), results
    assert _accounts(private_app, refund_id) == (OLD["account_number"], OLD["account_number"])
