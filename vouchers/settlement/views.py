"""The settlement pages' blueprint; the pages are in views_* modules named for what they
show (statements and approval, bank batches, payee changes, reconciliation, documents).
Each adds its routes to ``bp`` and lists its menu entries in ``DESTINATIONS``."""

from flask import Blueprint

bp = Blueprint("settlement", __name__, url_prefix="/settlement", template_folder="templates")
