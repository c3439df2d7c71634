"""The settlement API for the bureau's finance system (``/api/v1/settlement``).

The other api_* modules add their endpoints to ``blp``."""

from flask_smorest import Blueprint

blp = Blueprint(
    "settlement_api", __name__, url_prefix="/api/v1/settlement", description="Settlement"
)
