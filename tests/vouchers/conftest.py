"""A voucher scheme to test against: the marketplace around 三好街 (tests/marketplace), an
assessment agency (tests/assessment), the elder assessed as moderately impaired and approved,
the pool funded and Heping District given an allocation, all through the real services."""

from datetime import timedelta
from types import SimpleNamespace

import pytest

from marketplace.staff import invite_staff
from tests.assessment.conftest import take_through, world  # noqa: F401  (fixtures)
from tests.marketplace.conftest import ELDER_HOME, market  # noqa: F401  (fixtures)
from tests.vouchers.helpers import give_voucher
from vouchers.pool import funding as pool

TOTAL_FOR_LEVEL = {"moderate": 50, "severe": 40, "complete": 20, "mild": 70}


@pytest.fixture
def scheme(market, world, take_through):  # noqa: F811
    """``scheme.market`` and ``scheme.world`` are the two worlds; the rest are shortcuts."""
    s = SimpleNamespace(market=market, world=world, today=world.today)
    s.heping = market.heping
    s.approver = market.approver
    s.elder = market.elder
    s.elder_user = market.elder_user
    s.son = market.son

    def assess(resident, level="moderate", **kwargs):
        return take_through(resident, total=TOTAL_FOR_LEVEL[level], **kwargs)

    s.assess = assess
    s.assessment = assess(market.elder)
    pool.top_up(100_000_000, source="central", memo="中央资金", actor=s.approver)
    pool.allocate(s.heping, 10_000_000, memo="和平区 100,000 元", actor=s.approver)
    return s


# -- the card gateway: a real localstripe, see eldercare/dev_gateway.py

GATEWAY_WEBHOOK_SECRET = "whsec_eldercare_test_0123456789"


@pytest.fixture(scope="session")
def localstripe_server(tmp_path_factory):
    """The session's localstripe (a LocalStripe: ``.url``, ``.received()``, ``.set_faults()``)."""
    from eldercare.dev_gateway import LocalStripe

    server = LocalStripe(tmp_path_factory.mktemp("localstripe")).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def localstripe(localstripe_server):
    """The base URL of the session's localstripe."""
    return localstripe_server.url


@pytest.fixture
def stoppable_localstripe(tmp_path):
    """A localstripe of this test's own, for stopping and starting mid-test (``.stop()``,
    ``.start()``: same URL, same payments) or for webhooks that must reach only this test."""
    from eldercare.dev_gateway import LocalStripe

    server = LocalStripe(tmp_path / "localstripe").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def gateway_app_config(app, localstripe):
    """Card payments on, through the session's localstripe; the shared app's previous
    settings are put back afterwards."""
    from eldercare.dev_gateway import TEST_SECRET_KEY

    settings = {
        "PAYMENT_GATEWAY_URL": localstripe,
        "PAYMENT_GATEWAY_SECRET_KEY": TEST_SECRET_KEY,
        "PAYMENT_WEBHOOK_SECRET": GATEWAY_WEBHOOK_SECRET,
        "PAYMENT_GATEWAY_TIMEOUT": 5.0,
    }
    before = {key: app.config[key] for key in settings if key in app.config}
    app.config.update(settings)
    try:
        yield settings
    finally:
        for key in settings:
            app.config.pop(key, None)
        app.config.update(before)


@pytest.fixture
def shop(scheme):
    """The elder's voucher, the station's caregiver (certified) and its admin (not)."""
    m = scheme.market
    scheme.voucher = give_voucher(scheme.elder, scheme.today)
    scheme.caregiver = invite_staff(
        m.station,
        username="caregiver.li",
        display_name="李护理员",
        password="caregiver-pass-1",
        certificate_number="YL-2025-0001",
        certificate_valid_until=scheme.today + timedelta(days=365),
        today=scheme.today,
    ).user
    scheme.station_admin = m.station_admin
    scheme.counter = 0
    return scheme
