"""Flask-Migrate, set up when first used.

Flask-Migrate imports Alembic (and Mako, Pygments...), a third of a second that every
`flask` command, script and job would pay at start-up, while only `flask db` and the code
that migrates a database (the tests, the benchmarks) use it. The app gets two stand-ins
instead: ``app.extensions["migrate"]``, which sets Flask-Migrate up on the first attribute
read (``flask_migrate.upgrade()`` reads it), and a `db` command that does the same before
handing its arguments to Flask-Migrate's own command group.
"""

from __future__ import annotations

import click
from flask import Flask, current_app
from flask.cli import ScriptInfo

from eldercare.db import db

MIGRATE_OPTIONS = {"render_as_batch": True, "compare_type": True}


def _set_up(app: Flask, directory: str):
    """Install the real Flask-Migrate on ``app`` (once) and return its configuration."""
    real = app.extensions.get("migrate")
    if isinstance(real, _MigrateOnDemand):
        from flask_migrate import Migrate

        Migrate(app, db, directory=directory, **MIGRATE_OPTIONS)  # replaces the stand-in
        real = app.extensions["migrate"]
    return real


class _MigrateOnDemand:
    """Stands in for Flask-Migrate's configuration in ``app.extensions["migrate"]``."""

    def __init__(self, app: Flask, directory: str):
        self._app = app
        self._directory = directory

    def __getattr__(self, name: str):
        return getattr(_set_up(self._app, self._directory), name)


class _DbCommand(click.Group):
    """`flask db`: listed with its help at no cost; Flask-Migrate's group once invoked."""

    def __init__(self, directory: str):
        super().__init__("db", help="Perform database migrations.")
        self._directory = directory

    def _real(self, parent) -> click.Group:
        # `flask` has pushed the app's context; a CLI test runner leaves it to ScriptInfo.
        app = current_app._get_current_object() if current_app else None
        _set_up(app or parent.ensure_object(ScriptInfo).load_app(), self._directory)
        from flask_migrate.cli import db as db_group

        return db_group

    def make_context(self, info_name, args, parent=None, **extra):
        return self._real(parent).make_context(info_name, args, parent=parent, **extra)


def init_migrate(app: Flask, directory: str) -> None:
    app.extensions["migrate"] = _MigrateOnDemand(app, directory)
    app.cli.add_command(_DbCommand(directory))
