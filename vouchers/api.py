"""/api/v1 endpoints of the vouchers domain (being written)."""

from flask_smorest import Blueprint

blp = Blueprint("vouchers_api", __name__, url_prefix="/api/v1", description="Vouchers")
