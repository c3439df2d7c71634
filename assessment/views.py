"""HTML pages of the assessment domain."""

from flask import Blueprint

bp = Blueprint("assessment", __name__, url_prefix="/assessment", template_folder="templates")
