"""Bookings, reviews by elders and families; the provider's bookings."""

from flask import abort

from marketplace.views import bp

# Placeholders so that pages can link to each other while they are built (issue 4).


@bp.post("/services/<int:service_id>/book")
def book(service_id: int):
    abort(501)


@bp.get("/bookings")
def my_bookings():
    abort(501)


@bp.get("/provider/bookings")
def provider_bookings():
    abort(501)
