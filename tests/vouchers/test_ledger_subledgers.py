"""The reconciliation proves the sub-ledgers, not only the journal: the accounts that stand
for vouchers and redemptions equal the rows they stand for, closed vouchers hold nothing
and every captured redemption was captured once. The pool page and GET /api/v1/pool say so,
and name what drifted."""

import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from eldercare.db import db
from eldercare.timeutil import now_utc
from tests.vouchers.helpers import give_voucher
from vouchers.issuance import monthly as issuance
from vouchers.models import LedgerCheckRun, Redemption, Voucher
from vouchers.pool import ledger
from vouchers.redemption import steps as redemption


def _buy(shop, voucher, digest, then="cash"):
    r = redemption.check_in(
        voucher, scan_digest=digest, staff_user=shop.caregiver, service_id=shop.market.meals.id
    )
    redemption.set_price(r, price_fen=1500, staff_user=shop.caregiver)
    if then == "cash":
        redemption.pay_cash(r, staff_user=shop.caregiver)
    else:
        redemption.hold(r, method="card")
    return r


@pytest.fixture
def books(shop, db_session):
    """A healthy book with every kind of row the checks sum: a voucher with a redeemed, a
    reversed and a pending redemption; a second elder's voucher revoked while its payment
    is in flight (balance back to the district, the hold still held)."""
    _buy(shop, shop.voucher, "redeemed")
    reversed_ = _buy(shop, shop.voucher, "reversed")
    redemption.reverse(reversed_, actor=shop.approver, reason="核查")
    _buy(shop, shop.voucher, "pending", then="card")
    other = shop.world.factory.resident(shop.heping, birth=shop.elder.birth_date)
    shop.assess(other, "severe")
    revoked = give_voucher(other, shop.today)
    _buy(shop, revoked, "in-flight", then="card")
    issuance.revoke_for(other.id, from_month=revoked.month, reason="death")
    db_session.flush()
    shop.revoked = revoked
    return shop


def _redemption(digest):
    return db.session.scalar(sa.select(Redemption).where(Redemption.scan_digest == digest))


def test_a_healthy_book_passes_every_check(books):
    assert books.revoked.status == "revoked" and books.revoked.held_fen > 0
    check = ledger.verify_ledger()
    assert check.ok, check
    assert check.subledger_mismatches == check.capture_mismatches == []
    assert check.closed_vouchers_with_balance == []


def _drift_balance(books):
    db.session.execute(
        sa.update(Voucher).where(Voucher.id == books.voucher.id).values(balance_fen=1)
    )
    return {"vouchers:outstanding"}, [], []


def _drift_hold(books):
    db.session.execute(
        sa.update(Voucher)
        .where(Voucher.id == books.voucher.id)
        .values(balance_fen=Voucher.balance_fen - 100, held_fen=Voucher.held_fen + 100)
    )
    return {"vouchers:outstanding", "vouchers:held"}, [], []


def _drift_subsidy(books):
    db.session.execute(
        sa.update(Redemption)
        .where(Redemption.scan_digest == "redeemed")
        .values(subsidy_fen=Redemption.subsidy_fen + 1, copay_fen=Redemption.copay_fen - 1)
    )
    return {"redeemed:unsettled"}, [], []


def _drift_closed(books):
    db.session.execute(
        sa.update(Voucher).where(Voucher.id == books.voucher.id).values(status="revoked")
    )
    return {"vouchers:outstanding"}, [books.voucher.id], []


def _drift_capture(books):
    db.session.execute(
        sa.update(Redemption).where(Redemption.scan_digest == "redeemed").values(status="failed")
    )
    return {"redeemed:unsettled"}, [], [_redemption("redeemed").id]


@pytest.mark.parametrize(
    "drift",
    [_drift_balance, _drift_hold, _drift_subsidy, _drift_closed, _drift_capture],
    ids=["balance", "hold", "subsidy", "closed voucher", "capture"],
)
def test_a_drifted_subledger_is_named(books, db_session, drift):
    accounts, closed, captures = drift(books)
    db_session.expire_all()
    check = ledger.verify_ledger()
    assert not check.ok
    assert check.unbalanced_entries == check.drifted_accounts == [] and check.total_fen == 0
    assert {m["account"] for m in check.subledger_mismatches} == accounts
    books_fen = ledger.balances()
    for mismatch in check.subledger_mismatches:
        assert mismatch["ledger_fen"] == books_fen[mismatch["account"]]
        assert mismatch["subledger_fen"] != mismatch["ledger_fen"]
    assert check.closed_vouchers_with_balance == closed
    assert check.capture_mismatches == captures


def _check_notice(client):
    """The pool page's notice after the bureau's "Check the books now", a few minutes after
    any earlier check (the button shows a check younger than a minute instead of another)."""
    db.session.execute(
        sa.update(LedgerCheckRun).values(finished_at=now_utc() - timedelta(minutes=5))
    )
    assert client.post("/vouchers/bureau/pool/verify").status_code == 302
    html = client.get("/vouchers/bureau/pool", headers={"Accept-Language": "en"}).get_data(
        as_text=True
    )
    return re.search(r'<div class="notice (\w+)" id="ledger-check".*?</div>', html, re.S)


def test_the_pool_page_turns_red_naming_the_drifted_subledger(books, client, login, db_session):
    login(books.approver)
    notice = _check_notice(client)
    assert notice.group(1) == "ok", notice.group(0)
    _drift_closed(books)
    db_session.expire_all()
    notice = _check_notice(client)
    assert notice.group(1) == "error"
    text = re.sub(r"\s+", " ", notice.group(0))
    assert "vouchers:outstanding" in text
    assert f"Closed vouchers still holding a balance: {books.voucher.id}" in text


def test_the_pool_page_names_a_redemption_captured_wrongly(books, client, login, db_session):
    login(books.approver)
    (_, _, captures) = _drift_capture(books)
    db_session.expire_all()
    notice = _check_notice(client)
    assert notice.group(1) == "error"
    text = re.sub(r"\s+", " ", notice.group(0))
    assert "redeemed:unsettled" in text
    assert f"Redemptions not captured exactly once: {captures[0]}" in text
