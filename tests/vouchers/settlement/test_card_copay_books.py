"""Card co-payments in the books (issue 12, books §1): a card redemption's capture moves the
co-payment from ``copay:card`` (what elders paid by card) to ``gateway:clearing`` (what the
gateway holds for the platform), and ``verify_ledger`` proves the clearing account equal to
the card co-payments of redeemed redemptions not yet in an approved statement."""

import sqlalchemy as sa

from eldercare.db import db
from tests.vouchers.settlement.conftest import spend
from tests.vouchers.test_payments import pay, priced
from vouchers.models import JournalEntry, JournalLine, LedgerAccount
from vouchers.pool import ledger


def _capture_lines(redemption_id):
    return dict(
        db.session.execute(
            sa.select(LedgerAccount.code, JournalLine.amount_fen)
            .join(JournalLine, JournalLine.account_id == LedgerAccount.id)
            .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
            .where(
                JournalEntry.kind == "capture",
                JournalEntry.cause_type == "redemptions",
                JournalEntry.cause_id == str(redemption_id),
            )
        ).all()
    )


def test_a_card_co_payment_is_in_the_gateway_clearing_account(shop, db_session, gateway_app_config):
    r = priced(shop)  # ¥15.00: subsidy ¥6.00, co-payment ¥9.00
    assert pay(shop, r) == "succeeded"
    assert (r.payment_method, r.copay_fen) == ("card", 900)
    assert _capture_lines(r.id) == {
        "vouchers:held": -600,
        "redeemed:unsettled": 600,
        "copay:card": -900,
        "gateway:clearing": 900,
    }
    balances = ledger.balances(["gateway:clearing", "copay:card"])
    assert balances == {"gateway:clearing": 900, "copay:card": -900}
    check = ledger.verify_ledger()
    assert check.ok, check


def test_a_cash_co_payment_stays_out_of_the_gateway_accounts(shop, db_session):
    r = spend(shop)
    assert (r.payment_method, r.copay_fen) == ("cash", 900)
    assert set(_capture_lines(r.id)) == {"vouchers:held", "redeemed:unsettled"}
    assert ledger.balances(["gateway:clearing", "copay:card"]) == {
        "gateway:clearing": 0,
        "copay:card": 0,
    }
    assert ledger.verify_ledger().ok


def test_the_clearing_account_is_checked_against_the_card_redemptions(
    shop, db_session, gateway_app_config
):
    """A clearing balance that no card redemption explains is a sub-ledger mismatch."""
    r = priced(shop)
    pay(shop, r)
    db.session.execute(
        sa.update(db.metadata.tables["redemptions"])
        .where(db.metadata.tables["redemptions"].c.id == r.id)
        .values(payment_method="cash")
    )
    check = ledger.verify_ledger()
    assert not check.ok
    assert check.subledger_mismatches == [
        {"account": "gateway:clearing", "ledger_fen": 900, "subledger_fen": 0}
    ]


def _statement_of(r, status):
    """A statement holding ``r``'s line, as the statements part prepares it, moved to
    ``status`` (an approved one leaves its lines frozen)."""
    from vouchers.settlement.models import Statement, StatementLine

    statement = Statement(
        provider_id=r.provider_id,
        month=r.voucher.month,
        payee_account_name="三好街养老服务站",
        payee_bank_name="中国银行沈阳分行",
        payee_account_number="6217000012345678",
        line_count=1,
        subsidy_fen=r.subsidy_fen,
        card_copay_fen=r.copay_fen,
    )
    db.session.add(statement)
    db.session.flush()
    db.session.add(
        StatementLine(
            redemption_id=r.id,
            statement_id=statement.id,
            district_id=r.voucher.district_id,
            price_fen=r.price_fen,
            insurance_fen=r.insurance_fen,
            subsidy_fen=r.subsidy_fen,
            copay_fen=r.copay_fen,
            payment_method="card",
            card_copay_fen=r.copay_fen,
        )
    )
    db.session.flush()
    statement.status = status
    db.session.flush()
    return statement


def test_an_approved_statement_takes_its_card_co_payments_out_of_clearing(
    shop, db_session, gateway_app_config
):
    r = priced(shop)
    pay(shop, r)
    # Prepared: the gateway still holds the co-payment for the platform.
    statement = _statement_of(r, "prepared")
    assert ledger.verify_ledger().ok
    # Approved (books §3, only its co-payment part here): clearing -> what the provider is owed.
    statement.status = "approved"
    db.session.flush()
    mismatch = ledger.verify_ledger().subledger_mismatches
    assert {"account": "gateway:clearing", "ledger_fen": 900, "subledger_fen": 0} in mismatch
    ledger.account(f"provider:{r.provider_id}:copay", create_name="co-payments owed")
    ledger.post(
        "settle",
        "statement approved",
        [("gateway:clearing", -900), (f"provider:{r.provider_id}:copay", 900)],
        cause=("statements", statement.id),
    )
    assert [
        m for m in ledger.verify_ledger().subledger_mismatches if m["account"] == "gateway:clearing"
    ] == []
