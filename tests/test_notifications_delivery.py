"""The outbox delivered: a real SMTP server (aiosmtpd on loopback), the .eml file backend,
the delivery job and command, and the Messages page."""

from __future__ import annotations

import email
import email.policy
import json
import socket
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from eldercare import mail, notifications
from eldercare.audit import AuditLog
from eldercare.db import db
from eldercare.notifications import MAX_ATTEMPTS, Notification, deliver_pending, enqueue
from eldercare.scheduler import all_jobs
from eldercare.timeutil import now_utc

EN = {"Accept-Language": "en"}
SUBJECT = "养老服务消费券使用提醒 / Voucher used: ¥30.00"
BODY = (
    "消费券在和平区南湖社区养老服务站使用了¥30.00（助浴）。\n"
    "¥30.00 of the voucher was used at Nanhu station for a bath."
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Recorder:
    """An SMTP server's handler that keeps what it accepted and refuses chosen recipients."""

    def __init__(self):
        self.accepted: list[tuple[str, list[str], bytes]] = []
        self.refuse: set[str] = set()
        self.rcpt_attempts: list[str] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.rcpt_attempts.append(address)
        if address in self.refuse:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.accepted.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 Message accepted for delivery"


@pytest.fixture
def mail_config(app):
    """Change MAIL_* settings for one test; the app is shared by the session, so restore."""
    saved = {key: app.config.get(key) for key in app.config if key.startswith("MAIL_")}

    def change(**values):
        app.config.update(values)

    yield change
    for key in [k for k in app.config if k.startswith("MAIL_")]:
        if key not in saved:
            del app.config[key]
    app.config.update(saved)


@pytest.fixture
def smtp_server(mail_config):
    recorder = Recorder()
    port = _free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    mail_config(
        MAIL_SERVER="127.0.0.1",
        MAIL_PORT=port,
        MAIL_USE_TLS=False,
        MAIL_USERNAME="",
        MAIL_FROM="notices@eldercare.example",
    )
    try:
        yield recorder
    finally:
        controller.stop()


def _message(notification_key: str) -> Notification:
    return db.session.scalar(
        sa.select(Notification).where(Notification.dedupe_key == notification_key)
    )


def _parse(raw: bytes):
    return email.message_from_bytes(raw, policy=email.policy.default)


def _pending_count() -> int:
    return db.session.scalar(
        sa.select(sa.func.count()).select_from(Notification).where(Notification.status == "pending")
    )


# --------------------------------------------------------------------------- SMTP


def test_the_smtp_server_receives_the_notice_in_utf8(app_ctx, factory, smtp_server):
    agent = factory.user("zhang.wei", roles=["family_agent"], email="zhang.wei@example.com")
    agent.display_name = "张伟"
    enqueue(agent.id, SUBJECT, BODY, "redemption:1:family")

    result = deliver_pending()

    assert result["sent"] == 1 and result["failed"] == 0 and not result["unavailable"]
    assert len(smtp_server.accepted) == 1
    mail_from, rcpt_tos, raw = smtp_server.accepted[0]
    assert mail_from == "notices@eldercare.example"
    assert rcpt_tos == ["zhang.wei@example.com"]
    parsed = _parse(raw)
    assert parsed["To"].addresses[0].addr_spec == "zhang.wei@example.com"
    assert parsed["To"].addresses[0].display_name == "张伟"
    assert str(parsed["Subject"]) == SUBJECT
    assert parsed.get_content_charset() == "utf-8"
    assert parsed.get_content().strip() == BODY
    assert parsed["Message-ID"].endswith("@eldercare.example>")
    assert parsed["Date"] is not None and parsed["Auto-Submitted"] == "auto-generated"
    message = _message("redemption:1:family")
    assert message.status == "sent" and message.sent_at is not None
    assert message.attempts == 0 and message.last_error is None


def test_a_refused_recipient_counts_a_failure_and_the_other_is_sent(app_ctx, factory, smtp_server):
    gone = factory.user("gone", roles=["family_agent"], email="gone@example.com")
    here = factory.user("here", roles=["family_agent"], email="here@example.com")
    smtp_server.refuse.add("gone@example.com")
    enqueue(gone.id, "first", "to a mailbox that is gone", "k:gone")  # older: tried first
    enqueue(here.id, "second", "to a mailbox that works", "k:here")

    result = deliver_pending()

    assert result == {
        "sent": 1,
        "in_app_only": 0,
        "failed": 1,
        "gave_up": 0,
        "skipped": 0,
        "unavailable": False,
    }
    assert [rcpt for _, rcpt, _ in smtp_server.accepted] == [["here@example.com"]]
    refused, sent = _message("k:gone"), _message("k:here")
    assert refused.status == "pending" and refused.attempts == 1 and refused.sent_at is None
    assert refused.last_error.startswith("550") and "mailbox unavailable" in refused.last_error
    assert sent.status == "sent" and sent.attempts == 0


def test_a_message_is_given_up_after_five_failures(app_ctx, factory, smtp_server):
    gone = factory.user("gone", roles=["elder"], email="gone@example.com")
    smtp_server.refuse.add("gone@example.com")
    enqueue(gone.id, "s", "b", "k:five")

    for run in range(1, MAX_ATTEMPTS):
        deliver_pending()
        message = _message("k:five")
        assert (message.status, message.attempts) == ("pending", run)
    result = deliver_pending()
    message = _message("k:five")
    assert result["gave_up"] == 1
    assert (message.status, message.attempts) == ("failed", MAX_ATTEMPTS)

    # Given up means not tried again.
    deliver_pending()
    assert len(smtp_server.rcpt_attempts) == MAX_ATTEMPTS
    assert _message("k:five").attempts == MAX_ATTEMPTS
    assert smtp_server.accepted == []


def test_delivered_messages_are_not_sent_again(app_ctx, factory, smtp_server):
    user = factory.user("once", roles=["elder"], email="once@example.com")
    enqueue(user.id, "s", "b", "k:once")
    assert deliver_pending()["sent"] == 1
    sent_at = _message("k:once").sent_at

    assert deliver_pending()["sent"] == 0
    assert len(smtp_server.accepted) == 1
    assert _message("k:once").sent_at == sent_at


def test_the_limit_leaves_the_rest_for_the_next_run(app_ctx, factory, smtp_server):
    user = factory.user("many", roles=["elder"], email="many@example.com")
    for n in range(3):
        enqueue(user.id, f"s{n}", "b", f"k:many:{n}")
    assert deliver_pending(limit=2)["sent"] == 2
    # Oldest first: the third waits.
    assert [str(_parse(raw)["Subject"]) for _, _, raw in smtp_server.accepted] == ["s0", "s1"]
    assert _message("k:many:2").status == "pending"
    assert deliver_pending()["sent"] == 1


def test_an_unreachable_server_costs_no_message_an_attempt(app_ctx, factory, mail_config):
    mail_config(MAIL_SERVER="127.0.0.1", MAIL_PORT=_free_port(), MAIL_TIMEOUT=5)  # nobody there
    user = factory.user("wait", roles=["elder"], email="wait@example.com")
    enqueue(user.id, "s", "b", "k:wait:1")
    enqueue(user.id, "s", "b", "k:wait:2")

    result = deliver_pending()

    assert result["unavailable"] is True and result["failed"] == 0 and result["sent"] == 0
    first, second = _message("k:wait:1"), _message("k:wait:2")
    assert (first.status, first.attempts) == ("pending", 0)
    assert "ConnectionRefusedError" in first.last_error
    # The run stopped rather than knock on the same closed door for every message.
    assert (second.status, second.attempts, second.last_error) == ("pending", 0, None)


def test_a_user_without_email_is_not_mailed_and_reads_it_in_messages(
    app, factory, smtp_server, client, login
):
    user = factory.user("no.mail", roles=["family_agent"])
    with app.app_context():
        enqueue(user.id, SUBJECT, BODY, "k:nomail")
        result = deliver_pending()
        message = _message("k:nomail")
        assert result["in_app_only"] == 1 and result["sent"] == 0
        assert smtp_server.rcpt_attempts == [] and smtp_server.accepted == []
        assert message.status == "sent" and message.last_error == mail.NO_ADDRESS_NOTE
        assert message.attempts == 0

    login(user)
    page = client.get("/messages", headers=EN).get_data(as_text=True)
    assert SUBJECT in page and "消费券在和平区南湖社区养老服务站使用了" in page
    assert "Shown here only." in page


# --------------------------------------------------------------------------- file backend


def test_without_mail_server_each_message_is_written_as_an_eml_file(
    app_ctx, factory, mail_config, tmp_path
):
    mail_config(MAIL_SERVER="", MAIL_FILE_DIR=str(tmp_path / "mail"))
    user = factory.user("file.reader", roles=["elder"], email="reader@example.com")
    enqueue(user.id, SUBJECT, BODY, "k:file")

    assert deliver_pending()["sent"] == 1

    files = list((tmp_path / "mail").glob("*.eml"))
    assert len(files) == 1 and files[0].name.endswith(f"-notification-{_message('k:file').id}.eml")
    parsed = _parse(files[0].read_bytes())
    assert parsed["To"].addresses[0].addr_spec == "reader@example.com"
    assert str(parsed["Subject"]) == SUBJECT
    assert parsed.get_content().strip() == BODY
    assert list((tmp_path / "mail").glob("*.part")) == []


def test_the_cli_delivers_and_the_job_is_registered(app, factory, mail_config, tmp_path):
    mail_config(MAIL_SERVER="", MAIL_FILE_DIR=str(tmp_path))
    user = factory.user("cli.user", roles=["elder"], email="cli@example.com")
    with app.app_context():
        enqueue(user.id, "s", "b", "k:cli")

    outcome = app.test_cli_runner().invoke(args=["notifications", "deliver", "--json"])

    assert outcome.exit_code == 0, outcome.output
    assert json.loads(outcome.output)["sent"] == 1
    assert len(list(tmp_path.glob("*.eml"))) == 1
    with app.app_context():
        assert _message("k:cli").status == "sent"
    job = all_jobs(app)["notifications-deliver"]
    assert job.func is deliver_pending
    assert (job.trigger, job.trigger_args) == ("interval", {"minutes": 1})


def test_a_message_of_a_channel_without_backend_waits(app_ctx, factory):
    user = factory.user("sms.user", roles=["elder"])
    enqueue(user.id, "s", "b", "k:sms")
    _message("k:sms").channel = "sms"  # a later release's channel
    db.session.flush()

    result = deliver_pending()

    assert result["skipped"] == 1
    message = _message("k:sms")
    assert (message.status, message.attempts, message.last_error) == ("pending", 0, None)


def test_a_deactivated_account_is_not_mailed(app_ctx, factory, smtp_server):
    user = factory.user("left", roles=["family_agent"], email="left@example.com")
    enqueue(user.id, "s", "b", "k:left")
    user.active = False
    db.session.flush()

    result = deliver_pending()

    assert result["gave_up"] == 1 and smtp_server.rcpt_attempts == []
    message = _message("k:left")
    assert (message.status, message.attempts, message.sent_at) == ("failed", 0, None)


# --------------------------------------------------------------------------- Messages page


def test_messages_page_shows_only_ones_own_newest_first(app, factory, client, login):
    mine = factory.user("reader", roles=["provider_admin"])
    other = factory.user("someone.else", roles=["elder"])
    with app.app_context():
        enqueue(mine.id, "Older notice for me", "old body", "k:mine:old")
        enqueue(mine.id, "Newer notice for me", "new body", "k:mine:new")
        enqueue(other.id, "Private notice for someone else", "secret body", "k:other")
        _message("k:mine:old").created_at = now_utc() - timedelta(days=2)
        db.session.flush()

    login(mine)
    response = client.get("/messages", headers=EN)
    page = response.get_data(as_text=True)

    assert response.status_code == 200
    assert "Older notice for me" in page and "Newer notice for me" in page
    assert page.index("Newer notice for me") < page.index("Older notice for me")
    assert "Private notice for someone else" not in page and "secret body" not in page
    assert 'href="/messages"' in page  # in the menu, for every role


def test_messages_page_shows_local_time(app, factory, client, login):
    user = factory.user("clock", roles=["elder"])
    with app.app_context():
        enqueue(user.id, "s", "b", "k:clock")
        message = _message("k:clock")
        message.created_at = message.created_at.replace(
            year=2025, month=7, day=1, hour=16, minute=30, second=0, microsecond=0
        )
        db.session.flush()
    login(user)
    page = client.get("/messages", headers=EN).get_data(as_text=True)
    assert "2025-07-02 00:30" in page  # 16:30 UTC is half past midnight in Shanghai


def test_messages_page_pages_by_fifty(app, factory, client, login):
    user = factory.user("busy", roles=["elder"])
    with app.app_context():
        for n in range(51):
            enqueue(user.id, f"Notice number {n:02d}.", "b", f"k:busy:{n}")
    login(user)
    first = client.get("/messages", headers=EN).get_data(as_text=True)
    second = client.get("/messages?page=2", headers=EN).get_data(as_text=True)
    assert first.count('class="message"') == 50 and "Page 1 of 2" in first
    assert second.count('class="message"') == 1 and "Page 2 of 2" in second


def test_messages_page_requires_login(client):
    response = client.get("/messages", headers=EN)
    assert response.status_code == 302
    assert "/login" in response.headers["Location"]


# --------------------------------------------------------------------------- the address


def test_a_person_sets_and_clears_the_email_for_notices(app, factory, client, login):
    user = factory.user("setter", roles=["family_agent"])
    login(user)

    response = client.post("/messages/email", data={"email": "Ｗａｎｇ＠ＱＱ．ｃｏｍ"}, headers=EN)
    assert response.status_code == 302
    db.session.refresh(user)
    assert user.email == "Wang@qq.com"  # full-width typing folded; the domain lower-cased
    row = db.session.scalars(
        sa.select(AuditLog).where(AuditLog.action == "user.email").order_by(AuditLog.id.desc())
    ).first()
    assert row.after == {"email": "W***@qq.com"} and row.object_id == str(user.id)

    response = client.post("/messages/email", data={"email": "  "}, headers=EN)
    assert response.status_code == 302
    db.session.refresh(user)
    assert user.email is None


@pytest.mark.parametrize(
    "typed",
    [
        "wang",
        "wang@",
        "wang@qq",
        "王@qq.com",
        "a b@qq.com",
        "x@-bad.com",
        "a" * 60 + "@" + "b" * 60 + ".b" * 100 + ".cn",
    ],
)
def test_a_malformed_email_is_refused_and_changes_nothing(app, factory, client, login, typed):
    user = factory.user("careful", roles=["elder"], email="kept@example.com")
    audit_rows = db.session.scalar(sa.select(sa.func.count()).select_from(AuditLog))
    login(user)

    response = client.post("/messages/email", data={"email": typed}, headers=EN)

    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "Enter an email address such as name@example.com." in page
    assert 'aria-invalid="true"' in page
    db.session.refresh(user)
    assert user.email == "kept@example.com"
    after = db.session.scalar(sa.select(sa.func.count()).select_from(AuditLog))
    assert after == audit_rows + 1  # only the sign-in's row


# --------------------------------------------------------------------------- PostgreSQL


@pytest.mark.postgres
def test_two_schedulers_draining_the_outbox_send_each_message_once(private_app):
    """SKIP LOCKED: concurrent runs share the pending messages and never both send one."""
    from eldercare.account_service import create_user

    sent: list[int] = []

    def recording_backend(notification, recipient):
        sent.append(notification.id)
        return None

    notifications.register_backend("test-race", recording_backend)
    try:
        with private_app.app_context():
            user = create_user(
                "racer", display_name="r", password="long-password-1", roles=["elder"]
            )
            db.session.flush()
            for n in range(60):
                enqueue(user.id, "s", "b", f"race:{n}")
            db.session.execute(sa.update(Notification).values(channel="test-race"))
            db.session.commit()

        def drain(_):
            with private_app.app_context():
                try:
                    return deliver_pending()["sent"]
                finally:
                    db.session.remove()

        with ThreadPoolExecutor(max_workers=4) as threads:
            results = list(threads.map(drain, range(4)))
        with private_app.app_context():
            left = _pending_count()
            db.session.remove()
    finally:
        notifications._BACKENDS.pop("test-race", None)
    assert sum(results) == 60
    assert sorted(sent) == sorted(set(sent)) and len(sent) == 60
    assert left == 0
