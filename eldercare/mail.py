"""The outbox's email backend, and the address it sends to.

``send_notification`` is registered for the "email" channel (``eldercare.notifications``).
With ``MAIL_SERVER`` set it hands each message to that SMTP server (STARTTLS and login when
configured); without it (development, the demo) it writes the message as an .eml file under
``MAIL_FILE_DIR`` (default ``<instance>/mail``), as Django's file backend does, so a newcomer
can open what would have been sent and nobody real is mailed.

An account without an email address is not an error: every notice is on the person's
Messages page (``/messages``) anyway, so the backend answers ``Delivered`` with a note and
the outbox marks the message sent, keeping the note in ``last_error`` for whoever looks.
"""

from __future__ import annotations

import os
import re
import smtplib
import ssl
import unicodedata
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, parseaddr

from flask import current_app
from flask_babel import lazy_gettext as _l

from eldercare import audit
from eldercare.db import db
from eldercare.errors import InvalidInput, NotFound
from eldercare.notifications import (
    BackendUnavailable,
    Delivered,
    DeliveryFailed,
    Notification,
    rendered,
)

NO_ADDRESS_NOTE = "no email address on the account; shown in Messages only"
MAX_EMAIL_LENGTH = 254  # RFC 5321's limit on a forward path, less the angle brackets

# What people type as an address, checked for shape only (the server has the last word).
# ASCII only: an internationalised address would need SMTPUTF8 from every relay on the way.
_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL = re.compile(rf"^(?P<local>{_LOCAL})@(?P<domain>{_LABEL}(?:\.{_LABEL})+)$")


# --------------------------------------------------------------------------- the address


def normalize_email(text: str | None) -> str | None:
    """The address as stored (domain lower-cased), None for a blank one; InvalidInput
    (field "email") for anything that is not shaped like name@example.com.

    NFKC first: a Chinese input method in full-width mode types "ｗａｎｇ＠ｑｑ．ｃｏｍ", which
    is meant as wang@qq.com."""
    value = unicodedata.normalize("NFKC", text or "").strip()
    if not value:
        return None
    match = _EMAIL.match(value)
    if not match or len(value) > MAX_EMAIL_LENGTH or len(match["local"]) > 64:
        raise InvalidInput(
            details={"email": _l("Enter an email address such as name@example.com.")}
        )
    return f"{match['local']}@{match['domain'].lower()}"


def masked(email: str | None) -> str | None:
    """Enough of an address for the audit trail to tell a change, not to mail anyone."""
    if not email:
        return None
    local, _, domain = email.partition("@")
    return f"{local[:1]}***@{domain}"


def set_email(user_id: int, email: str | None):
    """Set (or, with a blank value, remove) the address an account's notices are emailed to.

    Audited with the address masked: the trail must show that it changed, and it must not
    become a list of everyone's email addresses."""
    from eldercare.accounts import User

    user = db.session.get(User, user_id)
    if user is None:
        raise NotFound()
    new = normalize_email(email)
    if new == user.email:
        return user
    before = {"email": masked(user.email)}
    user.email = new
    audit.record("user.email", user, before=before, after={"email": masked(new)})
    return user


# --------------------------------------------------------------------------- the message


def _sender() -> str:
    return current_app.config.get("MAIL_FROM") or "eldercare@localhost"


def languages_of(recipient) -> list[str]:
    """The languages a notice is written in when it is sent: the recipient's own, chosen
    while signed in (``User.language``); without one, every supported language, the
    programme's first one first. Pages (Messages) always use their reader's."""
    supported = list(current_app.config["SUPPORTED_LOCALES"])
    language = getattr(recipient, "language", None)
    return [language] if language in supported else supported


def build_message(
    notification: Notification, to_address: str, to_name: str = "", languages=None
) -> EmailMessage:
    """The RFC 5322 message for one notification (UTF-8 subject and body), its stored text
    said at sending in ``languages`` (default: every supported language).

    Message-ID and Date come from the notification, not the moment of sending, so a message
    sent twice (delivery is at-least-once) is the same message twice: mail systems and
    clients that drop duplicates by Message-ID will drop it."""
    sender = _sender()
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    created = notification.created_at
    message = EmailMessage()
    message["From"] = sender
    message["To"] = formataddr((to_name, to_address)) if to_name else to_address
    subject, body = rendered(notification, languages or languages_of(None))
    message["Subject"] = subject
    message["Date"] = format_datetime(created)
    message["Message-ID"] = f"<notification.{notification.id}.{int(created.timestamp())}@{domain}>"
    # RFC 3834: a notice from a machine; out-of-office robots should not answer it.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(body, charset="utf-8")
    return message


def _send_smtp(message: EmailMessage, to_address: str) -> None:
    config = current_app.config
    try:
        with smtplib.SMTP(
            config["MAIL_SERVER"],
            int(config.get("MAIL_PORT") or 25),
            timeout=config.get("MAIL_TIMEOUT") or 20,
        ) as smtp:
            if config.get("MAIL_USE_TLS"):
                smtp.starttls(context=ssl.create_default_context())
            if config.get("MAIL_USERNAME"):
                smtp.login(config["MAIL_USERNAME"], config.get("MAIL_PASSWORD", ""))
            smtp.send_message(message, from_addr=parseaddr(_sender())[1], to_addrs=[to_address])
    except smtplib.SMTPRecipientsRefused as error:
        # This person's address is the problem (unknown mailbox, full, refused by policy).
        code, reply = next(iter(error.recipients.values()))
        raise DeliveryFailed(f"{code} {_text(reply)}") from None
    except smtplib.SMTPDataError as error:
        # The server refused this message's content.
        raise DeliveryFailed(f"{error.smtp_code} {_text(error.smtp_error)}") from None
    except (smtplib.SMTPException, OSError) as error:
        # Connection refused, timeout, TLS, login or sender refused: the channel is down or
        # misconfigured, whichever message is being sent.
        raise BackendUnavailable(f"{type(error).__name__}: {error}") from error


def _text(reply) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def mail_dir() -> str:
    return current_app.config.get("MAIL_FILE_DIR") or os.path.join(
        current_app.instance_path, "mail"
    )


def _write_file(message: EmailMessage, notification: Notification) -> str:
    """Write the message where a newcomer can read it; a resend overwrites the same file."""
    directory = mail_dir()
    os.makedirs(directory, exist_ok=True)
    name = f"{notification.created_at:%Y%m%d-%H%M%S}-notification-{notification.id}.eml"
    path = os.path.join(directory, name)
    partial = path + ".part"
    with open(partial, "wb") as handle:
        handle.write(bytes(message))
    os.replace(partial, path)  # never a half-written .eml, even if the job dies mid-write
    return path


def send_notification(notification: Notification, recipient) -> Delivered | None:
    """The "email" channel's backend (see ``eldercare.notifications.register_backend``)."""
    if not recipient.email:
        return Delivered(NO_ADDRESS_NOTE)
    message = build_message(
        notification, recipient.email, recipient.display_name, languages_of(recipient)
    )
    if current_app.config.get("MAIL_SERVER"):
        _send_smtp(message, recipient.email)
    else:
        _write_file(message, notification)
    return None
