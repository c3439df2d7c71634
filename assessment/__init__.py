"""GB/T 42195-2022 ability assessments by certified agencies, and the eligibility they decide.

The shell calls ``register(app)``; nothing else of the shell depends on this package.
Other domains use the service modules (``assessment.eligibility``, ``assessment.lifecycle``,
``assessment.conflicts``), never the tables.
"""

from __future__ import annotations

from assessment import (  # noqa: F401  (imported for what importing them does)
    api_bureau,  # the bureau's operations, added to api.blp
    models,  # the tables, on the metadata
    views_agency,  # the HTML pages, each module adding its routes to views.bp
    views_bureau,
    views_certification,
    views_elder,
    views_programme,
    views_record,
    views_refund_accounts,
    views_residents,
)
from assessment.api import blp as api_blueprint
from assessment.cli import cli
from assessment.demo import build_demo
from assessment.import_views import bp as import_bp
from assessment.jobs import JOBS
from assessment.views import bp


def register(app) -> None:
    from flask_babel import lazy_gettext as _l

    from eldercare.api import api
    from eldercare.navigation import Destination, register_destinations

    app.register_blueprint(bp)
    app.register_blueprint(import_bp)
    api.register_blueprint(api_blueprint)
    app.cli.add_command(cli)
    app.extensions.setdefault("scheduled_jobs", []).extend(JOBS)
    app.extensions.setdefault("demo_steps", []).append(build_demo)
    register_destinations(
        app,
        Destination(
            "assessment.my",
            _l("My assessment"),
            description=_l("Level, how long it is valid, and applying for a new one"),
        ),
        Destination(
            "assessment.worklist",
            _l("Assessment worklist"),
            description=_l("Cases of your agency: arrange visits, record results"),
        ),
        Destination(
            "assessment.index",
            _l("Ability assessments"),
            ("bureau_officer", "bureau_approver"),
            _l("Applications, assignment, review, agencies, eligibility"),
        ),
        Destination(
            "assessment_import.upload",
            _l("Import a spreadsheet"),
            description=_l("Residents or assessments from CSV or Excel"),
        ),
    )
