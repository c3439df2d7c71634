"""HTML pages of the marketplace domain."""

from flask import Blueprint

bp = Blueprint("marketplace", __name__, url_prefix="/marketplace", template_folder="templates")
