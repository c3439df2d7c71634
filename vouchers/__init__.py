"""Voucher policy, the subsidy pool ledger, issuance, QR redemption, settlement.

The shell calls ``register(app)``; nothing else of the shell depends on this package.
"""

from __future__ import annotations

from vouchers import (  # noqa: F401  (imported for what importing them does)
    models,  # the tables, on the metadata
    settlement,
    views_bureau,  # the HTML pages, each module adding its routes to views.bp
    views_elder,
)
from vouchers.api import blp as api_blueprint
from vouchers.cli import cli
from vouchers.demo import build_demo
from vouchers.insight import api as insight_api  # noqa: F401  (the dashboard's API, on blp)
from vouchers.insight import api_report as _report_api  # noqa: F401  (its routes, on api.blp)
from vouchers.insight import views as insight_views  # the dashboard page, on views.bp
from vouchers.insight import (
    views_forecast,  # the pool forecast page, on views.bp
    views_report,
)
from vouchers.integrity import anomalies
from vouchers.integrity import models as integrity_models  # noqa: F401  (the tables)
from vouchers.integrity import views as integrity_views  # the flags pages, on views.bp
from vouchers.issuance import views_parked
from vouchers.jobs import JOBS
from vouchers.pool import views_kinds
from vouchers.ports import register_ports
from vouchers.redemption import views_redeem
from vouchers.redemption.gateway_views import bp as gateway_bp
from vouchers.redemption.payments import JOBS as PAYMENT_JOBS
from vouchers.settlement import models as settlement_models  # noqa: F401  (the tables)
from vouchers.views import bp, short_bp


def register(app) -> None:
    from eldercare.api import api
    from eldercare.navigation import register_destinations, register_home_panel

    app.register_blueprint(bp)
    app.register_blueprint(short_bp)
    api.register_blueprint(api_blueprint)
    register_destinations(
        app,
        *views_elder.DESTINATIONS,
        *views_redeem.DESTINATIONS,
        *views_bureau.DESTINATIONS,
        *views_parked.DESTINATIONS,
        *views_kinds.DESTINATIONS,
        *integrity_views.DESTINATIONS,
        *views_forecast.DESTINATIONS,
        *views_report.DESTINATIONS,
        *insight_views.DESTINATIONS,
    )
    register_home_panel(app, views_elder.home_panel)
    anomalies.install()  # the capture's and the eligibility feed's hooks into the rules
    app.register_blueprint(gateway_bp)
    app.cli.add_command(cli)
    app.extensions.setdefault("scheduled_jobs", []).extend([*JOBS, *PAYMENT_JOBS])
    app.extensions.setdefault("demo_steps", []).append(build_demo)
    register_ports(app)
    settlement.register(app)
