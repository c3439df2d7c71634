"""The upload page for spreadsheets of residents or assessments."""

from flask import Blueprint

bp = Blueprint(
    "assessment_import", __name__, url_prefix="/assessment/import", template_folder="templates"
)
