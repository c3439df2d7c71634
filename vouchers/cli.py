"""`flask vouchers ...` commands."""

from flask.cli import AppGroup

cli = AppGroup(
    "vouchers",
    help="Voucher policy, the subsidy pool ledger, issuance, QR redemption, settlement.",
)
