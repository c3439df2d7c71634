"""Checking that a webhook really comes from the card gateway (Stripe's signature scheme).

The gateway sends ``Stripe-Signature: t=<unix time>,v1=<hex HMAC-SHA256>`` where the HMAC, keyed
with the endpoint's signing secret, covers ``"<t>.<raw body>"``. Several ``v1`` values may be
present while a secret is being rolled; any one matching is enough. The timestamp bounds how
long a captured request could be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

from vouchers.errors import BadSignature

DEFAULT_TOLERANCE_S = 300  # Stripe's own libraries use five minutes


def sign(payload: bytes, secret: str, t: int) -> str:
    """The ``Stripe-Signature`` header value the gateway would send (for tests and tools)."""
    return f"t={int(t)},v1={_digest(payload, secret, int(t))}"


def verify_signature(
    payload: bytes,
    header: str | None,
    secret: str,
    *,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> dict:
    """The event (parsed JSON) if ``header`` proves ``payload`` was signed with ``secret``
    within ``tolerance_s`` seconds of ``now``; BadSignature otherwise.

    ``payload`` must be the raw request body: re-serialised JSON would not match.
    """
    if not secret:
        # An unconfigured secret must not turn into "anything goes".
        raise BadSignature(details={"reason": "no webhook secret configured"})
    if not header:
        raise BadSignature(details={"reason": "missing signature header"})
    if not isinstance(payload, bytes | bytearray):
        raise TypeError("payload is the raw request body, as bytes")
    timestamp = None
    signatures = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1" and value:
            signatures.append(value)
    if timestamp is None or not signatures:
        raise BadSignature(details={"reason": "malformed signature header"})
    expected = _digest(bytes(payload), secret, timestamp)
    # Compare against every candidate without stopping early, each in constant time.
    matched = False
    for candidate in signatures:
        # As bytes: compare_digest refuses non-ASCII str, and the header is attacker-supplied.
        matched |= hmac.compare_digest(expected.encode(), candidate.encode("utf-8", "replace"))
    if not matched:
        raise BadSignature(details={"reason": "signature does not match"})
    now = time.time() if now is None else now
    if abs(now - timestamp) > tolerance_s:
        raise BadSignature(details={"reason": "timestamp outside the tolerance"})
    try:
        event = json.loads(payload)
    except ValueError as error:
        raise BadSignature(details={"reason": "body is not JSON"}) from error
    if not isinstance(event, dict):
        raise BadSignature(details={"reason": "body is not an event"})
    return event


def _digest(payload: bytes, secret: str, t: int) -> str:
    signed = str(t).encode("ascii") + b"." + payload
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
