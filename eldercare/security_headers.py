"""The security headers every response carries, set in one place (an ``after_request`` hook).

- Content-Security-Policy: scripts and styles only from the site's own files (no inline
  ``<script>``, ``style=""`` or ``onclick=``: pages pass data in ``data-*`` attributes or a
  ``<script type="application/json">`` block, which is data, never run), no plugins, no
  framing, no ``<base>``, forms post only here (and to the card gateway, whose bank
  confirmation page a card payment is sent on to).
- Permissions-Policy: the camera (the provider's scan page) and the location (the check-in
  for home services) for this site's own pages only; the rest off.
- Cache-Control ``no-store`` on every answer to a signed-in user and every API answer: those
  show full ID numbers, phones and live QR codes, which must not stay in a shared browser's
  or a proxy's cache. The static files (CSS, JS) are the same for everyone and keep caching.
- Strict-Transport-Security in production only (development runs on http://localhost).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, Response, current_app, request
from flask_login import current_user

HSTS = "max-age=31536000; includeSubDomains"
PERMISSIONS_POLICY = (
    "camera=(self), geolocation=(self), microphone=(), payment=(), usb=(), "
    "serial=(), bluetooth=(), display-capture=()"
)
# The redemption page's address holds the voucher's QR token (/r/<token>): no other site may
# learn it from a Referer header; this site's own pages still see where a visitor came from.
REFERRER_POLICY = "strict-origin-when-cross-origin"


def content_security_policy(config) -> str:
    form_action = ["'self'"]
    gateway = urlsplit(config.get("PAYMENT_GATEWAY_URL") or "")
    if gateway.scheme and gateway.netloc:
        # A card needing the bank's confirmation: the payment form's answer redirects there.
        form_action.append(f"{gateway.scheme}://{gateway.netloc}")
    directives = {
        "default-src": "'self'",
        "script-src": "'self'",
        "style-src": "'self'",
        "img-src": "'self'",  # the QR codes are this site's own SVG/PNG addresses
        "connect-src": "'self'",
        "object-src": "'none'",
        "base-uri": "'none'",
        "frame-ancestors": "'none'",
        "form-action": " ".join(form_action),
    }
    return "; ".join(f"{name} {value}" for name, value in directives.items())


def _is_static(endpoint: str | None) -> bool:
    return bool(endpoint) and (endpoint == "static" or endpoint.endswith(".static"))


def _must_not_be_stored() -> bool:
    if _is_static(request.endpoint):
        return False
    if request.path.startswith("/api/"):
        return True
    return bool(current_user and current_user.is_authenticated)


def add_security_headers(response: Response) -> Response:
    headers = response.headers
    headers["Content-Security-Policy"] = content_security_policy(current_app.config)
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"  # frame-ancestors for browsers without CSP 2
    headers["Referrer-Policy"] = REFERRER_POLICY
    headers["Permissions-Policy"] = PERMISSIONS_POLICY
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    if current_app.config.get("ENV_NAME") == "production":
        headers["Strict-Transport-Security"] = HSTS
    if _must_not_be_stored():
        headers["Cache-Control"] = "no-store"
        headers["Pragma"] = "no-cache"  # HTTP/1.0 caches
    return response


def register(app: Flask) -> None:
    app.after_request(add_security_headers)
