"""The account an assessment-fee refund is paid to: given by the elder or the family on
their page, or recorded by a bureau officer on the elder's behalf; validated with clear
messages in Chinese and English, audited, and fixed once the refund is paid or in a bank
batch (a transfer that has not failed)."""

from __future__ import annotations

import html
from datetime import date

import pytest
import sqlalchemy as sa

from assessment import refund_accounts
from assessment.models import FeeRefund
from eldercare.accounts import FamilyLink
from eldercare.audit import AuditLog
from eldercare.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from eldercare.timeutil import now_utc

EN = {"Accept-Language": "en"}
ZH = {"Accept-Language": "zh-CN"}
GOOD = {
    "account_name": "王秀英",
    "bank_name": "中国工商银行沈阳和平支行",
    "account_number": "6222 0212 3456 7890",
}


def _text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


@pytest.fixture
def owed(world, take_through, db_session):
    """The elder's moderate result approved (¥80 owed back), her own account and her son's."""
    take_through(total=50)
    refund = db_session.scalar(sa.select(FeeRefund).where(FeeRefund.resident_id == world.elder.id))
    world.refund = refund
    world.elder_user = world.factory.user("elder.wang", roles=["elder"], resident=world.elder)
    world.son = world.factory.user("family.zhang", roles=["family_agent"])
    db_session.add(
        FamilyLink(
            agent_user_id=world.son.id,
            resident_id=world.elder.id,
            relationship="child",
            consent_date=date(2025, 6, 1),
        )
    )
    db_session.flush()
    return world


def _audits(db_session, refund_id):
    return db_session.scalars(
        sa.select(AuditLog)
        .where(
            AuditLog.action == "fee_refund.payee_account",
            AuditLog.object_id == str(refund_id),
        )
        .order_by(AuditLog.id)
    ).all()


def _account(refund):
    return (refund.payee_account_name, refund.payee_bank_name, refund.payee_account_number)


# --------------------------------------------------------------------------- the rules


def test_an_account_is_read_cleanly():
    account = refund_accounts.read_account(
        "  王  秀英 ", "中国工商银行 沈阳和平支行", "６２２２-0212 3456"
    )
    assert account == refund_accounts.Account(
        "王 秀英", "中国工商银行 沈阳和平支行", "622202123456"
    )


@pytest.mark.parametrize(
    "name, bank, number, fields",
    [
        ("王", "工行", "62220212", {"account_name"}),
        ("王" * 61, "工行", "62220212", {"account_name"}),
        ("王秀英", "", "62220212", {"bank_name"}),
        ("王秀英", "工行", "6222021", {"account_number"}),  # 7 digits
        ("王秀英", "工行", "6" * 31, {"account_number"}),
        ("王秀英", "工行", "6222O212", {"account_number"}),  # a letter O
        ("王秀英", "工行", "6222.0212", {"account_number"}),
        (None, None, None, {"account_name", "bank_name", "account_number"}),
    ],
)
def test_a_bad_account_names_each_wrong_field(app_ctx, name, bank, number, fields):
    with pytest.raises(InvalidInput) as refused:
        refund_accounts.read_account(name, bank, number)
    assert set(refused.value.details) == fields


# --------------------------------------------------------------------------- the elder's page


def test_the_elder_gives_the_account_on_her_page(owed, client, login, db_session):
    login(owed.elder_user)
    page = _text(client.get("/assessment/my", headers=EN))
    assert f'id="refund-{owed.refund.id}"' in page
    assert "The programme pays back ¥80.00 of the assessment fee." in page
    where = f"/assessment/my/refunds/{owed.refund.id}/account"
    letters = client.post(where, data=GOOD | {"account_number": "6222abc34567"}, headers=EN)
    assert letters.status_code == 422
    assert "A bank account number has digits only, no letters." in _text(letters)
    short = client.post(where, data=GOOD | {"account_number": "1234"}, headers=ZH)
    assert short.status_code == 422 and "请输入账号：8 至 30 位数字。" in _text(short)
    db_session.refresh(owed.refund)
    assert _account(owed.refund) == (None, None, None) and _audits(db_session, owed.refund.id) == []

    saved = client.post(where, data=GOOD, headers=EN)
    assert saved.status_code == 302
    db_session.refresh(owed.refund)
    assert _account(owed.refund) == ("王秀英", "中国工商银行沈阳和平支行", "6222021234567890")
    [row] = _audits(db_session, owed.refund.id)
    assert row.actor_user_id == owed.elder_user.id and row.before_json is None
    assert '"by": "elder"' in row.after_json or '"by":"elder"' in row.after_json
    page = _text(client.get("/assessment/my", headers=EN))
    assert "account ending 7890" in page and "6222021234567890" not in page


def test_the_family_agent_changes_it_and_nobody_else_can(owed, client, login, db_session, factory):
    refund_accounts.set_account(owed.refund, actor=owed.elder_user, **GOOD)
    login(owed.son)
    where = f"/assessment/my/refunds/{owed.refund.id}/account"
    changed = client.post(where, data=GOOD | {"account_number": "6217000011112222"}, headers=EN)
    assert changed.status_code == 302
    db_session.refresh(owed.refund)
    assert owed.refund.payee_account_number == "6217000011112222"
    before, after = _audits(db_session, owed.refund.id)
    assert "6222021234567890" in after.before_json and "6217000011112222" in after.after_json
    client.post("/logout")
    stranger = factory.user("elder.li", roles=["elder"], resident=factory.resident(owed.heping))
    login(stranger)
    assert client.post(where, data=GOOD, headers=EN).status_code == 404
    # Nor the bureau's page, for an elder.
    assert client.get(f"/assessment/fee-refunds/{owed.refund.id}/account").status_code == 403
    with pytest.raises(PermissionDenied):
        refund_accounts.set_account(owed.refund, actor=stranger, **GOOD)
    db_session.refresh(owed.refund)
    assert owed.refund.payee_account_number == "6217000011112222"


# --------------------------------------------------------------------------- the bureau's page


def test_an_officer_records_it_on_the_elders_behalf(owed, client, login, db_session):
    login(owed.officer)
    listing = _text(client.get("/assessment/fee-refunds", headers=EN))
    where = f"/assessment/fee-refunds/{owed.refund.id}/account"
    assert f'href="{where}"' in listing and "Not given yet" in listing
    assert 'id="account-form"' in _text(client.get(where, headers=EN))
    no_note = client.post(where, data=GOOD, headers=EN)
    assert no_note.status_code == 422
    assert "Say on whose word you record it" in _text(no_note)
    db_session.refresh(owed.refund)
    assert owed.refund.payee_account_number is None
    saved = client.post(where, data=GOOD | {"note": "电话核实：老人之子张先生"}, headers=EN)
    assert saved.status_code == 302
    db_session.refresh(owed.refund)
    assert owed.refund.payee_account_number == "6222021234567890"
    [row] = _audits(db_session, owed.refund.id)
    assert row.actor_user_id == owed.officer.id and "电话核实：老人之子张先生" in row.after_json
    assert "•••• 7890" in _text(client.get("/assessment/fee-refunds", headers=EN))


def test_another_districts_officer_finds_nothing(owed, client, login, db_session, factory):
    shenhe_officer = factory.user(roles=["bureau_officer"], district=owed.shenhe)
    login(shenhe_officer)
    where = f"/assessment/fee-refunds/{owed.refund.id}/account"
    assert client.get(where).status_code == 404
    assert client.post(where, data=GOOD | {"note": "电话"}).status_code == 404
    with pytest.raises(NotFound):
        refund_accounts.set_account(owed.refund, actor=shenhe_officer, note="电话", **GOOD)
    db_session.refresh(owed.refund)
    assert owed.refund.payee_account_number is None


# --------------------------------------------------------------------------- once it is paid


def _transfer(db_session, refund, status):
    from vouchers.settlement.models import BankBatch, BankTransfer

    batch = BankBatch(reference=f"EC-TEST-{status}", line_count=1, total_fen=refund.amount_fen)
    db_session.add(batch)
    db_session.flush()
    transfer = BankTransfer(
        batch_id=batch.id,
        line_no=1,
        reference=f"EC-TEST-{status}-1",
        kind="fee_refund",
        fee_refund_id=refund.id,
        payee_account_name=refund.payee_account_name,
        payee_bank_name=refund.payee_bank_name,
        payee_account_number=refund.payee_account_number,
        amount_fen=refund.amount_fen,
        status=status,
    )
    db_session.add(transfer)
    db_session.flush()
    return transfer


def test_the_account_is_fixed_while_in_a_bank_batch_and_once_paid(owed, client, login, db_session):
    refund_accounts.set_account(owed.refund, actor=owed.elder_user, **GOOD)
    transfer = _transfer(db_session, owed.refund, "sent")
    other = GOOD | {"account_number": "6217000011112222"}
    with pytest.raises(Conflict):
        refund_accounts.set_account(owed.refund, actor=owed.elder_user, **other)
    login(owed.son)
    page = _text(client.get("/assessment/my", headers=EN))
    assert "The bank is making the transfer" in page
    refused = client.post(
        f"/assessment/my/refunds/{owed.refund.id}/account", data=other, headers=ZH
    )
    assert refused.status_code == 409 and "银行转账批次" in _text(refused)
    db_session.refresh(owed.refund)
    assert owed.refund.payee_account_number == "6222021234567890"

    # The bank returned it as failed: the account may be put right for the next batch.
    transfer.status = "failed"
    db_session.flush()
    refund_accounts.set_account(owed.refund, actor=owed.elder_user, **other)
    assert owed.refund.payee_account_number == "6217000011112222"

    owed.refund.status, owed.refund.paid_at = "paid", now_utc()
    db_session.flush()
    client.post("/logout")
    login(owed.officer)
    paid = client.post(
        f"/assessment/fee-refunds/{owed.refund.id}/account",
        data=GOOD | {"note": "电话"},
        headers=EN,
    )
    assert paid.status_code == 409
    assert "This refund has been paid; its account can no longer be changed." in _text(paid)
    db_session.refresh(owed.refund)
    assert owed.refund.payee_account_number == "6217000011112222"
    assert 'id="account-form"' not in _text(
        client.get(f"/assessment/fee-refunds/{owed.refund.id}/account", headers=EN)
    )


def test_the_api_says_whether_the_account_was_given(owed, client, db_session):
    from eldercare.tokens import issue_token

    _token, secret = issue_token(owed.officer, "City data exchange", ["read"])
    db_session.commit()
    headers = {"Authorization": f"Bearer {secret}"}

    def item():
        [listed] = client.get("/api/v1/assessment-fee-refunds", headers=headers).get_json()["items"]
        return listed["payee_account_given"], listed["payee_account_last4"]

    assert item() == (False, None)
    refund_accounts.set_account(owed.refund, actor=owed.elder_user, **GOOD)
    db_session.commit()
    assert item() == (True, "7890")
