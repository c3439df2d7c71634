"""Voucher policy, the subsidy pool ledger, issuance, QR redemption, settlement.

The shell calls ``register(app)``; nothing else of the shell depends on this package.
"""

from __future__ import annotations

from vouchers import models  # noqa: F401  (the tables, on the metadata)
from vouchers.cli import cli
from vouchers.gateway_views import bp as gateway_bp
from vouchers.jobs import JOBS
from vouchers.payments import JOBS as PAYMENT_JOBS
from vouchers.ports import register_ports
from vouchers.views import bp


def register(app) -> None:
    app.register_blueprint(bp)
    app.register_blueprint(gateway_bp)
    app.cli.add_command(cli)
    app.extensions.setdefault("scheduled_jobs", []).extend([*JOBS, *PAYMENT_JOBS])
    register_ports(app)
