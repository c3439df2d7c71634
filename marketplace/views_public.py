"""Public pages: the marketplace search, provider and service pages (no login needed)."""

from flask import abort

from marketplace.views import bp

# Placeholders so that pages can link to each other while they are built (issue 4).


@bp.get("/")
def search():
    abort(501)


@bp.get("/providers/<int:provider_id>")
def provider_page(provider_id: int):
    abort(501)


@bp.get("/services/<int:service_id>")
def service_page(service_id: int):
    abort(501)
