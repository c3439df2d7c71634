from datetime import timedelta

import pytest
import sqlalchemy as sa

from eldercare.audit import AuditLog
from eldercare.errors import InvalidInput
from marketplace import providers
from marketplace.errors import InvalidTransition, ProviderNotCertified
from marketplace.models import Provider


def test_fixture_providers_are_certified_for_a_year(market):
    assert market.station.status == "active"
    assert market.station.certified_until == market.today + timedelta(days=364)
    assert market.station.is_certified_on(market.today)
    assert not market.station.is_certified_on(market.station.certified_until + timedelta(days=1))


def test_a_wrong_credit_code_is_refused_and_nothing_saved(market, db_session):
    count = db_session.scalar(sa.select(sa.func.count()).select_from(Provider))
    admin = market.factory.user("newcomer", roles=["provider_admin"])
    with pytest.raises(InvalidInput) as excinfo:
        providers.apply_provider(
            applicant=admin,
            name="X",
            credit_code="52210102NH0000019Z",
            type="home_service",
            district=market.heping,
            address="a",
            latitude=41.7,
            longitude=123.4,
            service_districts=[market.heping],
            contact_name="c",
            contact_phone="13800001111",
            bank_account_name="x",
            bank_name="y",
            bank_account_number="62220000111122",
        )
    assert "credit_code" in excinfo.value.details
    assert db_session.scalar(sa.select(sa.func.count()).select_from(Provider)) == count


def test_suspension_takes_effect_at_once_and_is_audited(market, db_session):
    providers.suspend(market.home, "complaints about no-shows")
    assert not market.home.is_certified_on(market.today)
    with pytest.raises(ProviderNotCertified):
        providers.require_certified(market.home)
    row = db_session.scalar(sa.select(AuditLog).where(AuditLog.action == "provider.suspend"))
    assert row.after["reason"] == "complaints about no-shows"
    providers.reinstate(market.home, "investigation closed")
    assert market.home.is_certified_on(market.today)


def test_decisions_need_a_reason_and_follow_the_states(market):
    with pytest.raises(InvalidInput):
        providers.suspend(market.home, "")
    providers.revoke(market.home, "fraud")
    with pytest.raises(InvalidTransition):
        providers.reinstate(market.home, "please")
    with pytest.raises(InvalidTransition):
        providers.approve(market.home)


def test_renewal_adds_a_year_to_the_current_one(market):
    end = market.station.certified_until
    providers.renew(market.station, today=market.today)
    assert market.station.certified_until == end + timedelta(days=365)
