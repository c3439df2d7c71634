"""/api/v1 endpoints of the vouchers domain, for three kinds of client.

- **The city's mini-program, acting for an elder** (``api_elders``): a token of the elder's
  own account or of a family agent's ("read"). It reads the current vouchers of the elders
  the account acts for, with their redemptions, and asks for the rotating QR token a
  provider scans. Another elder's voucher answers 404.
- **A provider's scanner** (``api_scanner``): a token of one of its staff ("providers:write",
  or "vouchers:redeem"; reading also with "read"). It scans a code (a rotating token or a
  printed card with its PIN), checks in, prices, takes cash or a card the terminal
  tokenized, and reverses. Another provider's redemption answers 404.
- **The bureau** (``api_bureau``): the pool's balances, the districts' allocations and the
  ledger check ("read"); anomaly flags and rules (``vouchers.integrity.api``: the flags with
  their evidence in words, deciding one with "bureau:write", the rules' versions).

Every rule lives in the service modules (``redemption``, ``payments``, ``qr_tokens``,
``cards``, ``ledger``); the views find the caller's records, call them and shape the answer.
Money is integer fen; times are ISO 8601 in Asia/Shanghai. The caller's token, and its role,
are checked before the body is parsed, so a caller without them learns nothing from a 422.
"""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from flask_smorest import Blueprint

from eldercare.api import local_time
from eldercare.db import db
from eldercare.residents import Resident
from marketplace import catalogue
from vouchers.models import Redemption, Voucher
from vouchers.pool.policy import shown_rules
from vouchers.redemption.steps import usable_problem

blp = Blueprint("vouchers_api", __name__, url_prefix="/api/v1", description="Vouchers")


# --- shaping answers ------------------------------------------------------------------------


def month_text(day: date) -> str:
    return day.strftime("%Y-%m")


def shape_voucher(voucher: Voucher, today: date) -> dict:
    resident = db.session.get(Resident, voucher.resident_id)
    problem = usable_problem(voucher, today)
    # Today's rules for a service (the ratio and scope of the day); the face value is the
    # voucher's own.
    policy = (
        shown_rules(voucher, today) if voucher.month == today.replace(day=1) else voucher.policy
    )
    return {
        "id": voucher.id,
        "resident": {"id": resident.id, "name": resident.name},
        "month": month_text(voucher.month),
        "kind": voucher.kind,
        "status": voucher.status,
        "face_value_fen": voucher.face_value_fen,
        "balance_fen": voucher.balance_fen,
        "held_fen": voucher.held_fen,
        # Counted from the redemptions: an expired or revoked voucher's balance went back to
        # the district, so face value minus balance would count it as used.
        "used_fen": db.session.scalar(
            sa.select(sa.func.coalesce(sa.func.sum(Redemption.subsidy_fen), 0)).where(
                Redemption.voucher_id == voucher.id, Redemption.status == "redeemed"
            )
        ),
        "ratio_bp": policy.ratio_bp,
        "in_scope_categories": sorted(policy.category_set),
        "usable": problem is None,
        "problem": str(problem) if problem else None,
        "issued_at": local_time(voucher.issued_at),
    }


def shape_service(service) -> dict:
    return {
        "id": service.id,
        "title": service.title,
        "category": service.category_code,
        "unit": service.unit,
        "delivery_place": service.delivery_place,
    }


def shape_redemption(redemption: Redemption) -> dict:
    """What both sides see of a redemption."""
    service = catalogue.service_by_id(redemption.service_id)
    return {
        "id": redemption.id,
        "voucher_id": redemption.voucher_id,
        "status": redemption.status,
        "service": shape_service(service),
        "booking_id": redemption.booking_id,
        "checked_in_at": local_time(redemption.checked_in_at),
        "checked_out_at": local_time(redemption.checked_out_at),
        "quantity": redemption.quantity,
        "price_fen": redemption.price_fen,
        "insurance_fen": redemption.insurance_fen,
        "subsidy_fen": redemption.subsidy_fen,
        "copay_fen": redemption.copay_fen,
        "payment_method": redemption.payment_method,
        "redeemed_at": local_time(redemption.redeemed_at),
        "reversed_at": local_time(redemption.reversed_at),
        "reversal_reason": redemption.reversal_reason,
    }


# The endpoints, each module adding its own to ``blp`` (imported for that alone).
from vouchers import api_bureau, api_elders, api_partners  # noqa: E402, F401
from vouchers.insight import api_forecast  # noqa: E402, F401
from vouchers.integrity import api as integrity_api  # noqa: E402, F401
from vouchers.redemption import api_scanner  # noqa: E402, F401
