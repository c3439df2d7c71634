"""Migration 0017 brings card co-payments captured before it into the books: one entry
moves their sum from ``copay:card`` to ``gateway:clearing``, so the clearing account starts
equal to what the gateway holds and ``verify_ledger`` passes from the first day."""

import sqlalchemy as sa
from flask_migrate import upgrade

from eldercare import create_app
from eldercare.db import db
from vouchers.pool import ledger

NOW = "2026-11-20 03:00:00.000000"


def _redemption(conn, rid, status, method, copay_fen):
    """A redemption row as the code before 0017 left it: subsidy ¥6.00 captured (and given
    back if reversed), the co-payment paid by ``method``."""
    conn.execute(
        sa.text(
            "INSERT INTO redemptions (id, voucher_id, resident_id, provider_id, staff_user_id, "
            "scan_digest, status, checked_in_at, quantity, price_fen, insurance_fen, "
            "subsidy_fen, copay_fen, ratio_bp, payment_method, redeemed_at) VALUES "
            "(:id, 1, 1, 1, 1, :digest, :status, :now, 1, :price, 0, 600, :copay, 4000, "
            ":method, :now)"
        ),
        {
            "id": rid,
            "digest": f"old-{rid}",
            "status": status,
            "now": NOW,
            "price": 600 + copay_fen,
            "copay": copay_fen,
            "method": method,
        },
    )
    _entry(conn, "capture", rid, [("funding:central", -600), ("redeemed:unsettled", 600)])
    if status == "reversed":
        _entry(conn, "reverse", rid, [("redeemed:unsettled", -600), ("funding:central", 600)])


def _entry(conn, kind, rid, lines):
    entry = conn.execute(
        sa.text(
            "INSERT INTO journal_entries (kind, occurred_at, memo, cause_type, cause_id) "
            "VALUES (:kind, :now, 'before 0017', 'redemptions', :rid) RETURNING id"
        ),
        {"kind": kind, "now": NOW, "rid": str(rid)},
    ).scalar_one()
    for code, amount in lines:
        account = {"code": code, "amount": amount, "entry": entry}
        conn.execute(
            sa.text(
                "INSERT INTO journal_lines (entry_id, account_id, amount_fen) "
                "SELECT :entry, id, :amount FROM ledger_accounts WHERE code = :code"
            ),
            account,
        )
        conn.execute(
            sa.text(
                "UPDATE ledger_balances SET balance_fen = balance_fen + :amount WHERE shard = 0 "
                "AND account_id = (SELECT id FROM ledger_accounts WHERE code = :code)"
            ),
            account,
        )


def test_0017_brings_earlier_card_co_payments_into_the_books(tmp_path):
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/m.db"})
    with app.app_context():
        upgrade(revision="0016")
        with db.engine.connect() as conn:
            # Only the redemption rows matter here, not the voucher, elder and provider they
            # name: foreign keys off for this connection (set outside a transaction).
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            _redemption(conn, 1, "redeemed", "card", 900)  # in the gateway: counted
            _redemption(conn, 2, "redeemed", "card", 1_400)  # counted
            _redemption(conn, 3, "reversed", "card", 500)  # refunded: not counted
            _redemption(conn, 4, "redeemed", "cash", 700)  # the provider has it
            conn.commit()
        upgrade()
        balances = ledger.balances(["gateway:clearing", "copay:card", "redeemed:unsettled"])
        assert balances == {
            "gateway:clearing": 2_300,
            "copay:card": -2_300,
            "redeemed:unsettled": 1_800,
        }
        backfill = db.session.execute(
            sa.text(
                "SELECT kind, cause_type, cause_id FROM journal_entries "
                "WHERE cause_type = 'migration'"
            )
        ).all()
        assert backfill == [("capture", "migration", "0017")]
        check = ledger.verify_ledger()
        assert check.ok, check
        db.session.remove()
        db.engine.dispose()


def test_0017_on_books_without_card_co_payments_posts_nothing(tmp_path):
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/m.db"})
    with app.app_context():
        upgrade()
        assert ledger.balances(["gateway:clearing", "copay:card"]) == {
            "gateway:clearing": 0,
            "copay:card": 0,
        }
        assert db.session.scalar(sa.text("SELECT COUNT(*) FROM journal_entries")) == 0
        db.session.remove()
        db.engine.dispose()
