"""/api/v1 for the city's mini-program, acting for an elder.

A token of the elder's own account or of a family agent's ("read", or "vouchers:read"). It
sees the current vouchers of the elders the account acts for, with their redemptions, and
asks for the rotating QR token a provider scans. Another elder's voucher answers 404, as a
missing one does.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime

import sqlalchemy as sa
from flask import after_this_request, g
from flask_babel import lazy_gettext as _l

from eldercare.accounts import ELDER_ROLES, elders_acted_for
from eldercare.api import BEARER, error_responses, local_time
from eldercare.db import db
from eldercare.errors import NotFound, PermissionDenied
from eldercare.timeutil import local_today, now_utc
from eldercare.tokens import ELDERS_WRITE, token_required
from marketplace import catalogue
from vouchers.api import blp, shape_redemption, shape_voucher
from vouchers.models import Redemption, TokenUse, Voucher
from vouchers.redemption import qr_tokens
from vouchers.redemption.steps import month_of
from vouchers.schemas import (
    VouchersElderRedemptionSchema,
    VouchersQrTokenSchema,
    VouchersVoucherDetailSchema,
    VouchersVoucherSchema,
)
from vouchers.views import no_store

_READ = ("read", "vouchers:read")


def _for_elders(view):
    """Only the accounts of elders and of their family agents (checked before the body)."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        if not g.api_user.has_role(*ELDER_ROLES):
            raise PermissionDenied(_l("This is for the accounts of elders and their families."))
        return view(*args, **kwargs)

    return wrapper


def _elder_ids() -> list[int]:
    return [elder.id for elder in elders_acted_for(g.api_user)]


def _my_voucher(voucher_id: int) -> Voucher:
    """A voucher of an elder the caller acts for; anyone else's looks missing."""
    voucher = db.session.get(Voucher, voucher_id)
    if voucher is None or voucher.resident_id not in _elder_ids():
        raise NotFound()
    return voucher


def _redemptions_of(voucher: Voucher) -> list[dict]:
    rows = db.session.scalars(
        sa.select(Redemption)
        .where(Redemption.voucher_id == voucher.id)
        .order_by(Redemption.checked_in_at.desc(), Redemption.id.desc())
    ).all()
    return [_elder_redemption(r) for r in rows]


def _elder_redemption(redemption: Redemption) -> dict:
    provider = catalogue.service_by_id(redemption.service_id).provider
    return shape_redemption(redemption) | {"provider": {"id": provider.id, "name": provider.name}}


# --- endpoints ------------------------------------------------------------------------------


@blp.get("/vouchers")
@token_required(*_READ, any_of=True)
@_for_elders
@blp.doc(security=BEARER)
@blp.response(200, VouchersVoucherSchema(many=True))
@error_responses(blp, 401, 403)
def list_vouchers():
    """This month's vouchers of the elders the account acts for (an elder without one this
    month is not listed): face value, balance, held and status."""
    today = local_today()
    ids = _elder_ids()
    rows = db.session.scalars(
        sa.select(Voucher)
        .where(Voucher.resident_id.in_(ids), Voucher.month == month_of(today))
        .order_by(Voucher.id)
    ).all()
    order = {resident_id: i for i, resident_id in enumerate(ids)}
    rows = sorted(rows, key=lambda v: order[v.resident_id])
    return [shape_voucher(v, today) for v in rows]


@blp.get("/vouchers/<int:voucher_id>")
@token_required(*_READ, any_of=True)
@_for_elders
@blp.doc(security=BEARER)
@blp.response(200, VouchersVoucherDetailSchema)
@error_responses(blp, 401, 403, 404)
def get_voucher(voucher_id):
    """One voucher, with its redemptions, newest first."""
    voucher = _my_voucher(voucher_id)
    return shape_voucher(voucher, local_today()) | {"redemptions": _redemptions_of(voucher)}


@blp.get("/vouchers/<int:voucher_id>/redemptions")
@token_required(*_READ, any_of=True)
@_for_elders
@blp.doc(security=BEARER)
@blp.response(200, VouchersElderRedemptionSchema(many=True))
@error_responses(blp, 401, 403, 404)
def list_voucher_redemptions(voucher_id):
    """Where and for what the voucher was used (one month's, so not paged), newest first."""
    return _redemptions_of(_my_voucher(voucher_id))


@blp.post("/vouchers/<int:voucher_id>/qr-token")
@token_required(ELDERS_WRITE)
@_for_elders
@blp.doc(security=BEARER)
@blp.response(200, VouchersQrTokenSchema)
@error_responses(blp, 401, 403, 404, 409)
def make_qr_token(voucher_id):
    """A fresh rotating token for the provider to scan, its link and when it expires.

    A POST, answered with ``Cache-Control: no-store``, so that a live token stays out of
    logs of URLs and out of caches. The token changes every minute, a scanner accepts it for
    about two, and only once: ask again at ``refresh_at``, or sooner after a scan (the answer
    is then the minute's next unused code); ``already_used`` is true only when all of this
    minute's codes have been scanned, and the app should say "wait for the next code". A
    revoked voucher, or one of another month, is refused (409 ``voucher_revoked``,
    ``voucher_expired``).
    """
    voucher = _my_voucher(voucher_id)
    now = now_utc()
    qr_tokens.check_voucher_usable(voucher, local_today(now))
    token = qr_tokens.fresh_token(voucher.id, now=now)
    window = int(now.timestamp()) // qr_tokens.WINDOW_SECONDS
    seconds = qr_tokens.WINDOW_SECONDS

    def at(window_number: int) -> datetime:
        return local_time(datetime.fromtimestamp(window_number * seconds, UTC))

    digest = qr_tokens.token_digest(qr_tokens.normalise_code(token))
    used = db.session.scalar(sa.select(TokenUse.id).where(TokenUse.token_digest == digest))
    after_this_request(no_store)
    return {
        "already_used": used is not None,
        "token": token,
        "token_grouped": qr_tokens.group(token),
        "url": qr_tokens.qr_url(token),
        "refresh_at": at(window + 1),
        "expires_at": at(window + qr_tokens.ACCEPTED_WINDOWS),
    }
