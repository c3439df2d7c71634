"""`flask settlement ...` commands."""

from __future__ import annotations

from flask.cli import AppGroup

cli = AppGroup("settlement", help="Settle providers: statements, approval, bank batches.")
