"""Monthly issuance and expiry, and the eligibility feed that starts and stops vouchers."""
