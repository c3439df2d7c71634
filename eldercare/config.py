"""Settings from environment variables, with defaults that are safe for a newcomer."""

from __future__ import annotations

import os
from pathlib import Path

from eldercare.pii import (
    DEMO_PII_HMAC_KEY,
    DEMO_PII_KEYS,
    PiiKeyError,
    keys_from_env,
    parse_keys,
)

DEFAULT_SECRET_KEY = "dev-only-not-secret"  # noqa: S105 - refused in production below
# The demo's webhook signing secret (the Makefile's ``make run``): public, so refused in
# production below, as is any secret short enough to guess.
DEMO_WEBHOOK_SECRET = "whsec_demo_only"  # noqa: S105
MIN_WEBHOOK_SECRET_LENGTH = 32


class ConfigError(RuntimeError):
    """The configuration would run the platform unsafely."""


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return default if raw in (None, "") else int(raw)


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return default if raw in (None, "") else float(raw)


def load_config(instance_path: str) -> dict:
    """Build the settings dict from the environment.

    ``ELDERCARE_ENV=production`` switches on the checks a real deployment needs.
    """
    env = os.environ.get("ELDERCARE_ENV", "development")
    default_db = "sqlite:///" + str(Path(instance_path) / "eldercare.db")
    pii_keys, pii_hmac_key = keys_from_env()
    return {
        "ENV_NAME": env,
        "SECRET_KEY": os.environ.get("SECRET_KEY", DEFAULT_SECRET_KEY),
        "SQLALCHEMY_DATABASE_URI": os.environ.get("DATABASE_URL", default_db),
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
        # SQLite only: every transaction takes the write lock when it begins, so that several
        # processes on one file (scripts/run_platform.py, i.e. `make run`, sets it for its web
        # server and scheduler) wait their turn instead of failing with "database is locked".
        # Off by default: one process (the tests) does not need it, and readers then wait too.
        "SQLITE_BEGIN_IMMEDIATE": os.environ.get("SQLITE_BEGIN_IMMEDIATE", "").lower()
        in ("1", "true", "yes"),
        # Resident ID numbers and phones are encrypted with these (eldercare/pii.py):
        # "kid:<base64 32 bytes>,..." (the first writes, all read) and the look-up hash key.
        # Unset outside production: the demo's fixed keys, which production refuses.
        "PII_KEYS": pii_keys,
        "PII_HMAC_KEY": pii_hmac_key,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": env == "production",
        "REMEMBER_COOKIE_SECURE": env == "production",
        "WTF_CSRF_TIME_LIMIT": 8 * 3600,  # a desk shift; the form is re-sent after that
        "BABEL_DEFAULT_LOCALE": "zh_CN",
        "BABEL_DEFAULT_TIMEZONE": "Asia/Shanghai",
        "SUPPORTED_LOCALES": ["zh_CN", "en"],
        # The sign-in throttle (eldercare/login_throttle.py): wrong passwords allowed for one
        # name from one client, then that client is locked out of that name (not its owner
        # elsewhere) for LOGIN_LOCK_MINUTES; from one client across all names, in the same
        # time; and for one name from all clients together, in LOGIN_NAME_LOCK_MINUTES.
        "LOGIN_MAX_FAILURES": _int("LOGIN_MAX_FAILURES", 5),
        "LOGIN_LOCK_MINUTES": _int("LOGIN_LOCK_MINUTES", 15),
        "LOGIN_CLIENT_MAX_FAILURES": _int("LOGIN_CLIENT_MAX_FAILURES", 30),
        "LOGIN_NAME_MAX_FAILURES": _int("LOGIN_NAME_MAX_FAILURES", 50),
        "LOGIN_NAME_LOCK_MINUTES": _int("LOGIN_NAME_LOCK_MINUTES", 60),
        # How many reverse proxies in front of the app set X-Forwarded-For (and -Proto): the
        # client address the throttle counts is the one the outermost of them saw. 0 (the
        # default): the app faces clients directly and the header, which anyone can send, is
        # ignored. Set exactly the number of proxies you run, never more.
        "PROXY_HOPS": _int("PROXY_HOPS", 0),
        # A sign-in session unused this long is over (eldercare/user_sessions.py); sign-out
        # and a password change end sessions at once. Default: 12 hours, a long desk shift.
        "SESSION_IDLE_MINUTES": _int("SESSION_IDLE_MINUTES", 12 * 60),
        # However much it is used (an elder's QR page refreshes itself), a session ends this
        # long after its sign-in: a copied cookie kept alive by use does not live for ever.
        "SESSION_MAX_DAYS": _int("SESSION_MAX_DAYS", 30),
        # Requests to be linked to a resident, per account in 24 hours (eldercare/account_links.py).
        "LINK_REQUESTS_PER_DAY": _int("LINK_REQUESTS_PER_DAY", 5),
        # werkzeug's default (scrypt); tests lower the cost to keep the suite fast.
        "PASSWORD_HASH_METHOD": os.environ.get("PASSWORD_HASH_METHOD", "scrypt"),
        # Requests larger than this are refused (413) before a view reads them; pages that
        # take uploads set their own, tighter, limit.
        "MAX_CONTENT_LENGTH": _int("MAX_CONTENT_LENGTH", 16 * 1024 * 1024),
        "IMPORT_MAX_BYTES": _int("IMPORT_MAX_BYTES", 10 * 1024 * 1024),
        "IMPORT_MAX_ROWS": _int("IMPORT_MAX_ROWS", 20_000),
        "PROVIDER_DOCUMENT_MAX_BYTES": _int("PROVIDER_DOCUMENT_MAX_BYTES", 5 * 1024 * 1024),
        # Certification documents live outside the web root; default <instance>/documents.
        "DOCUMENT_STORE": os.environ.get("DOCUMENT_STORE") or None,
        # The marketplace's default search radius: a 15-minute walk for an elder.
        "SEARCH_DEFAULT_RADIUS_M": _int("SEARCH_DEFAULT_RADIUS_M", 1000),
        # The site's address as the public reaches it (https://eldercare.example.gov.cn): the
        # QR codes and printed cards carry it, so it must not come from a request's Host header.
        # Unset (development, tests): the current request's host.
        "PUBLIC_BASE_URL": os.environ.get("PUBLIC_BASE_URL", "").rstrip("/") or None,
        # The Stripe-compatible card gateway (vouchers/gateway.py). No URL: card payments are
        # off and the co-payment page offers cash only.
        "PAYMENT_GATEWAY_URL": os.environ.get("PAYMENT_GATEWAY_URL", "").rstrip("/"),
        "PAYMENT_GATEWAY_SECRET_KEY": os.environ.get("PAYMENT_GATEWAY_SECRET_KEY", ""),
        "PAYMENT_WEBHOOK_SECRET": os.environ.get("PAYMENT_WEBHOOK_SECRET", ""),
        # Seconds to wait for each answer; an elder is standing at the counter meanwhile.
        "PAYMENT_GATEWAY_TIMEOUT": _float("PAYMENT_GATEWAY_TIMEOUT", 10.0),
        # Email for the notification outbox (eldercare/mail.py). No MAIL_SERVER: messages are
        # written as .eml files under MAIL_FILE_DIR (default <instance>/mail) instead of sent,
        # so development and the demo never mail real people.
        "MAIL_SERVER": os.environ.get("MAIL_SERVER", "").strip(),
        "MAIL_PORT": _int("MAIL_PORT", 25),
        # STARTTLS after connecting (port 587 usually); the password never crosses in clear.
        "MAIL_USE_TLS": os.environ.get("MAIL_USE_TLS", "").lower() in ("1", "true", "yes"),
        "MAIL_USERNAME": os.environ.get("MAIL_USERNAME", ""),
        "MAIL_PASSWORD": os.environ.get("MAIL_PASSWORD", ""),
        "MAIL_FROM": os.environ.get("MAIL_FROM", "eldercare@localhost"),
        # Seconds for each SMTP exchange; the outbox job runs every minute.
        "MAIL_TIMEOUT": _int("MAIL_TIMEOUT", 20),
        "MAIL_FILE_DIR": os.environ.get("MAIL_FILE_DIR") or None,
        # A standby scheduler asks this often whether the active one has gone; the active one
        # checks its lock's connection as often (eldercare/scheduler_leader.py).
        "SCHEDULER_STANDBY_POLL_SECONDS": _float("SCHEDULER_STANDBY_POLL_SECONDS", 15.0),
        # No interval job waits longer than this many seconds between runs (the outbox, the
        # eligibility feed, the monthly catch-up ...); cron jobs keep their hour. For a demo
        # or a test that wants to see the jobs work at once; unset or 0 (the default, and
        # what production wants): each job's own interval (eldercare/scheduler.py).
        "SCHEDULER_INTERVAL_CAP_SECONDS": _float("SCHEDULER_INTERVAL_CAP_SECONDS", 0.0),
        # The bureau's account settlements are paid from: the header of every bank transfer
        # batch file (vouchers/settlement/bank/bank_files.py). The defaults are the demo's.
        "SETTLEMENT_PAYER_ACCOUNT_NAME": os.environ.get(
            "SETTLEMENT_PAYER_ACCOUNT_NAME", "沈阳市民政局养老服务补贴资金专户"
        ),
        "SETTLEMENT_PAYER_ACCOUNT_NUMBER": os.environ.get(
            "SETTLEMENT_PAYER_ACCOUNT_NUMBER", "2101000000000000001"
        ),
        "SETTLEMENT_PAYER_BANK": os.environ.get("SETTLEMENT_PAYER_BANK", "盛京银行沈阳分行"),
        "API_TITLE": "Eldercare vouchers API",
        "API_VERSION": "v1",
        "OPENAPI_VERSION": "3.0.3",
        "OPENAPI_URL_PREFIX": "/api/v1",
        "OPENAPI_JSON_PATH": "openapi.json",
        # What holds for every operation, stated once rather than on every field.
        "API_SPEC_OPTIONS": {
            "info": {
                "description": (
                    "Errors answer {\"error\": {\"code\", \"message\", \"details\"}}; "
                    "a 422 of the document's own rules names each field under its "
                    "location (json, query, files). Text anywhere must not contain a NUL "
                    "character (422). 404: no record with that id or code, or not yours "
                    "to see; 409: the record's state does not allow it; 405 answers "
                    "carry Allow."
                )
            }
        },
    }


def check_config(config: dict) -> None:
    """Refuse to start a production app with settings that would leak or lose data."""
    if config.get("ENV_NAME") != "production":
        _check_pii_keys(config, production=False)
        return
    key = config.get("SECRET_KEY") or ""
    if key == DEFAULT_SECRET_KEY or len(key) < 32:
        raise ConfigError(
            "SECRET_KEY must be set to a random value of at least 32 characters in production"
        )
    if str(config.get("SQLALCHEMY_DATABASE_URI", "")).startswith("sqlite"):
        raise ConfigError("production needs DATABASE_URL pointing at PostgreSQL, not SQLite")
    if config.get("PAYMENT_GATEWAY_URL"):
        # Card payments are on: they must be able to authenticate, and card data and the
        # secret key must not cross the network in clear text.
        if not config.get("PAYMENT_GATEWAY_SECRET_KEY"):
            raise ConfigError("PAYMENT_GATEWAY_URL is set but PAYMENT_GATEWAY_SECRET_KEY is empty")
        if not str(config["PAYMENT_GATEWAY_URL"]).startswith("https://"):
            raise ConfigError("PAYMENT_GATEWAY_URL must be an https:// URL in production")
        if not config.get("PAYMENT_WEBHOOK_SECRET"):
            # Without it every webhook is refused, and payments settle only by polling.
            raise ConfigError("PAYMENT_GATEWAY_URL is set but PAYMENT_WEBHOOK_SECRET is empty")
    webhook_secret = str(config.get("PAYMENT_WEBHOOK_SECRET") or "")
    if webhook_secret and (
        webhook_secret == DEMO_WEBHOOK_SECRET
        or len(webhook_secret.strip()) < MIN_WEBHOOK_SECRET_LENGTH
    ):
        # Whoever knows it can sign events the platform acts on.
        raise ConfigError(
            "PAYMENT_WEBHOOK_SECRET must be the gateway's signing secret (at least "
            f"{MIN_WEBHOOK_SECRET_LENGTH} characters), not the demo's, in production"
        )
    # QR codes and printed cards carry this address for months; a request's Host header
    # (which a client chooses) must not end up on a card.
    if not str(config.get("PUBLIC_BASE_URL") or "").startswith("https://"):
        raise ConfigError("PUBLIC_BASE_URL must be the site's https:// address in production")
    if config.get("MAIL_PASSWORD") and not config.get("MAIL_USE_TLS"):
        raise ConfigError("MAIL_PASSWORD is set without MAIL_USE_TLS: it would cross in clear")
    _check_pii_keys(config, production=True)


def _check_pii_keys(config: dict, *, production: bool) -> None:
    """Malformed keys stop any app at start, not at the first resident read; production
    refuses the demo's published keys (eldercare/pii.py)."""
    try:
        keys = parse_keys(config.get("PII_KEYS") or "", config.get("PII_HMAC_KEY") or "")
    except PiiKeyError as exc:
        raise ConfigError(f"{exc}: set PII_KEYS and PII_HMAC_KEY (README, at rest)") from None
    demo = parse_keys(DEMO_PII_KEYS, DEMO_PII_HMAC_KEY)
    if production and (keys.hmac_key == demo.hmac_key or keys.fingerprints & demo.fingerprints):
        raise ConfigError("PII_KEYS and PII_HMAC_KEY must be real keys in production, not the demo")
