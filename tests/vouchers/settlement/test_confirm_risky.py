"""Issue 14 item 7 in settlement: rejecting a statement and paying a provider to a new bank
account take two steps. The first POST changes nothing and says what would happen, the
amount or the new account repeated; the same fields with confirm=1 act. (Approving a
statement and settling a month already ask on their own page: a tick box stating the
amount and the payee, checked on the server.)"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from eldercare.db import db
from tests.confirm_helpers import asks_first, confirmed
from tests.vouchers.settlement.conftest import settle_day, spend
from vouchers.settlement.bank import payees
from vouchers.settlement.models import PayeeChange, Statement
from vouchers.settlement.statements.run import run_settlement


@pytest.fixture
def statement(shop, bureau):
    spend(shop, 1500)
    month = shop.voucher.month
    run_settlement(month, actor=bureau.officer, today=settle_day(month))
    db.session.commit()  # a refused request rolls back only its own changes
    return db.session.scalar(sa.select(Statement))


def test_rejecting_a_statement_asks_with_its_amount(shop, bureau, client, login, statement):
    login(bureau.approver)
    url = f"/settlement/statements/{statement.id}/reject"
    amount = f"¥{statement.payable_fen / 100:,.2f}"
    data = {"reason": "金额有误"}
    asks_first(client, url, data, f"Reject the statement of {amount}?", "金额有误", "next run")
    db.session.refresh(statement)
    assert statement.status == "prepared" and statement.rejection_reason is None
    assert client.post(url, data=confirmed(data)).status_code == 303
    db.session.refresh(statement)
    assert statement.status == "rejected" and statement.rejection_reason == "金额有误"


def test_a_new_bank_account_is_approved_only_when_confirmed(client, login, shop, bureau):
    station = shop.market.station
    old_number = station.bank_account_number
    payees.request_change(
        station,
        account_name="南湖",
        bank_name="中国银行",
        account_number="6013820000005555",
        actor=shop.station_admin,
    )
    db.session.commit()
    change = db.session.scalar(sa.select(PayeeChange))
    login(bureau.approver)
    url = f"/settlement/payee-changes/{change.id}/approve"
    asks_first(client, url, {}, "6013820000005555", "中国银行", "may not come back")
    db.session.refresh(station)
    db.session.refresh(change)
    assert station.bank_account_number == old_number and change.status == "pending"
    assert client.post(url, data=confirmed()).status_code == 302
    db.session.refresh(station)
    assert station.bank_account_number == "6013820000005555"
