"""Certified providers, their voucher-eligible services, search and bookings.

The shell calls ``register(app)``; nothing else of the shell depends on this package.
"""

from __future__ import annotations

from eldercare.credit_codes import is_valid_credit_code  # GB 32100, shared with assessment
from marketplace.cli import cli
from marketplace.jobs import JOBS
from marketplace.views import bp

__all__ = ["is_valid_credit_code", "register"]


def register(app) -> None:
    app.register_blueprint(bp)
    app.cli.add_command(cli)
    app.extensions.setdefault("scheduled_jobs", []).extend(JOBS)
