"""Shared fixtures: one migrated database per run, each test in a rolled-back transaction.

The schema comes from the Alembic migrations (not ``create_all``), so every test also
exercises them. ``TEST_DATABASE_URL`` (postgresql+psycopg://...) runs the suite on
PostgreSQL in a fresh database created for this run and dropped afterwards.
"""

from __future__ import annotations

import contextvars
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

import pytest
import sqlalchemy as sa
from flask import g, has_app_context
from flask.testing import FlaskClient
from flask_migrate import upgrade
from hypothesis import settings
from sqlalchemy.orm import scoped_session, sessionmaker

from eldercare import create_app
from eldercare.accounts import LoginThrottle, User, UserRole
from eldercare.db import db
from eldercare.residents import District, Resident, compose_resident_id

# Hypothesis examples here run SQL, often against PostgreSQL under a loaded CI machine: how long
# one takes is not what any test asserts, so the per-example deadline (200 ms) is off.
settings.register_profile("eldercare", deadline=None)
settings.load_profile("eldercare")


TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL", "").strip()
ON_POSTGRES = TEST_DATABASE_URL.startswith("postgresql")
PASSWORD = "correct-horse-42"
TEST_CONFIG = {
    "TESTING": True,
    "SECRET_KEY": "test-secret-key-that-is-long-enough-000",
    "PASSWORD_HASH_METHOD": "pbkdf2:sha256:1000",  # the suite hashes many passwords
}


def pytest_configure(config):
    # The app only warns about a stale catalog (compiling is the install's job); a test run
    # straight after editing the .po compiles it, so the pages show what the tests expect.
    from eldercare.i18n import compile_catalogs

    compile_catalogs()


def pytest_collection_modifyitems(config, items):
    skip_pg = pytest.mark.skip(reason="PostgreSQL-only; set TEST_DATABASE_URL (CI does)")
    for item in items:
        if "postgres" in item.keywords and not ON_POSTGRES:
            item.add_marker(skip_pg)


@contextmanager
def fresh_postgres_database(prefix: str) -> Iterator[str]:
    """A new, empty database on the TEST_DATABASE_URL server, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(TEST_DATABASE_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield (
            sa.make_url(TEST_DATABASE_URL).set(database=name).render_as_string(hide_password=False)
        )
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory):
    if not ON_POSTGRES:
        yield "sqlite:///" + str(tmp_path_factory.mktemp("db") / "test.db")
        return
    with fresh_postgres_database("eldercare_test") as url:
        yield url


def rules_off() -> None:
    """The anomaly rules judge only in the tests about them (``rules_on``): elsewhere a visit
    checked out in the same second, or a redemption the 5% review sample drew, would hold
    the test's redemptions out of settlement at random."""
    from vouchers.integrity.models import AnomalyRule

    db.session.execute(sa.update(AnomalyRule).values(enabled=False))
    db.session.commit()


@pytest.fixture
def rules_on(db_session):
    """``rules_on("visit_length", high_value={"subsidy_fen": 100})``: those rules judge in
    this test (its transaction is rolled back), with the given thresholds where given."""
    from vouchers.integrity.models import AnomalyRule

    def turn_on(*codes: str, **params: dict) -> None:
        for code in (*codes, *params):
            values = {"enabled": True}
            if code in params:
                values["params"] = params[code]
            changed = db.session.execute(
                sa.update(AnomalyRule).where(AnomalyRule.code == code).values(**values)
            ).rowcount
            assert changed, f"no anomaly rule {code!r}"
        db.session.flush()

    return turn_on


@pytest.fixture
def private_app(tmp_path_factory):
    """An app on a PostgreSQL database of its own, for tests whose threads commit for real:
    what they leave behind must not change what the rest of the suite counts."""
    if not ON_POSTGRES:
        pytest.skip("PostgreSQL-only; set TEST_DATABASE_URL (CI does)")
    with fresh_postgres_database("eldercare_private") as url:
        app = create_app(
            TEST_CONFIG
            | {
                "SQLALCHEMY_DATABASE_URI": url,
                "DOCUMENT_STORE": str(tmp_path_factory.mktemp("private_documents")),
                # A connection for each of up to 50 racing threads, so that a thread waits on
                # the database's locks (what the tests are about), never for the pool, whose
                # default 15 connections and 30 s wait fail a busy machine's run instead.
                "SQLALCHEMY_ENGINE_OPTIONS": {
                    "pool_size": 10,
                    "max_overflow": 45,
                    "pool_timeout": 300,
                },
            }
        )
        with app.app_context():
            upgrade()
            rules_off()
        try:
            yield app
        finally:
            with app.app_context():
                db.engine.dispose()


class FreshGlobalsClient(FlaskClient):
    """A test client whose every request starts with an empty ``g``.

    Tests that call services directly keep an app context pushed (``app_ctx``), and Flask
    lets requests reuse it, ``g`` included; production gives each request its own. Clearing
    ``g`` (the token, Flask-Babel's cached locale...) keeps requests as independent as there.
    """

    def open(self, *args, **kwargs):
        if has_app_context():
            for name in list(g):
                g.pop(name)
        return super().open(*args, **kwargs)


@pytest.fixture(scope="session")
def app(database_url, tmp_path_factory):
    app = create_app(
        TEST_CONFIG
        | {
            "SQLALCHEMY_DATABASE_URI": database_url,
            "LOGIN_MAX_FAILURES": 5,
            # Certified providers carry their documents (fixtures, the demo): their files go
            # to the run's temporary directory, never the worktree's instance folder.
            "DOCUMENT_STORE": str(tmp_path_factory.mktemp("documents")),
            # Most tests post forms without a token; csrf_client turns the check back on.
            "WTF_CSRF_ENABLED": False,
        }
    )
    app.test_client_class = FreshGlobalsClient
    with app.app_context():
        upgrade()
        rules_off()
    yield app
    with app.app_context():
        db.engine.dispose()


class _TestSession(scoped_session):
    """The test's session, shared with the requests it makes.

    Flask-SQLAlchemy ends every app context with ``session.remove()``; here that only
    expires what was loaded, as a fresh session would, so the test keeps its objects.
    """

    def remove(self):
        if self.registry.has():
            self.registry().expire_all()


@pytest.fixture
def db_session(app):
    """A session whose commits are savepoints inside a transaction rolled back at the end.

    No app context stays pushed during the test, so each request gets its own (and its own
    ``g`` and locale), as in production.
    """
    with app.app_context():
        engine = db.engine
    connection = engine.connect()
    outer = connection.begin()
    original = db.session
    db.session = _TestSession(
        sessionmaker(bind=connection, join_transaction_mode="create_savepoint")
    )
    try:
        yield db.session
    finally:
        db.session.registry().close()
        db.session = original
        outer.rollback()
        if ON_POSTGRES:
            # The sign-in throttle commits its counts on a connection of its own (as it must:
            # a failed sign-in rolls back), so they outlive the test's transaction: clear them,
            # or one test's guesses would lock the next test's accounts.
            with connection.begin():
                connection.execute(sa.delete(LoginThrottle.__table__))
        connection.close()


class _OwnContextClient(FreshGlobalsClient):
    """A client whose every request runs as under a WSGI server: in a context of its own
    (no app context of the test's around it, so the request pushes and ends its own, which
    removes its session), its body read to the end there, after the request has ended."""

    def open(self, *args, **kwargs):
        def whole():
            response = super(_OwnContextClient, self).open(*args, **kwargs)
            response.get_data()
            return response

        return contextvars.Context().run(whole)


@pytest.fixture
def production_client(app, db_session, monkeypatch):
    """A client whose requests end their session as production does: closed and discarded
    (``_TestSession`` only expires it, and a test's app context keeps it alive, which hides
    what a closed session breaks, e.g. a streamed body that reads a row the view loaded).
    Commit what the request must see first; each request detaches what the test loaded."""
    monkeypatch.setattr(db_session, "remove", lambda: scoped_session.remove(db_session))
    return _OwnContextClient(app, app.response_class, use_cookies=True)


@pytest.fixture
def app_ctx(app, db_session):
    """For tests that call code needing ``current_app`` outside a request."""
    with app.app_context():
        yield


@pytest.fixture
def client(app, db_session):
    return app.test_client()


@pytest.fixture
def csrf_client(app, db_session):
    """A client for tests that check CSRF: the app's real setting, on."""
    app.config["WTF_CSRF_ENABLED"] = True
    try:
        yield app.test_client()
    finally:
        app.config["WTF_CSRF_ENABLED"] = False


class Factory:
    """Builds rows the tests need, with valid defaults."""

    def __init__(self, app, session):
        self.app = app
        self.session = session
        self._seq = 0

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def district(self, code: str | None = None, name: str | None = None) -> District:
        code = code or f"2101{self._next():02d}"
        found = self.session.scalar(sa.select(District).where(District.code == code))
        if found:
            return found
        district = District(code=code, name_zh=name or f"区{code}", name_en=name or f"D{code}")
        self.session.add(district)
        self.session.flush()
        return district

    def resident(
        self,
        district: District | None = None,
        birth: date = date(1945, 5, 1),
        name: str = "王秀英",
        **extra,
    ) -> Resident:
        district = district or self.district("210102")
        number = compose_resident_id("210102", birth, 100 + self._next())
        resident = Resident(
            id_number=number,
            name=name,
            birth_date=birth,
            district_id=district.id,
            street="南湖街道",
            address="三好街 1 号",
            **extra,
        )
        self.session.add(resident)
        self.session.flush()
        return resident

    def user(
        self,
        username: str | None = None,
        roles=("elder",),
        district=None,
        password: str = PASSWORD,
        **extra,
    ) -> User:
        user = User(
            username=username or f"user{self._next()}",
            display_name=username or "Test User",
            district=district,
            **extra,
        )
        with self.app.app_context():
            user.set_password(password)
        user.role_rows = [UserRole(role=r) for r in roles]
        self.session.add(user)
        self.session.flush()
        return user


@pytest.fixture
def factory(app, db_session):
    return Factory(app, db_session)


@pytest.fixture
def login(client):
    def _login(user, password=PASSWORD):
        response = client.post("/login", data={"username": user.username, "password": password})
        assert response.status_code == 302, response.get_data(as_text=True)
        return response

    return _login
