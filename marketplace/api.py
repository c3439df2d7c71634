"""/api/v1 endpoints of the marketplace."""

from flask_smorest import Blueprint

blp = Blueprint(
    "marketplace_api", __name__, url_prefix="/api/v1", description="Providers, services, bookings"
)
