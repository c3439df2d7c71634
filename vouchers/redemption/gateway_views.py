"""The gateway's webhook: it authenticates by its Stripe-Signature, not by a session or a
bearer token, so it lives under /api/ (no CSRF) with its own blueprint."""

from flask import Blueprint, jsonify, request

from vouchers.redemption import payments

bp = Blueprint("vouchers_gateway", __name__, url_prefix="/api/v1/payments")


@bp.post("/webhook")
def webhook():
    # A refusal (bad signature: 400) or a gateway we cannot reach to check the intent (503)
    # is an error answer, so the gateway sends the event again later.
    result = payments.handle_webhook(request.get_data(), request.headers.get("Stripe-Signature"))
    return jsonify({"received": True, "result": result})
