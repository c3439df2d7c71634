"""Reconciliation, part (b): the card gateway against what the platform recorded.

Read through the gateway's own API (Stripe's list endpoints, paged with ``starting_after``
while ``has_more``): the payment intents and the refunds. For a month M:

- every intent the platform recorded as paying one of M's redemptions (a ``succeeded``
  payment attempt) is at the gateway, succeeded, for the attempt's amount, and nothing of it
  refunded there;
- every refund the platform recorded (an attempt ``refunded``: a reversal's refund of the
  co-payment, or an orphan charge given back) is at the gateway, for that amount;
- the gateway holds nothing the platform does not know: an intent created in M (Shanghai)
  that succeeded, or carries our metadata, must be one of the platform's attempts (of any
  month); a succeeded intent whose attempt the platform still has as open or dropped is
  money taken that no redemption stands on; a refund must be one the platform recorded.

Objects younger than ``GRACE`` are left for the next run: a payment or a refund is at the
gateway a moment before the platform commits it.

Listing asks the gateway for the month's window (``created[gte]``/``created[lt]``); a
gateway that refuses the filter (localstripe) is listed whole and filtered here. An intent
of the platform's that the window missed is retrieved by id.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import sqlalchemy as sa
from flask import current_app

from eldercare.db import db
from eldercare.timeutil import SHANGHAI, now_utc
from vouchers.errors import GatewayError, GatewayRefused
from vouchers.models import PaymentAttempt, Redemption, Voucher
from vouchers.redemption.gateway import Gateway, amount_received, card_payments_enabled, gateway

GRACE = timedelta(hours=1)
PAGE = 100
LIST_LIMIT = 200  # findings and single retrievals per run
SLACK = timedelta(days=1)  # a payment may finish the day after its voucher's month ends


def _month_window(month: date) -> tuple[datetime, datetime]:
    start = datetime.combine(month, time(0), tzinfo=SHANGHAI)
    following = date(month.year + (month.month == 12), month.month % 12 + 1, 1)
    return start, datetime.combine(following, time(0), tzinfo=SHANGHAI)


# Gateways seen refusing the date filter (localstripe answers 400 or 500): listed whole.
_UNFILTERED: set[str] = set()


def _list_all(gw: Gateway, path: str, created: dict | None) -> list[dict]:
    """Every object of a list endpoint, page by page. ``created`` narrows it when the
    gateway supports the filter; a gateway that fails the filtered request once (asked
    without retries) is listed whole from then on."""
    query: dict = {"limit": PAGE}
    if created and gw.base_url not in _UNFILTERED:
        retries, gw.retries = gw.retries, 0
        try:
            first = gw._request("GET", path, query=query | {"created": created})  # noqa: SLF001
        except GatewayError:
            _UNFILTERED.add(gw.base_url)
        else:
            query["created"] = created
            return _pages(gw, path, query, first)
        finally:
            gw.retries = retries
    return _pages(gw, path, query, None)


def _pages(gw: Gateway, path: str, query: dict, page: dict | None) -> list[dict]:
    found: list[dict] = []
    while True:
        if page is None:
            # The client's one transport (retries, API version, errors); listing is a GET.
            page = gw._request("GET", path, query=query)  # noqa: SLF001
        data = page.get("data") or []
        found.extend(data)
        if not page.get("has_more") or not data:
            return found
        query = query | {"starting_after": data[-1]["id"]}
        page = None


def _finding(kind: str, key, evidence: dict, district_id=None) -> dict:
    return {
        "kind": kind,
        "fingerprint": f"{kind}:{key}",
        "evidence": evidence,
        "district_id": district_id,
    }


def _created(obj: dict) -> datetime | None:
    value = obj.get("created")
    return datetime.fromtimestamp(value, SHANGHAI) if isinstance(value, int) else None


def _known(column, ids: list[str]) -> set[str]:
    known: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        known.update(db.session.scalars(sa.select(column).where(column.in_(chunk))))
    return known


def _platform_attempts(month: date) -> list:
    return db.session.execute(
        sa.select(
            PaymentAttempt.intent_id,
            PaymentAttempt.amount_fen,
            PaymentAttempt.state,
            PaymentAttempt.refund_id,
            PaymentAttempt.refund_fen,
            Redemption.id.label("redemption_id"),
            Redemption.copay_fen,
            Voucher.district_id,
        )
        .join(Redemption, Redemption.id == PaymentAttempt.redemption_id)
        .join(Voucher, Voucher.id == Redemption.voucher_id)
        .where(
            Voucher.month == month,
            PaymentAttempt.intent_id.is_not(None),
            PaymentAttempt.state.in_(("succeeded", "refunded")),
        )
        .order_by(PaymentAttempt.id)
    ).all()


def gateway_check(month: date) -> tuple[dict, list[dict]]:
    """(summary, findings). The summary's ``status``: "ok", "mismatch", "not_checked" (card
    payments are off: no gateway configured) or "unavailable" (it could not be read)."""
    if not card_payments_enabled(current_app):
        return {"status": "not_checked"}, []
    start, end = _month_window(month)
    try:
        gw = gateway()
        window = {"gte": int((start - SLACK).timestamp()), "lt": int((end + SLACK).timestamp())}
        intents = {i["id"]: i for i in _list_all(gw, "/v1/payment_intents", window)}
        refunds_since = {"gte": int((start - SLACK).timestamp())}
        refunds = {r["id"]: r for r in _list_all(gw, "/v1/refunds", refunds_since)}
        attempts = _platform_attempts(month)
        missing = [a.intent_id for a in attempts if a.intent_id not in intents][:LIST_LIMIT]
        for intent_id in missing:
            try:
                intents[intent_id] = gw.retrieve_payment_intent(intent_id)
            except GatewayRefused:
                pass  # not at the gateway: reported below
    except GatewayError as error:
        return {"status": "unavailable", "error": str(error.details or error)}, []
    findings = _platform_side(attempts, intents, refunds)
    findings += _gateway_side(start, end, intents, refunds)
    received = sum(
        amount_received(i) or 0
        for i in intents.values()
        if i.get("status") == "succeeded" and start <= (_created(i) or start) < end
    )
    summary = {
        "status": "mismatch" if findings else "ok",
        "intents_listed": len(intents),
        "refunds_listed": len(refunds),
        "platform_payments": len(attempts),
        "received_in_month_fen": received,
    }
    return summary, findings


def _refunded_by_intent(intents: dict, refunds: dict) -> dict[str, int]:
    charge_to_intent = {}
    for intent in intents.values():
        charge = intent.get("latest_charge")
        charge_id = charge.get("id") if isinstance(charge, dict) else charge
        if charge_id:
            charge_to_intent[charge_id] = intent["id"]
    total: dict[str, int] = {}
    for refund in refunds.values():
        if refund.get("status") not in (None, "succeeded", "pending"):
            continue
        intent_id = refund.get("payment_intent") or charge_to_intent.get(refund.get("charge"))
        if intent_id:
            total[intent_id] = total.get(intent_id, 0) + int(refund.get("amount") or 0)
    return total


def _platform_side(attempts, intents: dict, refunds: dict) -> list[dict]:
    findings: list[dict] = []
    refunded = _refunded_by_intent(intents, refunds)
    for a in attempts:
        intent = intents.get(a.intent_id)
        evidence = {
            "intent": a.intent_id,
            "redemption": a.redemption_id,
            "platform_state": a.state,
            "platform_amount_fen": a.amount_fen,
        }
        district = a.district_id
        if intent is None:
            findings.append(_finding("gateway.missing_intent", a.intent_id, evidence, district))
            continue
        got = amount_received(intent)
        got = intent.get("amount") if got is None else got
        evidence |= {"gateway_status": intent.get("status"), "gateway_amount_fen": got}
        if intent.get("status") != "succeeded" or got != a.amount_fen:
            findings.append(_finding("gateway.amount", a.intent_id, evidence, district))
            continue
        given_back = refunded.get(a.intent_id, 0)
        if a.state == "succeeded" and given_back:
            evidence["gateway_refunded_fen"] = given_back
            findings.append(_finding("gateway.refund_unrecorded", a.intent_id, evidence, district))
        elif a.state == "refunded":
            expected = a.refund_fen if a.refund_fen is not None else a.copay_fen
            refund = refunds.get(a.refund_id) if a.refund_id else None
            evidence |= {"refund": a.refund_id, "platform_refund_fen": expected}
            if a.refund_id and refund is None:
                findings.append(_finding("gateway.missing_refund", a.refund_id, evidence, district))
            elif refund is not None and int(refund.get("amount") or 0) != expected:
                evidence["gateway_refund_fen"] = refund.get("amount")
                findings.append(_finding("gateway.refund_amount", a.refund_id, evidence, district))
            elif a.refund_id is None and given_back != got:
                evidence["gateway_refunded_fen"] = given_back
                findings.append(_finding("gateway.refund_amount", a.intent_id, evidence, district))
    return findings[:LIST_LIMIT]


def _gateway_side(start: datetime, end: datetime, intents: dict, refunds: dict) -> list[dict]:
    """What the gateway holds that the platform does not know, created in the month."""
    settled_before = now_utc() - GRACE
    ours = [
        i
        for i in intents.values()
        if (created := _created(i)) is not None
        and start <= created < end
        and created < settled_before
        and (i.get("status") == "succeeded" or "attempt" in (i.get("metadata") or {}))
    ]
    states = dict(
        db.session.execute(
            sa.select(PaymentAttempt.intent_id, PaymentAttempt.state).where(
                PaymentAttempt.intent_id.in_([i["id"] for i in ours] or [""])
            )
        ).all()
    )
    findings: list[dict] = []
    for intent in ours:
        evidence = {
            "intent": intent["id"],
            "gateway_status": intent.get("status"),
            "amount_fen": intent.get("amount"),
            "created": _created(intent).isoformat(),
            "metadata": intent.get("metadata") or {},
        }
        state = states.get(intent["id"])
        if state is None:
            findings.append(_finding("gateway.unknown_intent", intent["id"], evidence))
        elif intent.get("status") == "succeeded" and state in ("current", "superseded"):
            evidence["platform_state"] = state
            findings.append(_finding("gateway.unapplied_intent", intent["id"], evidence))
    recent = [
        r
        for r in refunds.values()
        if (created := _created(r)) is not None
        and start <= created < end
        and created < settled_before
    ]
    ids = [r["id"] for r in recent]
    known = _known(PaymentAttempt.refund_id, ids) | _known(Redemption.refund_id, ids)
    for refund in recent:
        if refund["id"] not in known:
            evidence = {
                "refund": refund["id"],
                "intent": refund.get("payment_intent"),
                "charge": refund.get("charge"),
                "amount_fen": refund.get("amount"),
                "created": _created(refund).isoformat(),
            }
            findings.append(_finding("gateway.unknown_refund", refund["id"], evidence))
    return findings[:LIST_LIMIT]
