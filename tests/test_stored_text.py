"""Stored text (eldercare/stored_text.py): a code and parameters written now, said later in the
reader's language; notices in Messages and in mail (issue 14 item 6)."""

from __future__ import annotations

import email
import email.policy

import pytest
import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from eldercare import stored_text
from eldercare.db import db
from eldercare.notifications import Notification, deliver_pending, enqueue, notice
from tests.one_language import assert_one_language, foreign_words
from tests.test_notifications_delivery import mail_config  # noqa: F401  (fixture)

EN = {"Accept-Language": "en"}
ZH = {"Accept-Language": "zh-CN"}

# A code of the tests' own, with words the catalog translates (an existing msgid).
stored_text.message("test.used", _l("Voucher used: %(amount)s"))


# --------------------------------------------------------------------------- the mechanism


def test_a_code_and_parameters_render_in_each_language(app_ctx):
    stored = stored_text.encode("test.used", amount="¥6.00")
    assert stored == '§test.used {"amount":"¥6.00"}'
    assert stored_text.decode(stored) == ("test.used", {"amount": "¥6.00"})
    assert stored_text.render(stored, "en") == "Voucher used: ¥6.00"
    assert stored_text.render(stored, "zh_CN") == "养老服务消费券使用提醒：¥6.00"


def test_free_text_and_unknown_codes_are_shown_as_they_are(app_ctx):
    for text in ("辽财社〔2025〕12号", "hold for redemption 5", "§no.such.code {}", "§test.used {"):
        assert stored_text.decode(text) is None
        assert stored_text.render(text, "en") == text
    assert stored_text.render(None) == ""


def test_missing_parameters_show_the_stored_form_rather_than_wrong_words(app_ctx):
    stored = "§test.used {}"
    assert stored_text.render(stored, "en") == stored


def test_a_nested_stored_text_renders_in_the_same_language(app_ctx):
    inner = stored_text.encode("payment.cancelled")
    # Said as a code only when the writer says it is one of the platform's (nested).
    outer = stored_text.encode("ledger.release", redemption=7, reason=stored_text.nested(inner))
    assert stored_text.render(outer, "en") == "release redemption 7: payment cancelled"
    assert stored_text.render(outer, "zh_CN") == "释放核销 7 的冻结金额：付款已取消"


def test_encode_fits_a_column_by_shortening_text_parameters(app_ctx):
    long_reason = "网关故障" * 100
    stored = stored_text.encode("payment.resolved", limit=200, reason=long_reason)
    assert len(stored) <= 200
    code, params = stored_text.decode(stored)
    assert code == "payment.resolved" and params["reason"].endswith("…")
    assert stored_text.clip(stored, 50) == stored  # never cut: it would stop being readable
    assert stored_text.clip("x" * 300, 200) == "x" * 200
    # Stored text inside stored text is shortened by its own parameters, never cut.
    memo = stored_text.encode(
        "ledger.release", limit=200, redemption=5, reason=stored_text.nested(stored)
    )
    assert len(memo) <= 200
    inner = stored_text.decode(memo)[1]["reason"]
    assert stored_text.decode(inner["§"])[0] == "payment.resolved"
    assert stored_text.render(memo, "zh_CN").startswith(
        "释放核销 5 的冻结金额：民政局已处理：网关故障"
    )
    with pytest.raises(ValueError):
        stored_text.encode("no.such.code")


def test_seeded_free_text_is_mapped_to_its_code(app_ctx):
    seeded = "Shenyang pilot defaults (POLICY.md)"
    assert stored_text.render(seeded, "zh_CN") == "沈阳市试点默认规则"
    assert stored_text.render(seeded, "en") == seeded


# --------------------------------------------------------------------------- the page helper


def test_the_one_language_helper_flags_the_other_language_outside_data():
    zh_page = "<p>付款失败: stale hold</p><p>张伟 · QR · PIN · 210102 · a@b.cn · English</p>"
    assert foreign_words(zh_page, "zh_CN") == ["stale", "hold"]
    assert_one_language("<p>付款失败：冻结金额已退回 · Nanhu</p>", "zh_CN", data=["Nanhu"])
    en_page = (
        "<title>x</title><p>Voucher used at 南湖社区养老服务站 · 中文</p><script>'中'</script>"
    )
    assert foreign_words(en_page, "en") == ["南湖社区养老服务站"]
    assert_one_language(en_page, "en", data=["南湖社区养老服务站"])
    with pytest.raises(AssertionError, match="stale"):
        assert_one_language(zh_page, "zh_CN")


# --------------------------------------------------------------------------- notices


def _a_notice(factory, **extra):
    user = factory.user("zhang.wei", roles=["family_agent"], **extra)
    user.display_name = "张伟"
    subject, body = notice(
        "redemption.used",
        amount="¥6.00",
        copay="¥9.00",
        provider="南湖社区养老服务站",
        service="社区助餐（午餐）",
        when="2026-12-04 12:00",
        quantity=1,
        price="¥15.00",
    )
    enqueue(user.id, subject, body, "redemption:1:family")
    return user


NOTICE_DATA = ["南湖社区养老服务站", "社区助餐（午餐）", "张伟", "zhang.wei"]


@pytest.mark.parametrize("lang, headers", [("zh_CN", ZH), ("en", EN)])
def test_messages_show_a_notice_in_the_readers_language_only(
    app, factory, client, login, lang, headers
):
    user = _a_notice(factory)
    body = db.session.scalar(
        sa.select(Notification.body).where(Notification.recipient_user_id == user.id)
    )
    assert stored_text.decode(body)[0] == "redemption.used.body"  # one code, no language
    login(user)
    html = client.get("/messages", headers=headers).get_data(as_text=True)
    assert 'class="message"' in html and "¥6.00" in html
    assert_one_language(html, lang, NOTICE_DATA)


def test_a_mailed_notice_is_said_at_sending_in_each_language_once(
    app_ctx,
    factory,
    mail_config,  # noqa: F811
    tmp_path,
):
    mail_config(MAIL_SERVER="", MAIL_FILE_DIR=str(tmp_path))
    _a_notice(factory, email="zhang.wei@example.com")
    assert deliver_pending()["sent"] == 1
    (written,) = tmp_path.glob("*.eml")
    parsed = email.message_from_bytes(written.read_bytes(), policy=email.policy.default)
    assert str(parsed["Subject"]) == "养老服务消费券使用提醒：¥6.00 / Voucher used: ¥6.00"
    body = parsed.get_content()
    assert body.count("¥6.00") == 2 and "§" not in body
    assert body.index("南湖社区养老服务站") < body.index("of the voucher was used")


# --------------------------------------------------------------------------- the account's language


@pytest.mark.parametrize(
    "code, subject",
    [("en", "Voucher used: ¥6.00"), ("zh_CN", "养老服务消费券使用提醒：¥6.00")],
)
def test_the_language_chosen_while_signed_in_is_the_accounts_mail_language(
    app_ctx,
    factory,
    client,
    login,
    mail_config,  # noqa: F811
    tmp_path,
    code,
    subject,
):
    """Choosing a language on any page while signed in is kept on the account: the notices
    mailed to it are in that one language, not both."""
    mail_config(MAIL_SERVER="", MAIL_FILE_DIR=str(tmp_path))
    user = _a_notice(factory, email="zhang.wei@example.com")
    login(user)
    assert client.get(f"/lang/{code}?next=/messages").status_code == 302
    db.session.expire_all()
    assert db.session.get(type(user), user.id).language == code
    result = deliver_pending()
    assert result["sent"] == 1, result
    (written,) = tmp_path.glob("*.eml")
    parsed = email.message_from_bytes(written.read_bytes(), policy=email.policy.default)
    assert str(parsed["Subject"]) == subject
    body = parsed.get_content()
    assert body.count("¥6.00") == 1
    assert_one_language(body, code, NOTICE_DATA)


def test_a_new_browser_speaks_the_accounts_language_after_signing_in(
    app, factory, client, login
):
    """The account's language follows the person to another browser (an elder's daughter
    set English on her phone; the tablet at the station asks for Chinese)."""
    user = factory.user("zhang.wei", roles=["family_agent"])
    user.language = "en"
    db.session.flush()
    login(user)
    page = client.get("/messages", headers=ZH).get_data(as_text=True)
    assert '<html lang="en"' in page
    # A choice made in this browser wins over the account's (and becomes the account's).
    client.get("/lang/zh_CN?next=/messages")
    page = client.get("/messages", headers=EN).get_data(as_text=True)
    assert '<html lang="zh-CN"' in page


def test_an_unknown_language_code_changes_nothing(app, factory, client, login):
    user = factory.user("zhang.wei", roles=["family_agent"])
    login(user)
    assert client.get("/lang/xx?next=/messages").status_code == 302
    db.session.expire_all()
    assert db.session.get(type(user), user.id).language is None


def test_a_language_chosen_before_signing_in_becomes_the_accounts(app, factory, client, login):
    user = factory.user("zhang.wei", roles=["family_agent"])
    user.language = "zh_CN"
    db.session.flush()
    client.get("/lang/en?next=/login")  # on the sign-in page, not signed in yet
    login(user)
    db.session.expire_all()
    assert db.session.get(type(user), user.id).language == "en"
    page = client.get("/messages", headers=ZH).get_data(as_text=True)
    assert '<html lang="en"' in page


# ------------------------------------------------------------------ typed text is never a code


SPOOF = '§ledger.settle {"month":"2026-11","provider":7,"statement":42}'


def test_typed_text_that_looks_like_a_code_is_shown_as_typed(app_ctx):
    """A memo or a note a person typed may begin with the marker; it is still their words,
    never the platform's (a top-up memo must not read as a settlement in the books)."""
    kept = stored_text.typed(SPOOF)
    assert stored_text.decode(kept) is None
    assert stored_text.render(kept, "en") == SPOOF
    assert stored_text.typed("沈财〔2025〕1号") == "沈财〔2025〕1号"  # everyday text unchanged
    assert stored_text.typed(None) is None
    # Too long for its column: cut like any typed text, not kept whole as a "code".
    assert len(stored_text.clip(stored_text.typed(SPOOF + "x" * 400), 200)) == 200


def test_a_typed_parameter_is_never_read_as_a_code(app_ctx):
    """A provider's typed decline reason inside a family's notice stays the provider's words."""
    spoof = (
        '§voucher.issued.body {"amount":"¥9,999.00","last_day":"2099-01-31",'
        '"month":"2099-01","name":"王*英"}'
    )
    outer = stored_text.encode("ledger.release", redemption=7, reason=spoof)
    assert stored_text.render(outer, "en") == f"release redemption 7: {spoof}"


@pytest.mark.parametrize("pages_path", ["/vouchers/bureau/pool"])
def test_a_typed_top_up_memo_reads_as_typed_on_the_pool_page(
    app, factory, client, login, pages_path
):
    from vouchers.pool import funding

    approver = factory.user("pool.approver", roles=["bureau_approver"])
    funding.top_up(100_00, source="local", memo=SPOOF, actor=approver)
    db.session.flush()
    login(approver)
    page = client.get(pages_path, headers=EN).get_data(as_text=True)
    assert "statement 42" not in page.lower()


def test_the_last_persons_language_is_not_copied_onto_the_next_account(
    app, factory, client, login
):
    """A shared browser (the station's tablet): A's language, brought in by A's sign-in, is
    not B's choice, so B's account (and B's mail) keeps its own."""
    a = factory.user("a.family", roles=["family_agent"], language="en")
    b = factory.user("b.family", roles=["family_agent"], language="zh_CN")
    db.session.commit()
    login(a)  # A's account language becomes this browser's
    client.post("/logout")
    login(b)  # B chose nothing in this browser
    db.session.expire_all()
    assert db.session.get(type(b), b.id).language == "zh_CN"
    page = client.get("/messages", headers=EN).get_data(as_text=True)
    assert '<html lang="zh-CN"' in page  # and B's pages speak B's language
