"""The database connection dropped mid-request (PostgreSQL): the request's server process is
terminated from another connection (``pg_terminate_backend``, what a database restart or a
failover does to it) while the request is inside its transaction. The answer is a clear 503
in zh-CN (English on request), not a 500; nothing of the request is kept; the next request
succeeds (the engine's ``pool_pre_ping`` and SQLAlchemy's invalidation of the dead
connection). Connections dropped between two requests are replaced without an error."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from flask_migrate import upgrade

from eldercare import create_app
from eldercare.accounts import User, UserRole
from eldercare.audit import AuditLog
from eldercare.db import db
from eldercare.residents import District, Resident
from tests.conftest import ON_POSTGRES, PASSWORD, TEST_CONFIG, fresh_postgres_database
from tests.test_register import EN, ZH, _form

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not ON_POSTGRES, reason="PostgreSQL-only; set TEST_DATABASE_URL (CI does)"),
]


@pytest.fixture
def pg_app():
    with fresh_postgres_database("eldercare_dbdrop") as url:
        # The app's own engine options (pool_pre_ping), as in production: only the URL is set.
        app = create_app(TEST_CONFIG | {"SQLALCHEMY_DATABASE_URI": url, "WTF_CSRF_ENABLED": False})
        with app.app_context():
            upgrade()
            district = District(code="210102", name_zh="和平区", name_en="Heping")
            officer = User(username="officer", display_name="区办事员", district=district)
            officer.set_password(PASSWORD)
            officer.role_rows = [UserRole(role="bureau_officer")]
            db.session.add_all([district, officer])
            db.session.commit()
            app.config["TEST_DISTRICT_ID"] = district.id
            db.session.remove()
        try:
            yield app
        finally:
            with app.app_context():
                db.session.remove()
                db.engine.dispose()


@pytest.fixture
def client(pg_app):
    client = pg_app.test_client()
    response = client.post("/login", data={"username": "officer", "password": PASSWORD})
    assert response.status_code == 302
    return client


def _admin(app):
    with app.app_context():
        return sa.create_engine(db.engine.url, poolclass=sa.pool.NullPool)


def _terminate(admin, pid: int) -> None:
    with admin.connect() as connection:
        # Waits (up to 5 s) until the process is gone, so the request's next use of its
        # connection meets a dead server process.
        assert connection.scalar(sa.text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})


@contextmanager
def dropped_before(app, marker: str):
    """Terminate the connection of the request that is about to run a statement containing
    ``marker`` (once): the request has already written in its transaction by then."""
    admin = _admin(app)
    with app.app_context():
        engine = db.engine
    fired = []

    def before_cursor_execute(conn, cursor, statement, parameters, context, executemany):
        if not fired and marker in statement:
            fired.append(statement)
            _terminate(admin, conn.connection.dbapi_connection.info.backend_pid)

    sa.event.listen(engine, "before_cursor_execute", before_cursor_execute)
    try:
        yield fired
    finally:
        sa.event.remove(engine, "before_cursor_execute", before_cursor_execute)
        admin.dispose()


@contextmanager
def dropped_at_commit(app):
    """Terminate the request's connection as it is about to commit (the unit of work's
    commit after the view returned)."""
    admin = _admin(app)
    with app.app_context():
        engine = db.engine
    fired = []

    def commit(conn):
        if not fired:
            fired.append(True)
            _terminate(admin, conn.connection.dbapi_connection.info.backend_pid)

    sa.event.listen(engine, "commit", commit)
    try:
        yield fired
    finally:
        sa.event.remove(engine, "commit", commit)
        admin.dispose()


def _counts(app) -> tuple[int, int]:
    with app.app_context():
        try:
            return (
                db.session.scalar(sa.select(sa.func.count()).select_from(Resident)),
                db.session.scalar(
                    sa.select(sa.func.count())
                    .select_from(AuditLog)
                    .where(AuditLog.action == "resident.create")
                ),
            )
        finally:
            db.session.remove()


def _register(client, app, headers=ZH, **overrides):
    district = type("D", (), {"id": app.config["TEST_DISTRICT_ID"]})
    return client.post("/bureau/residents/new", data=_form(district, **overrides), headers=headers)


@pytest.mark.parametrize(
    ("headers", "words"),
    [(ZH, "数据库"), (EN, "database")],
)
def test_a_connection_dropped_after_the_first_write_answers_503_and_keeps_nothing(
    pg_app, client, headers, words
):
    with dropped_before(pg_app, "INSERT INTO audit_logs") as fired:
        response = _register(client, pg_app, headers=headers)
    assert fired  # the resident's INSERT had run in the request's transaction
    assert response.status_code == 503
    page = response.get_data(as_text=True)
    assert words in page and "Traceback" not in page
    assert _counts(pg_app) == (0, 0)

    again = _register(client, pg_app, headers=headers)
    assert again.status_code == 302, again.get_data(as_text=True)
    assert _counts(pg_app) == (1, 1)


def test_a_json_client_gets_the_error_shape_with_a_code_to_retry_on(pg_app, client):
    with dropped_before(pg_app, "INSERT INTO audit_logs"):
        response = _register(client, pg_app, headers=ZH | {"Accept": "application/json"})
    assert response.status_code == 503
    error = response.get_json()["error"]
    assert error["code"] == "database_unavailable" and "数据库" in error["message"]
    assert response.headers.get("Retry-After")
    assert _counts(pg_app) == (0, 0)


def test_a_connection_dropped_as_the_request_commits_answers_503_and_keeps_nothing(pg_app, client):
    with dropped_at_commit(pg_app) as fired:
        response = _register(client, pg_app)
    assert fired
    assert response.status_code == 503
    assert "数据库" in response.get_data(as_text=True)
    assert _counts(pg_app) == (0, 0)
    assert _register(client, pg_app).status_code == 302
    assert _counts(pg_app) == (1, 1)


def test_every_connection_dropped_between_two_requests_the_next_one_succeeds(pg_app, client):
    assert client.get("/bureau/residents/new").status_code == 200  # the pool holds connections
    admin = _admin(pg_app)
    try:
        with admin.connect() as connection:
            killed = connection.scalar(
                sa.text(
                    "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000))"
                    " FROM pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid()"
                )
            )
    finally:
        admin.dispose()
    assert killed >= 1
    assert client.get("/bureau/residents/new").status_code == 200
    assert _register(client, pg_app).status_code == 302
    assert _counts(pg_app) == (1, 1)
