"""Telling the family that a voucher was issued, through the notification outbox.

An elder approved mid-month gets the first voucher from the eligibility feed (or from the
monthly catch-up, when that runs first); either way the people who act for the elder (the
elder's own account and every family agent) learn it has come, what it is worth and until
when it can be used, without having to look. One message per voucher and person (the dedupe
key), so a rerun of the feed queues nothing new.
"""

from __future__ import annotations

from datetime import timedelta

from flask_babel import lazy_gettext as _l

from eldercare.accounts import accounts_acting_for
from eldercare.db import db
from eldercare.forms import yuan
from eldercare.notifications import enqueue_many, notice, notice_messages
from eldercare.residents import Resident
from vouchers.issuance.monthly import next_month
from vouchers.models import Voucher

# Stored as codes, said in the reader's language (eldercare.notifications).
notice_messages(
    "voucher.issued",
    _l("Voucher issued: %(amount)s"),
    _l(
        "The eldercare voucher of %(name)s for %(month)s has been issued: "
        "%(amount)s, to use at certified providers until %(last_day)s."
    ),
)


def tell_voucher_issued(voucher: Voucher) -> int:
    """Queue "the voucher of <month> is issued: ¥X, usable until <day>" for everyone who
    acts for the elder; how many messages were queued."""
    recipients = accounts_acting_for(voucher.resident_id)
    if not recipients:
        return 0
    values = {
        "name": db.session.get(Resident, voucher.resident_id).masked_name,
        "month": f"{voucher.month:%Y-%m}",
        "amount": yuan(voucher.face_value_fen),
        "last_day": (next_month(voucher.month) - timedelta(days=1)).isoformat(),
    }
    subject, body = notice("voucher.issued", **values)
    return enqueue_many(
        [(user.id, subject, body, f"voucher-issued:{voucher.id}:{user.id}") for user in recipients]
    )
