import base64

import pytest

from eldercare import create_app
from eldercare.config import DEFAULT_SECRET_KEY, DEMO_WEBHOOK_SECRET, ConfigError

PG_URL = "postgresql+psycopg://app@db.invalid/eldercare"  # never connected to at start-up
REAL_PII_KEYS = "k1:" + base64.b64encode(b"r" * 32).decode()  # not the demo's
REAL_PII_HMAC_KEY = base64.b64encode(b"s" * 32).decode()


def test_development_defaults_to_sqlite_in_instance_folder(monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("ELDERCARE_ENV", raising=False)
    app = create_app()
    uri = app.config["SQLALCHEMY_DATABASE_URI"]
    assert uri.startswith("sqlite:///") and uri.endswith("instance/eldercare.db")
    assert app.config["BABEL_DEFAULT_LOCALE"] == "zh_CN"


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("LOGIN_MAX_FAILURES", "7")
    monkeypatch.setenv("DATABASE_URL", "sqlite:////tmp/elsewhere.db")
    app = create_app()
    assert app.config["LOGIN_MAX_FAILURES"] == 7
    assert app.config["SQLALCHEMY_DATABASE_URI"] == "sqlite:////tmp/elsewhere.db"


@pytest.mark.parametrize("key", [None, DEFAULT_SECRET_KEY, "short"])
def test_production_refuses_a_missing_default_or_weak_secret_key(monkeypatch, key):
    monkeypatch.setenv("ELDERCARE_ENV", "production")
    monkeypatch.setenv("DATABASE_URL", PG_URL)
    if key is None:
        monkeypatch.delenv("SECRET_KEY", raising=False)
    else:
        monkeypatch.setenv("SECRET_KEY", key)
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        create_app()


def test_production_refuses_sqlite(monkeypatch):
    monkeypatch.setenv("ELDERCARE_ENV", "production")
    monkeypatch.setenv("SECRET_KEY", "x" * 40)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(ConfigError, match="PostgreSQL"):
        create_app()


def _production(monkeypatch):
    monkeypatch.setenv("ELDERCARE_ENV", "production")
    monkeypatch.setenv("SECRET_KEY", "k" * 48)
    monkeypatch.setenv("DATABASE_URL", PG_URL)
    monkeypatch.setenv("PUBLIC_BASE_URL", "https://yanglao.shenyang.example.gov.cn")
    monkeypatch.setenv("PII_KEYS", REAL_PII_KEYS)
    monkeypatch.setenv("PII_HMAC_KEY", REAL_PII_HMAC_KEY)


def test_production_starts_with_real_settings_and_secure_cookies(monkeypatch):
    _production(monkeypatch)
    app = create_app()
    assert app.config["SESSION_COOKIE_SECURE"] is True
    assert app.config["SESSION_COOKIE_HTTPONLY"] is True


def test_domain_packages_register_blueprint_cli_and_jobs(app):
    for name in ("assessment", "marketplace", "vouchers"):
        assert name in app.blueprints
        assert name in app.cli.commands
    assert isinstance(app.extensions["scheduled_jobs"], list)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"PUBLIC_BASE_URL": ""}, "PUBLIC_BASE_URL"),
        ({"PUBLIC_BASE_URL": "http://yanglao.example.gov.cn"}, "PUBLIC_BASE_URL"),
        ({"PAYMENT_GATEWAY_URL": "http://gateway.example"}, "https"),
        (
            {"PAYMENT_GATEWAY_URL": "https://api.stripe.com", "PAYMENT_GATEWAY_SECRET_KEY": "sk"},
            "PAYMENT_WEBHOOK_SECRET",
        ),
        ({"MAIL_SERVER": "smtp.example", "MAIL_PASSWORD": "pw"}, "MAIL_USE_TLS"),
    ],
)
def test_production_refuses_settings_that_would_leak_or_mislead(monkeypatch, settings, named):
    _production(monkeypatch)
    monkeypatch.setenv("PAYMENT_GATEWAY_SECRET_KEY", "sk_live_x")
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError, match=named):
        create_app()


def test_production_starts_with_card_payments_and_mail_configured_safely(monkeypatch):
    _production(monkeypatch)
    for key, value in {
        "PAYMENT_GATEWAY_URL": "https://api.stripe.com",
        "PAYMENT_GATEWAY_SECRET_KEY": "sk_live_x",
        "PAYMENT_WEBHOOK_SECRET": "whsec_" + "w" * 32,
        "MAIL_SERVER": "smtp.example",
        "MAIL_PASSWORD": "pw",
        "MAIL_USE_TLS": "true",
    }.items():
        monkeypatch.setenv(key, value)
    assert create_app().config["PUBLIC_BASE_URL"] == "https://yanglao.shenyang.example.gov.cn"


@pytest.mark.parametrize("secret", [DEMO_WEBHOOK_SECRET, "whsec_x", "w" * 31, " " * 40])
@pytest.mark.parametrize("gateway_url", ["https://api.stripe.com", ""])
def test_production_refuses_the_demo_or_a_short_webhook_secret(monkeypatch, secret, gateway_url):
    """Anyone who knows the webhook secret can sign events; the demo's is public."""
    _production(monkeypatch)
    monkeypatch.setenv("PAYMENT_GATEWAY_URL", gateway_url)
    monkeypatch.setenv("PAYMENT_GATEWAY_SECRET_KEY", "sk_live_x")
    monkeypatch.setenv("PAYMENT_WEBHOOK_SECRET", secret)
    with pytest.raises(ConfigError, match="PAYMENT_WEBHOOK_SECRET"):
        create_app()


def test_production_takes_a_webhook_secret_of_32_characters(monkeypatch):
    _production(monkeypatch)
    monkeypatch.setenv("PAYMENT_GATEWAY_URL", "https://api.stripe.com")
    monkeypatch.setenv("PAYMENT_GATEWAY_SECRET_KEY", "sk_live_x")
    monkeypatch.setenv("PAYMENT_WEBHOOK_SECRET", "s" * 32)
    assert create_app().config["PAYMENT_WEBHOOK_SECRET"] == "s" * 32


def test_the_demo_webhook_secret_is_the_one_make_run_uses():
    """make run starts the platform through scripts/run_platform.py, which gives the web
    server and the scheduler this very constant (production refuses it)."""
    from pathlib import Path

    launcher = (Path(__file__).parents[1] / "scripts" / "run_platform.py").read_text()
    assert '"PAYMENT_WEBHOOK_SECRET": DEMO_WEBHOOK_SECRET' in launcher
    assert "from eldercare.config import DEMO_WEBHOOK_SECRET" in launcher
