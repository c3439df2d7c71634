"""GB/T 42195-2022 ability assessments by certified agencies, and the eligibility they decide.

The shell calls ``register(app)``; nothing else of the shell depends on this package.
"""

from __future__ import annotations

from assessment.cli import cli
from assessment.jobs import JOBS
from assessment.views import bp


def register(app) -> None:
    app.register_blueprint(bp)
    app.cli.add_command(cli)
    app.extensions.setdefault("scheduled_jobs", []).extend(JOBS)
