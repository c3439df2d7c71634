"""The vouchers domain's HTML blueprints; the pages are in views_* modules named for whom
they serve.

- ``views_elder``: the elder's (or family's) voucher page with the rotating QR, history, the
  printed card and the choice of voucher kind;
- ``views_redeem``: the provider's phone-first scan-and-redeem flow, and the short
  ``/r/<token>`` addresses the QR codes encode;
- ``views_bureau``: the bureau's pool overview, top-ups, allocations and policy versions.

Each module adds its routes to ``bp`` (or ``short_bp``) and lists its menu entries in
``DESTINATIONS``; ``vouchers/__init__.py`` imports them.
"""

from flask import Blueprint, Response

bp = Blueprint(
    "vouchers",
    __name__,
    url_prefix="/vouchers",
    template_folder="templates",
    static_folder="static",
)
# The QR codes encode https://<host>/r/<token>: short, so the code stays small and scannable.
short_bp = Blueprint("vouchers_short", __name__)


def no_store(response: Response) -> Response:
    """A page, image or API answer holding a live QR code: never kept by the browser, a
    proxy or an app's HTTP cache, where someone else could find it."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response
