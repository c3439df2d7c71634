"""Reconciliation of a month: the pool identity, the card gateway, the bank and the statements."""
