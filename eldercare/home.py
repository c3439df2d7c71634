"""The landing page, which also points each signed-in person at their own work (and, for
an elder or a family agent, shows the voucher itself: see navigation.register_home_panel)."""

from __future__ import annotations

from flask import Blueprint, make_response, render_template
from flask_login import current_user

from eldercare.navigation import home_panels

bp = Blueprint("home", __name__)


@bp.get("/")
def index():
    panels = home_panels(current_user)
    response = make_response(render_template("home.html", panels=panels))
    if panels:
        response.headers["Cache-Control"] = "no-store"  # personal, maybe a live QR code
    return response
