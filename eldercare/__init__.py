"""The application shell: factory, configuration, accounts, audit, errors, languages.

The three domain packages (assessment, marketplace, vouchers) plug in through their
``register(app)`` functions; the shell imports them for nothing else.
"""

from __future__ import annotations

import logging
import os

import sqlalchemy as sa
from flask import Flask, current_app, request, session
from flask_babel import Babel
from flask_wtf.csrf import CSRFProtect
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.routing import IntegerConverter

from eldercare import stored_text
from eldercare.config import check_config, load_config
from eldercare.db import ROW_ID_MAX
from eldercare.db import db as _db
from eldercare.on_demand import init_migrate
from eldercare.residents import is_valid_resident_id

__all__ = ["create_app", "is_valid_resident_id"]

csrf = CSRFProtect()
babel = Babel()
MIGRATIONS_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "migrations")


def _tune_sqlite(engine: sa.Engine, begin_immediate: bool = False) -> None:
    """Foreign keys on, and SQLAlchemy (not pysqlite) in charge of BEGIN, so that
    transactions and SAVEPOINTs behave as they do on PostgreSQL.

    ``begin_immediate`` (SQLITE_BEGIN_IMMEDIATE) takes the write lock when a transaction
    begins: with several processes on one file (the demo's web server and scheduler), a
    transaction that read and then writes while another connection writes is otherwise
    refused at once with "database is locked" (waiting could deadlock, so the busy timeout
    does not apply); taken at BEGIN, the lock is waited for like any other."""
    begin = "BEGIN IMMEDIATE" if begin_immediate else "BEGIN"
    if engine.dialect.name != "sqlite":
        return

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=15000")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection):
        connection.exec_driver_sql(begin)


def _csrf_for_browsers_only() -> None:
    # The API authenticates with bearer tokens, never cookies, so it needs no CSRF token.
    if current_app.config.get("WTF_CSRF_ENABLED", True) and not request.path.startswith("/api/"):
        csrf.protect()


def _template_context():
    from flask_login import current_user

    from eldercare.accounts import ROLES
    from eldercare.auth import may_open
    from eldercare.i18n import current_locale
    from eldercare.navigation import destinations_for, invitations

    return {
        "ROLES": ROLES,
        "destinations": destinations_for(current_user),
        "invitations": invitations(),
        "current_locale": current_locale(),
        "large_text": bool(session.get("large_text")),
        "current_user": current_user,
        # Pages' own menus (cards) ask the same rule as the header menu does.
        "may_open": lambda endpoint: may_open(current_user, endpoint),
    }


def _register_shell_destinations(app: Flask) -> None:
    from flask_babel import lazy_gettext as _l

    from eldercare.navigation import Destination, register_destinations

    register_destinations(
        app,
        Destination(
            "register.index",
            _l("Resident register"),
            description=_l("Find and register residents"),
        ),
        Destination(
            "links.queue",
            _l("Account link requests"),
            description=_l("Confirm or refuse requests to link accounts to residents"),
        ),
        Destination(
            "links.ask",
            _l("Link my account"),
            description=_l("Link this account to your (or your elder's) record in the register"),
        ),
        Destination(
            "audit.index", _l("Audit trail"), description=_l("Every change, who made it and when")
        ),
        Destination(
            "tokens.index",
            _l("API tokens"),
            description=_l("Tokens for devices and partner systems"),
        ),
        Destination(
            "messages.index",
            _l("Messages"),
            (),  # everyone gets notices
            _l("Notices about your vouchers, bookings and assessments"),
        ),
    )


def _register_notifications(app: Flask) -> None:
    """The outbox's email backend, the job that drains it and its command."""
    from eldercare import mail, notifications
    from eldercare.scheduler import ScheduledJob

    notifications.register_backend("email", mail.send_notification)
    app.cli.add_command(notifications.cli)
    app.extensions.setdefault("scheduled_jobs", []).append(
        ScheduledJob(
            id="notifications-deliver",
            func=notifications.deliver_pending,
            trigger="interval",
            trigger_args={"minutes": 1},
            description="Send pending notifications (email; .eml files without MAIL_SERVER)",
        )
    )


def _register_audit_sealing(app: Flask) -> None:
    from eldercare import audit
    from eldercare.scheduler import ScheduledJob

    app.extensions.setdefault("scheduled_jobs", []).append(
        ScheduledJob(
            id="audit-seal",
            func=audit.seal_job,
            trigger="interval",
            trigger_args={"minutes": 1},
            description="Seal the audit rows appended since the last run into the chain",
            run_at_start=True,
        )
    )


def _register_accounts_purge(app: Flask) -> None:
    from eldercare import accounts_purge
    from eldercare.scheduler import ScheduledJob

    app.extensions.setdefault("scheduled_jobs", []).append(
        ScheduledJob(
            id="accounts-purge",
            func=accounts_purge.purge,
            trigger="cron",
            trigger_args={"hour": 3, "minute": 40},  # a quiet hour
            description="Delete spent sign-in throttle rows and sessions over 30 days old",
        )
    )


class RowIdConverter(IntegerConverter):
    """``<int:id>`` in a URL: a row id, so at most the largest INTEGER key. A longer number
    matches no route (404) instead of overflowing in the database driver (500)."""

    def __init__(self, url_map, fixed_digits=0, min=None, max=ROW_ID_MAX, signed=False):  # noqa: A002
        super().__init__(url_map, fixed_digits=fixed_digits, min=min, max=max, signed=signed)


def create_app(config: dict | None = None) -> Flask:
    app = Flask(__name__, instance_relative_config=True)
    app.url_map.converters["int"] = RowIdConverter
    app.config.update(load_config(app.instance_path))
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False  # checked in _csrf_for_browsers_only
    if config:
        app.config.update(config)
    check_config(app.config)
    if app.config.get("PROXY_HOPS"):
        # The client's address and scheme as the proxies saw them (the sign-in throttle
        # counts per address); only as many X-Forwarded-* entries as there are proxies.
        hops = app.config["PROXY_HOPS"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)
    os.makedirs(app.instance_path, exist_ok=True)
    logging.basicConfig(level=logging.INFO)

    from eldercare import models  # noqa: F401  (every table on the metadata)

    _db.init_app(app)
    with app.app_context():
        _tune_sqlite(_db.engine, app.config.get("SQLITE_BEGIN_IMMEDIATE", False))
    init_migrate(app, MIGRATIONS_DIR)  # Flask-Migrate (and Alembic) load when first used
    csrf.init_app(app)
    app.before_request(_csrf_for_browsers_only)
    from eldercare.forms import refuse_nul_characters
    from eldercare.request_guards import refuse_deep_json

    app.before_request(refuse_deep_json)  # before anything parses the body
    app.before_request(refuse_nul_characters)  # PostgreSQL refuses NUL in text: say so first

    from eldercare import cli, confirmation, errors, i18n, security_headers
    from eldercare.account_link_api import blp as account_link_api
    from eldercare.account_link_views import bp as account_link_bp
    from eldercare.api import api, init_api
    from eldercare.audit_views import bp as audit_bp
    from eldercare.auth import bp as auth_bp
    from eldercare.auth import login_manager
    from eldercare.home import bp as home_bp
    from eldercare.messages_views import bp as messages_bp
    from eldercare.register_views import bp as register_bp
    from eldercare.scheduler import cli as scheduler_cli
    from eldercare.timeutil import format_local
    from eldercare.token_views import bp as tokens_bp

    babel.init_app(app, locale_selector=i18n.select_locale)
    login_manager.init_app(app)
    init_api(app)
    api.register_blueprint(account_link_api)
    i18n.register(app)
    shell_pages = (home_bp, auth_bp, register_bp, audit_bp, tokens_bp, messages_bp)
    for blueprint in (*shell_pages, account_link_bp):
        app.register_blueprint(blueprint)
    cli.register(app)
    app.cli.add_command(scheduler_cli)
    app.extensions.setdefault("scheduled_jobs", [])
    app.extensions.setdefault("demo_steps", [])

    import assessment
    import marketplace
    import vouchers

    for domain in (assessment, marketplace, vouchers):
        domain.register(app)
    _register_shell_destinations(app)
    _register_notifications(app)
    _register_audit_sealing(app)
    _register_accounts_purge(app)

    # After flask-smorest, which installs a JSON-only handler for HTTP errors.
    errors.register(app)
    confirmation.register(app)
    security_headers.register(app)
    app.context_processor(_template_context)
    app.jinja_env.filters["local_dt"] = format_local
    # Text stored as a code and its parameters, said in the reader's language.
    app.jinja_env.filters["stored"] = stored_text.render
    return app
