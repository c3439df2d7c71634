"""/api/v1 endpoints of the assessment domain, for agencies' own software and the city."""

from flask_smorest import Blueprint

blp = Blueprint(
    "assessment_api", __name__, url_prefix="/api/v1", description="Assessments and eligibility"
)
