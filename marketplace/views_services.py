"""The provider's own catalogue: services, prices (with history), beds."""

from flask import abort

from marketplace.views import bp


@bp.get("/provider/services")
def provider_services():
    abort(501)  # placeholder while issue 4 is built
