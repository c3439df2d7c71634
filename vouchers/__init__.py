"""Voucher policy, the subsidy pool ledger, issuance, QR redemption, settlement.

The shell calls ``register(app)``; nothing else of the shell depends on this package.
"""

from __future__ import annotations

from vouchers import models  # noqa: F401  (the tables, on the metadata)
from vouchers.cli import cli
from vouchers.jobs import JOBS
from vouchers.ports import register_ports
from vouchers.views import bp


def register(app) -> None:
    app.register_blueprint(bp)
    app.cli.add_command(cli)
    app.extensions.setdefault("scheduled_jobs", []).extend(JOBS)
    register_ports(app)
