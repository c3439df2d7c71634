"""Statements: which months settle, the run, approval and its hash, reversals after it."""
