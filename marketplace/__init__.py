"""Certified providers, their voucher-eligible services, search and bookings.

The shell calls ``register(app)``; nothing else of the shell depends on this package, and
this package imports no other domain. Other domains use its service modules.
"""

from __future__ import annotations

from eldercare.credit_codes import is_valid_credit_code  # GB 32100, shared with assessment
from marketplace import (  # noqa: F401  (imported for what importing them does)
    api_elders,  # the JSON endpoints, each module adding its routes to api.blp
    api_provider,
    api_public,
    models,  # the tables, on the metadata
    views_bookings,  # the HTML pages, each module adding its routes to views.bp
    views_certification,
    views_complaints,
    views_provider,
    views_public,
    views_services,
)
from marketplace.api import blp as api_blueprint
from marketplace.cli import cli
from marketplace.demo import build_demo
from marketplace.jobs import JOBS
from marketplace.views import bp

__all__ = ["is_valid_credit_code", "register"]


def register(app) -> None:
    from eldercare.api import api

    app.register_blueprint(bp)
    api.register_blueprint(api_blueprint)
    app.cli.add_command(cli)
    app.extensions.setdefault("scheduled_jobs", []).extend(JOBS)
    app.extensions.setdefault("demo_steps", []).append(build_demo)
