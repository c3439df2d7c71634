"""`flask marketplace ...` commands."""

from flask.cli import AppGroup

cli = AppGroup(
    "marketplace",
    help="Certified providers, their voucher-eligible services, search and bookings.",
)
