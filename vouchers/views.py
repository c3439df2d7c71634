"""HTML pages of the vouchers domain."""

from flask import Blueprint

bp = Blueprint("vouchers", __name__, url_prefix="/vouchers", template_folder="templates")
