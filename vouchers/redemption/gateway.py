"""A small client for a Stripe-compatible card gateway (Stripe itself, or localstripe in tests).

It speaks Stripe's HTTP API directly with ``requests``: form-encoded bodies in Stripe's bracket
notation, ``Authorization: Bearer <secret key>``, and an ``Idempotency-Key`` on every POST. The
key is what makes retrying safe: when a connection drops or the gateway answers 5xx we cannot
know whether it acted, and sending the same key again returns the first result instead of
charging twice. 4xx answers are final (the same request would fail the same way) and are not
retried, except the two that mean "busy, try later": 409 ``idempotency_key_in_use`` (another
request with the same key is still running at the gateway) and 429 (rate limited). Those are
retried like a 5xx and, if they persist, reported as GatewayUnavailable, never as a refusal.

Every request names the API version it was written for (``Stripe-Version``), so that an
account upgraded at the gateway cannot change the shape of the answers under us: in
particular an intent's charge is ``latest_charge`` (versions from 2022-11-15), no longer the
list ``charges``. Reading an answer still accepts both.

Amounts are integer fen, which is Stripe's minor unit for CNY.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app
from flask_babel import lazy_gettext as _l

from vouchers.errors import CardDeclined, GatewayError, GatewayRefused, GatewayUnavailable
from vouchers.redemption.failures import decline_reason

if TYPE_CHECKING:
    import requests

log = logging.getLogger(__name__)

CURRENCY = "cny"
# 4xx answers that mean "not now" rather than "never": retried, then GatewayUnavailable.
BUSY_CODES = frozenset({"idempotency_key_in_use", "rate_limit"})
OUTCOMES = ("succeeded", "requires_action", "processing", "failed", "canceled")
# The API version this client speaks (intents carry ``latest_charge``); localstripe accepts
# the header and answers in its one shape, which has both ``latest_charge`` and ``charges``.
STRIPE_VERSION = "2023-10-16"

# What the elder or the desk is told for the decline codes worth telling apart; the bank's
# wording (English, sometimes revealing, e.g. "stolen_card") is never shown.


def card_payments_enabled(app: Flask) -> bool:
    """Card payments are offered only when a gateway is configured; otherwise cash only."""
    return bool(app.config.get("PAYMENT_GATEWAY_URL")) and bool(
        app.config.get("PAYMENT_GATEWAY_SECRET_KEY")
    )


def gateway() -> Gateway:
    """The gateway configured for the current app."""
    config = current_app.config
    if not card_payments_enabled(current_app):
        raise GatewayError(_l("Card payments are not available here; please pay in cash."))
    return Gateway(
        config["PAYMENT_GATEWAY_URL"],
        config["PAYMENT_GATEWAY_SECRET_KEY"],
        timeout=float(config.get("PAYMENT_GATEWAY_TIMEOUT") or 10.0),
    )


def encode(params: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Flatten nested dicts and lists into Stripe's form fields: ``card[number]``,
    ``metadata[redemption]``, ``items[0][price]``. ``None`` means "not sent"."""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        if value is None:
            continue
        if isinstance(value, Mapping):
            pairs.extend(encode(value, name))
        elif isinstance(value, list | tuple):
            pairs.extend(encode({str(i): v for i, v in enumerate(value)}, name))
        elif isinstance(value, bool):
            pairs.append((name, "true" if value else "false"))
        else:
            pairs.append((name, str(value)))
    return pairs


class Gateway:
    """One configured gateway. Methods return the gateway's JSON objects as dicts."""

    def __init__(
        self,
        base_url: str,
        secret_key: str,
        *,
        timeout: float = 10.0,
        connect_timeout: float = 3.0,
        retries: int = 2,
        backoff_s: float = 0.5,
        session: requests.Session | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        self.secret_key = secret_key
        # A dead host should fail fast (connect); a slow answer may take longer (read).
        self.timeout = (min(connect_timeout, timeout), timeout)
        self.retries = retries
        self.backoff_s = backoff_s
        # requests is imported here, not at the top: every start-up would pay for it
        # (tests/test_startup.py); the gateway is built only when a card is charged.
        import requests

        self.session = session or requests.Session()

    # -- payment intents

    def create_payment_intent(
        self,
        amount_fen: int,
        *,
        idempotency_key: str,
        description: str,
        metadata: Mapping[str, Any] | None = None,
    ) -> dict:
        if isinstance(amount_fen, bool) or not isinstance(amount_fen, int) or amount_fen <= 0:
            raise ValueError("amount_fen is a positive whole number of fen")
        return self._post(
            "/v1/payment_intents",
            {
                "amount": amount_fen,
                "currency": CURRENCY,
                # Charged as soon as confirmed: a co-payment is for a service already given.
                "capture_method": "automatic",
                "payment_method_types": ["card"],
                "description": description,
                "metadata": {k: str(v) for k, v in (metadata or {}).items()},
            },
            idempotency_key=idempotency_key,
        )

    def create_card_payment_method(
        self, number: str, exp_month: int, exp_year: int, cvc: str
    ) -> dict:
        """Turn raw card details into a payment method.

        Server-side card entry exists for tests and the demo only: in production the gateway's
        own card form or payment terminal tokenizes the card, so card numbers never pass
        through (or get logged by) this platform, which keeps it out of PCI DSS scope. Real
        Stripe refuses raw card numbers from most accounts for that reason.
        """
        return self._post(
            "/v1/payment_methods",
            {
                "type": "card",
                "card": {
                    "number": number,
                    "exp_month": exp_month,
                    "exp_year": exp_year,
                    "cvc": cvc,
                },
            },
            # Creating a payment method twice charges nothing; a fresh key is enough.
            idempotency_key=uuid.uuid4().hex,
        )

    def confirm_payment_intent(
        self, intent_id: str, *, payment_method: str, idempotency_key: str, return_url: str
    ) -> dict:
        """Attempt the charge. A declined card raises CardDeclined; a card that needs 3-D
        Secure comes back with ``outcome(...) == "requires_action"`` and a URL to send the
        payer to (``next_action_url``), after which the gateway redirects to ``return_url``."""
        return self._post(
            f"/v1/payment_intents/{_path_id(intent_id)}/confirm",
            {"payment_method": payment_method, "return_url": return_url},
            idempotency_key=idempotency_key,
        )

    def retrieve_payment_intent(self, intent_id: str) -> dict:
        return self._request("GET", f"/v1/payment_intents/{_path_id(intent_id)}")

    def cancel_payment_intent(self, intent_id: str, *, idempotency_key: str) -> dict:
        return self._post(
            f"/v1/payment_intents/{_path_id(intent_id)}/cancel", {}, idempotency_key=idempotency_key
        )

    def create_refund(self, intent_id: str, amount_fen: int, *, idempotency_key: str) -> dict:
        if isinstance(amount_fen, bool) or not isinstance(amount_fen, int) or amount_fen <= 0:
            raise ValueError("amount_fen is a positive whole number of fen")
        return self._post(
            "/v1/refunds",
            {"payment_intent": intent_id, "amount": amount_fen},
            idempotency_key=idempotency_key,
        )

    def retrieve_charge(self, charge_id: str) -> dict:
        return self._request("GET", f"/v1/charges/{_path_id(charge_id)}")

    def list_payment_intents(self, *, limit: int = 100) -> list[dict]:
        """The most recent intents (reconciliation and tests)."""
        return self._request("GET", "/v1/payment_intents", query={"limit": limit})["data"]

    # -- transport

    def _post(self, path: str, params: Mapping[str, Any], *, idempotency_key: str) -> dict:
        if not idempotency_key:
            raise ValueError("every POST needs an idempotency key")
        return self._request("POST", path, form=params, idempotency_key=idempotency_key)

    def _request(
        self,
        method: str,
        path: str,
        *,
        form: Mapping[str, Any] | None = None,
        query: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> dict:
        import requests  # see __init__

        headers = {"Authorization": f"Bearer {self.secret_key}", "Stripe-Version": STRIPE_VERSION}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        url = self.base_url + path
        last_problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                # Exponential backoff; the same idempotency key makes the resend harmless.
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                response = self.session.request(
                    method,
                    url,
                    data=encode(form) if form is not None else None,
                    params=encode(query) if query else None,
                    headers=headers,
                    timeout=self.timeout,
                    allow_redirects=False,
                )
            except (requests.ConnectionError, requests.Timeout) as error:
                last_problem = type(error).__name__
                log.warning("gateway %s %s: %s (attempt %d)", method, path, error, attempt + 1)
                continue
            if response.status_code >= 500 or _busy(response):
                last_problem = f"HTTP {response.status_code}"
                log.warning(
                    "gateway %s %s: HTTP %d (attempt %d)",
                    method,
                    path,
                    response.status_code,
                    attempt + 1,
                )
                continue
            return _result(response, method, path)
        raise GatewayUnavailable(details={"gateway": last_problem})


def _busy(response: requests.Response) -> bool:
    """The gateway is busy with this key (409) or with us (429): ask again later."""
    if response.status_code == 429:
        return True
    if response.status_code != 409:
        return False
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        return False
    return isinstance(error, dict) and error.get("code") in BUSY_CODES


def _result(response: requests.Response, method: str, path: str) -> dict:
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        log.error("gateway %s %s: HTTP %d, not JSON", method, path, response.status_code)
        raise GatewayError(details={"gateway": f"HTTP {response.status_code}"})
    if response.status_code < 300:
        return body
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    if response.status_code == 402 or error.get("type") == "card_error":
        decline_code = error.get("decline_code") or error.get("code") or ""
        details = {
            key: error[key]
            for key in ("code", "decline_code", "charge")
            if isinstance(error.get(key), str)
        }
        intent = error.get("payment_intent")
        if isinstance(intent, dict) and isinstance(intent.get("id"), str):
            details["payment_intent"] = intent["id"]
        raise CardDeclined(
            decline_reason(decline_code),
            decline_code=decline_code or None,
            details=details,
        )
    # Our request was wrong (bad key, unknown id, a state the intent is not in): a bug or a
    # misconfiguration, which retrying would not mend. Nothing was done under its key.
    log.error(
        "gateway %s %s: HTTP %d %s",
        method,
        path,
        response.status_code,
        error.get("message", ""),
    )
    raise GatewayRefused(
        details={
            "gateway": f"HTTP {response.status_code}",
            **({"code": error["code"]} if isinstance(error.get("code"), str) else {}),
        }
    )


def _path_id(value: str) -> str:
    """Gateway ids are letters, digits and underscores; anything else must not reach a URL."""
    if not isinstance(value, str) or not value or not value.replace("_", "").isalnum():
        raise ValueError(f"not a gateway id: {value!r}")
    return value


# -- reading an intent


def outcome(intent: Mapping[str, Any]) -> str:
    """Stripe's payment intent statuses, reduced to what the co-payment page must decide.

    - ``succeeded``: the money is taken.
    - ``requires_action``: the payer must authenticate (3-D Secure) at ``next_action_url``.
    - ``processing``: not final yet (being processed, or authorised and not captured); wait for
      the webhook or retrieve again. Also any status this code does not know, so that nothing
      is given away or charged again on a guess.
    - ``failed``: the attempt failed (declined, authentication failed) and nothing was taken;
      another card or cash may be tried.
    - ``canceled``: the intent is closed and will never charge.
    """
    status = intent.get("status")
    if status == "succeeded":
        return "succeeded"
    if status == "requires_action":
        return "requires_action"
    if status == "canceled":
        return "canceled"
    if status in ("requires_payment_method", "requires_confirmation"):
        return "failed"
    return "processing"


def next_action_url(intent: Mapping[str, Any]) -> str | None:
    """Where to send the payer to authenticate, if anywhere.

    With a ``return_url`` Stripe answers ``redirect_to_url``; a ``use_stripe_sdk`` action
    carries the 3-D Secure page in ``stripe_js`` (which localstripe leaves empty, because its
    own authentication is done through its ``_authenticate`` endpoint instead).
    """
    action = intent.get("next_action") or {}
    url = (action.get("redirect_to_url") or {}).get("url")
    if not url:
        url = (action.get("use_stripe_sdk") or {}).get("stripe_js")
    return url or None


def amount_received(intent: Mapping[str, Any]) -> int | None:
    """What the intent took (Stripe's ``amount_received``), None when the answer does not say."""
    value = intent.get("amount_received")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def amount_refunded(intent: Mapping[str, Any], gw: Gateway | None = None) -> int | None:
    """What has been given back of the intent's charge, None when it cannot be told (the
    caller must then ask again later, never act on a guess).

    The charge is ``latest_charge``: expanded from localstripe, an id from Stripe (retrieved
    with ``gw``). An answer in an API version before 2022-11-15 has instead the list
    ``charges``, newest first."""
    charge = intent.get("latest_charge")
    if charge is None:
        charges = intent.get("charges")
        listed = charges.get("data") if isinstance(charges, Mapping) else None
        charge = listed[0] if isinstance(listed, list) and listed else None
    if isinstance(charge, str) and gw is not None:
        charge = gw.retrieve_charge(charge)
    if not isinstance(charge, Mapping):
        return 0 if amount_received(intent) == 0 else None
    value = charge.get("amount_refunded")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def payment_error_code(intent: Mapping[str, Any]) -> str | None:
    """Why the last attempt failed (Stripe's ``last_payment_error.code``), if it did."""
    error = intent.get("last_payment_error") or {}
    return error.get("decline_code") or error.get("code") or None
