"""Where a check-in came from: the client's address and a key for the device, recorded on
the redemption for the anomaly rule ``shared_device`` (one phone or one address checking in
home services for many elders in a day) and never shown to providers.

- The address is the one the sign-in throttle counts by (``login_throttle.client_key``): the
  remote address, behind ``PROXY_HOPS`` proxies the address they saw (``ProxyFix``); an IPv6
  client is its /64 network, since one host usually holds a whole /64.
- The device is a key that stays the same for one phone and says nothing about a person: the
  API token's row id for the scanner app ("token:<id>"), the server-side sign-in session's
  row id for the scan pages ("session:<id>", ``eldercare.user_sessions``).
"""

from __future__ import annotations

from flask import has_request_context, request

from eldercare.login_throttle import client_key


def client_address() -> str | None:
    """The client's address as the throttle keys it, or None outside a request."""
    if not has_request_context() or not request.remote_addr:
        return None
    return client_key(request.remote_addr)


def of_page(user) -> dict:
    """``check_in``'s origin arguments for a check-in on the scan pages by ``user`` (the
    signed-in account, loaded through its sign-in session)."""
    session_id = getattr(user, "session_id", None)
    return {
        "client_ip": client_address(),
        "device": f"session:{session_id}" if session_id is not None else None,
    }


def of_token(token) -> dict:
    """``check_in``'s origin arguments for a check-in through the API with ``token``."""
    return {
        "client_ip": client_address(),
        "device": f"token:{token.id}" if token is not None else None,
    }
