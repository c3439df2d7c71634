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
    from flask_babel import lazy_gettext as _l

    from eldercare.api import api
    from eldercare.navigation import Destination, register_destinations

    app.register_blueprint(bp)
    api.register_blueprint(api_blueprint)
    app.cli.add_command(cli)
    app.extensions.setdefault("scheduled_jobs", []).extend(JOBS)
    app.extensions.setdefault("demo_steps", []).append(build_demo)
    register_destinations(
        app,
        Destination(
            "marketplace.search",
            _l("Find services"),
            invitation=_l("Find eldercare services near you"),
        ),
        Destination(
            "marketplace.my_bookings",
            _l("My bookings"),
            description=_l("Book services, cancel, rate and complain"),
        ),
        Destination(
            "marketplace.dashboard",
            _l("Your provider"),
            description=_l("Certification, documents, staff, services and bookings"),
        ),
        Destination("marketplace.provider_bookings", _l("Bookings")),
        Destination(
            "marketplace.certification_queue",
            _l("Provider certification"),
            description=_l("Applications, suspensions, renewals and star levels"),
        ),
        Destination(
            "marketplace.bureau_complaints",
            _l("Complaints"),
            description=_l("Complaints about providers, and credit scores"),
        ),
    )
