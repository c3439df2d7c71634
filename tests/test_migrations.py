import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from flask_migrate import downgrade, upgrade

from eldercare import create_app
from eldercare.db import db


def test_models_and_migrations_agree(app):
    """The migrated schema (the suite's database) has exactly the models' tables and columns."""
    with app.app_context(), db.engine.connect() as connection:
        context = MigrationContext.configure(
            connection,
            opts={"compare_type": True, "include_object": _include, "render_as_batch": True},
        )
        differences = compare_metadata(context, db.metadata)
    assert differences == []


def _include(obj, name, type_, reflected, compare_to):
    return not (type_ == "table" and name == "apscheduler_jobs")


def test_every_revision_downgrades_and_upgrades_again(tmp_path):
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/m.db"})
    with app.app_context():
        upgrade()
        tables = set(sa.inspect(db.engine).get_table_names())
        assert {"residents", "users", "audit_logs", "api_tokens"} <= tables
        downgrade(revision="base")
        assert set(sa.inspect(db.engine).get_table_names()) <= {"alembic_version"}
        upgrade()
        assert set(sa.inspect(db.engine).get_table_names()) == tables
        db.engine.dispose()
