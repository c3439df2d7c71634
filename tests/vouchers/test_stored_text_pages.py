"""Words the vouchers domain stores for later (journal memos and references, payment failure
reasons, the policy's basis) are shown in the reader's language only (issue 14 item 6)."""

from datetime import timedelta

import pytest
import sqlalchemy as sa
from flask_babel import force_locale

from eldercare import stored_text
from eldercare.timeutil import now_utc
from tests.one_language import assert_one_language
from tests.vouchers.helpers import give_voucher
from vouchers.models import JournalEntry, Redemption
from vouchers.redemption import payments
from vouchers.redemption import steps as redemption
from vouchers.redemption.failures import decline_reason

EN = {"Accept-Language": "en"}
ZH = {"Accept-Language": "zh-CN"}


def _pool_data(scheme):
    """The data on the pool page: what people typed and the names of places."""
    return [
        "中央资金",
        "和平区 100,000 元",
        "和平区",
        "沈河区",
        scheme.approver.display_name,
        "flask scheduler list",  # a command, typed as it is
        "辽财社〔2025〕12号",  # the example of a Chinese funding document's number
    ]


def _caregiver(scheme):
    from marketplace.staff import invite_staff

    return invite_staff(
        scheme.market.station,
        username="caregiver.li",
        display_name="李护理员",
        password="caregiver-pass-1",
        certificate_number="YL-2025-0001",
        certificate_valid_until=scheme.today + timedelta(days=365),
        today=scheme.today,
    ).user


def _redeemed_and_released(scheme):
    """A voucher issued, a redemption held then released (a stale cash hold): the journal
    gets issue, hold and release entries, the redemption a failure reason."""
    voucher = give_voucher(scheme.elder, scheme.today)
    staff = _caregiver(scheme)
    r = redemption.check_in(
        voucher, scan_digest="s", staff_user=staff, service_id=scheme.market.meals.id
    )
    redemption.set_price(r, price_fen=1500, staff_user=staff)
    redemption.hold(r, method="cash")
    report = payments.settle_stale_holds(now_utc() + timedelta(minutes=16))
    assert report["released"] == 1
    return r, staff


@pytest.mark.parametrize("lang, headers", [("zh_CN", ZH), ("en", EN)])
def test_the_pool_journal_speaks_the_readers_language(scheme, client, login, lang, headers):
    _redeemed_and_released(scheme)
    login(scheme.approver)
    html = client.get("/vouchers/bureau/pool", headers=headers).get_data(as_text=True)
    assert 'id="journal"' in html
    assert_one_language(html, lang, _pool_data(scheme))


@pytest.mark.parametrize("lang, headers", [("zh_CN", ZH), ("en", EN)])
def test_a_failed_payment_says_why_in_the_readers_language(
    scheme, client, login, db_session, lang, headers
):
    r, staff = _redeemed_and_released(scheme)
    db_session.refresh(r)
    assert r.status == "failed" and r.failure_reason
    login(staff, "caregiver-pass-1")
    page = client.get(f"/vouchers/redemptions/{r.id}", headers=headers)
    assert page.status_code == 200
    data = _pool_data(scheme) + ["李护理员", "王**", "社区助餐（午餐）", "南湖社区养老服务站"]
    assert_one_language(page.get_data(as_text=True), lang, data)


@pytest.mark.parametrize("lang, headers", [("zh_CN", ZH), ("en", EN)])
def test_the_policy_basis_speaks_the_readers_language(scheme, client, login, lang, headers):
    login(scheme.approver)
    html = client.get("/vouchers/bureau/policies", headers=headers).get_data(as_text=True)
    assert "policy-version" in html
    assert_one_language(html, lang, [scheme.approver.display_name])


def test_journal_rows_store_a_code_and_parameters(scheme, db_session):
    _redeemed_and_released(scheme)
    memos = db_session.scalars(sa.select(JournalEntry.memo).order_by(JournalEntry.id)).all()
    held = [m for m in memos if stored_text.decode(m) and stored_text.decode(m)[0] == "ledger.hold"]
    assert len(held) == 1
    code, params = stored_text.decode(held[0])
    assert params == {"redemption": db_session.scalar(sa.select(Redemption.id))}
    assert stored_text.render(held[0], "en") == f"hold for redemption {params['redemption']}"
    assert stored_text.render(held[0], "zh_CN") == f"为核销 {params['redemption']} 冻结"


def test_gateway_decline_codes_have_words_in_both_languages(app_ctx):
    known = stored_text.encode("payment.card_declined", decline="insufficient_funds")
    english = stored_text.render(known, "en")
    assert english == "card declined: there is not enough money on the card"
    assert stored_text.render(known, "zh_CN") == "银行卡被拒：卡内余额不足"
    unknown = stored_text.encode("payment.card_declined", decline="do_not_honor_42")
    assert (
        stored_text.render(unknown, "en")
        == "card declined: declined by the card's bank (do_not_honor_42)"
    )
    chinese = stored_text.render(unknown, "zh_CN")
    assert chinese == "银行卡被拒：发卡银行拒绝了付款（do_not_honor_42）"
    with force_locale("en"):
        assert str(decline_reason("expired_card")) == "the card has expired"
    assert str(decline_reason("expired_card")) == "银行卡已过期"  # zh-CN, the first language
