"""`flask assessment ...` commands."""

from flask.cli import AppGroup

cli = AppGroup(
    "assessment",
    help="GB/T 42195-2022 ability assessments and the eligibility they decide.",
)
