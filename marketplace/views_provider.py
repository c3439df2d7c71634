"""The provider's dashboard: application, profile, documents, staff."""

from flask import abort

from marketplace.views import bp


@bp.get("/provider")
def dashboard():
    abort(501)  # placeholder while issue 4 is built
