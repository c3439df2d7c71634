"""The notification outbox: messages are written in the business transaction and sent later.

Writing the message row in the same transaction as its cause means a rolled-back change
never notifies anyone, and a committed one is never forgotten. ``dedupe_key`` makes
producers idempotent: a rerun job asks to send the same message and nothing new is queued.
Backends (email now, ``eldercare.mail``; SMS or WeChat later) drain the outbox through
``deliver_pending``, which the "notifications-deliver" job runs every minute.

Delivery is at-least-once. Each message is sent and then marked sent in its own
transaction; a crash (or a lost database connection) after the mail server accepted a
message but before that commit leaves it pending, and the next run sends it again. The
other order, marking first and sending after, would instead lose a message whenever the
send then failed. For notices ("¥30 of the voucher was used at ...") a rare duplicate costs
a family a second look, while a lost one hides a use of the elder's subsidy from them; so a
duplicate is the failure to prefer. Committing per message keeps that window to one message:
a crash half-way through a run does not resend what was already sent.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime

import click
import sqlalchemy as sa
from flask.cli import AppGroup
from sqlalchemy.orm import Mapped, mapped_column

from eldercare import stored_text
from eldercare.accounts import User
from eldercare.db import Base, UTCDateTime, db, unit_of_work
from eldercare.timeutil import now_utc

log = logging.getLogger(__name__)

STATUSES = ("pending", "sent", "failed")
# Failed sends of one message before it is given up ("failed"); it stays in Messages.
MAX_ATTEMPTS = 5
_ERROR_LENGTH = 500
SUBJECT_LENGTH = 200


class Notification(Base):
    __tablename__ = "notifications"
    __table_args__ = (
        sa.CheckConstraint("status IN ('pending', 'sent', 'failed')", name="known_status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    recipient_user_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), index=True)
    # Which backend should carry it ("email"; later "sms", "wechat").
    channel: Mapped[str] = mapped_column(sa.String(16), default="email")
    # Subject and body are stored text (eldercare.stored_text): a code and its parameters,
    # said in the reader's language when shown or sent (older rows: free text, both languages).
    subject: Mapped[str] = mapped_column(sa.String(SUBJECT_LENGTH))
    body: Mapped[str] = mapped_column(sa.Text)
    # Producer-chosen identity of the message, e.g. "assessment-expiry:12:7".
    dedupe_key: Mapped[str] = mapped_column(sa.String(120), unique=True)
    status: Mapped[str] = mapped_column(sa.String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=now_utc)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Pending or failed: why the last send did not go through (the server's reply).
    # Sent: a note when the channel did not carry it, e.g. no email address on the account,
    # so the message is in the person's Messages page only (see ``Delivered``).
    last_error: Mapped[str | None] = mapped_column(sa.String(_ERROR_LENGTH))


def notice(kind: str, **params) -> tuple[str, str]:
    """A notice's subject and body as stored text: the codes ``<kind>.subject`` and
    ``<kind>.body`` (registered by the domain that sends it), with the same parameters.
    Rendered in the reader's language on the Messages page, in the recipient's at sending."""
    return (
        stored_text.encode(f"{kind}.subject", limit=SUBJECT_LENGTH, **params),
        stored_text.encode(f"{kind}.body", **params),
    )


def notice_messages(kind: str, subject: str, body: str) -> None:
    """Register the words of notice ``kind``: ``subject`` and ``body`` are lazy gettext
    strings with the same %(name)s parameters."""
    stored_text.message(f"{kind}.subject", subject)
    stored_text.message(f"{kind}.body", body)


def rendered(message: Notification, locales: list[str]) -> tuple[str, str]:
    """Subject and body in each of ``locales`` (a language once when all say the same, as
    older free-text rows do): subjects joined by " / ", bodies by a blank line."""
    subjects, bodies = [], []
    for locale in locales:
        subject = stored_text.render(message.subject, locale)
        body = stored_text.render(message.body, locale)
        if subject not in subjects:
            subjects.append(subject)
        if body not in bodies:
            bodies.append(body)
    return " / ".join(subjects), "\n\n".join(bodies)


def enqueue(recipient_user_id: int, subject: str, body: str, dedupe_key: str) -> bool:
    """Queue a message unless one with the same key exists; True if it was queued."""
    exists = db.session.scalar(
        sa.select(Notification.id).where(Notification.dedupe_key == dedupe_key)
    )
    if exists is not None:
        return False
    db.session.add(
        Notification(
            recipient_user_id=recipient_user_id,
            subject=stored_text.clip(subject, SUBJECT_LENGTH),
            body=body,
            dedupe_key=dedupe_key,
        )
    )
    db.session.flush()
    return True


def enqueue_many(messages: list[tuple[int, str, str, str]]) -> int:
    """``enqueue`` for several (recipient, subject, body, dedupe key) at once, in two
    statements whatever their number (one when there is none to queue); how many were
    queued."""
    keys = [key for *_, key in messages]
    if not keys:
        return 0
    existing = set(
        db.session.scalars(
            sa.select(Notification.dedupe_key).where(Notification.dedupe_key.in_(keys))
        )
    )
    fresh = {}
    for recipient, subject, body, key in messages:
        if key not in existing and key not in fresh:
            fresh[key] = Notification(
                recipient_user_id=recipient,
                subject=stored_text.clip(subject, SUBJECT_LENGTH),
                body=body,
                dedupe_key=key,
            )
    db.session.add_all(fresh.values())
    db.session.flush()
    return len(fresh)


# --------------------------------------------------------------------------- backends


class Delivered(str):
    """A backend's answer for a message it did not carry but that is nonetheless delivered
    (shown in the recipient's Messages page): the outbox marks it sent and keeps the text
    as its note. Returning None means the channel carried it."""


class DeliveryFailed(Exception):
    """This message could not be sent (e.g. the server refused the recipient): counts one
    failed attempt of this message; the run goes on with the others."""


class BackendUnavailable(Exception):
    """The channel itself is down or misconfigured (server unreachable, login refused): no
    message is to blame, so none loses an attempt; the run stops and the next one retries.
    A mail server down for an hour must not turn an hour of notices into failures."""


# channel -> send_fn(notification, recipient User) -> None | Delivered
Backend = Callable[[Notification, object], "Delivered | None"]
_BACKENDS: dict[str, Backend] = {}


def register_backend(channel: str, send_fn: Backend) -> None:
    """Make ``send_fn`` carry the messages of ``channel`` (a later call replaces it).

    ``send_fn(notification, recipient)`` returns None when sent, a ``Delivered`` note when
    delivered without the channel, raises ``DeliveryFailed`` for this message or
    ``BackendUnavailable`` for the channel; any other exception counts as ``DeliveryFailed``.
    """
    _BACKENDS[channel] = send_fn


def backend_for(channel: str) -> Backend | None:
    return _BACKENDS.get(channel)


def _describe(error: BaseException) -> str:
    if isinstance(error, DeliveryFailed | BackendUnavailable):
        return str(error)[:_ERROR_LENGTH]  # the backend's own words, e.g. the server's reply
    return f"{type(error).__name__}: {error}"[:_ERROR_LENGTH]


def _next_pending(after_id: int, on_postgres: bool) -> Notification | None:
    """The oldest pending message after ``after_id``, locked for this transaction.

    SKIP LOCKED lets two schedulers (or a scheduler and a manual run) share the outbox: each
    takes messages the other is not holding, and a message it holds is invisible to the
    other until committed, when it is no longer pending. On SQLite FOR UPDATE is not
    rendered; SQLite lets one writer at a time anyway.
    """
    statement = (
        sa.select(Notification)
        .where(Notification.status == "pending", Notification.id > after_id)
        .order_by(Notification.id)  # ids grow with time: oldest first
        .limit(1)
    )
    if on_postgres:
        statement = statement.with_for_update(skip_locked=True)
    return db.session.scalar(statement)


def deliver_pending(limit: int = 200, *, now: datetime | None = None) -> dict:
    """Send up to ``limit`` pending messages, oldest first, each through its channel's
    backend, and commit after each one (see the module's note on at-least-once).

    This commits, unlike service functions: it is the unit of work's owner, run by the job
    and the CLI, and per-message commits are what keep a crash from resending a whole batch.
    Returns counts: sent, in_app_only, failed (attempts counted), gave_up (now "failed"),
    skipped (no backend for the channel) and unavailable (True when a backend was down).
    """
    on_postgres = db.session.get_bind().dialect.name == "postgresql"
    counts = {"sent": 0, "in_app_only": 0, "failed": 0, "gave_up": 0, "skipped": 0}
    unavailable = False
    last_id = 0
    for _ in range(max(limit, 0)):
        message = _next_pending(last_id, on_postgres)
        if message is None:
            break
        last_id = message.id
        stamp = now or now_utc()
        recipient = db.session.get(User, message.recipient_user_id)
        send = backend_for(message.channel)
        if send is None:
            # Left pending: a backend registered later (a new channel's release) sends it.
            counts["skipped"] += 1
            db.session.commit()  # nothing changed; ends the transaction and its row lock
            continue
        if recipient is None or not recipient.active:
            # Nobody to tell any more; keep the row (it is the record of what was said).
            message.status, message.last_error = "failed", "recipient account is inactive"
            counts["gave_up"] += 1
            db.session.commit()
            continue
        try:
            note = send(message, recipient)
        except BackendUnavailable as error:
            message.last_error = _describe(error)
            db.session.commit()
            log.warning("notification backend %r unavailable: %s", message.channel, error)
            unavailable = True
            break
        except Exception as error:  # any: one message failing must not stop the others
            message.attempts += 1
            message.last_error = _describe(error)
            if message.attempts >= MAX_ATTEMPTS:
                message.status = "failed"
                counts["gave_up"] += 1
            else:
                counts["failed"] += 1
            log.warning("notification %s not sent (%s): %s", message.id, message.attempts, error)
        else:
            message.status, message.sent_at = "sent", stamp
            message.last_error = str(note)[:_ERROR_LENGTH] if note else None
            counts["in_app_only" if note else "sent"] += 1
        db.session.commit()
    return counts | {"unavailable": unavailable}


# --------------------------------------------------------------------------- CLI

cli = AppGroup("notifications", help="The notification outbox.")


@cli.command("deliver")
@click.option("--limit", default=200, show_default=True, help="Most messages to send now.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")
def deliver_command(limit: int, as_json: bool):
    """Send the pending notifications now (the scheduler does it every minute)."""
    with unit_of_work():
        result = deliver_pending(limit)
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(
        f"sent {result['sent']}, in Messages only {result['in_app_only']}, "
        f"failed {result['failed']}, given up {result['gave_up']}, "
        f"no backend {result['skipped']}"
    )
    if result["unavailable"]:
        click.echo("a backend was unavailable; the rest stay pending for the next run", err=True)
