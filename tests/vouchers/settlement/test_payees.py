"""The account settlements are paid to: a certified provider cannot change it directly; a
change it requests takes effect only when another person at the bureau approves it, and
only then reaches a new statement's snapshot."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from eldercare.audit import AuditLog
from eldercare.credit_codes import compose_credit_code
from eldercare.errors import Conflict, InvalidInput, PermissionDenied
from marketplace import providers
from tests.vouchers.settlement.builders import approved_statement
from tests.vouchers.settlement.conftest import spend
from vouchers.settlement.bank import payees
from vouchers.settlement.models import PayeeChange

EN = {"Accept-Language": "en"}
NEW = {"account_name": "南湖社区养老服务站", "bank_name": "中国银行沈阳分行",
       "account_number": "6013 8200 0000 9876"}  # fmt: skip
PROFILE = {
    "contact_name": "联系人",
    "contact_phone": "13800001111",
    "bank_account_name": "南湖社区养老服务站",
    "bank_name": "中国银行沈阳分行",
    "bank_account_number": "6013820000009876",
    "hours_mon_from": "08:00",
    "hours_mon_to": "18:00",
}


def test_a_certified_provider_cannot_change_its_bank_account_on_the_profile(
    client, login, market, db_session
):
    login(market.station_admin)
    response = client.post("/marketplace/provider/profile", data=PROFILE, headers=EN)
    db_session.refresh(market.station)
    assert market.station.bank_account_number == "6222000011112222"
    assert response.status_code == 422
    assert "payment account" in response.get_data(as_text=True)


def test_the_service_refuses_it_too_but_saves_the_rest(market, db_session):
    with pytest.raises(InvalidInput) as refused:
        providers.update_profile(
            market.station,
            contact_name="新联系人",
            contact_phone="13800002222",
            bank_account_name="x",
            bank_name="y",
            bank_account_number="6222000099990000",
            opening_hours=None,
        )
    assert "bank_account_number" in refused.value.details
    providers.update_profile(
        market.station, contact_name="新联系人", contact_phone="13800002222", opening_hours=None
    )
    assert market.station.contact_name == "新联系人"
    assert market.station.bank_account_number == "6222000011112222"


def test_an_applicant_still_gives_and_corrects_its_account(market, db_session):
    applicant = market.factory.user("new.admin", roles=["provider_admin"])
    provider = providers.apply_provider(
        applicant=applicant,
        name="新站",
        credit_code=compose_credit_code("52", market.heping.code, "XN000009"),
        type="community_station",
        district=market.heping,
        address="三好街 9 号",
        latitude=41.77,
        longitude=123.43,
        service_districts=[market.heping],
        contact_name="联系人",
        contact_phone="13800001111",
        bank_account_name="新站",
        bank_name="盛京银行",
        bank_account_number="6222000011113333",
    )
    providers.update_profile(
        provider,
        contact_name="联系人",
        contact_phone="13800001111",
        bank_account_name="新站",
        bank_name="盛京银行",
        bank_account_number="6222000011114444",
        opening_hours=None,
    )
    assert provider.bank_account_number == "6222000011114444"


def test_a_change_needs_another_persons_approval_and_then_reaches_new_statements(
    shop, bureau, db_session
):
    station = shop.market.station
    admin = shop.station_admin
    change = payees.request_change(station, actor=admin, **NEW)
    assert change.status == "pending" and change.account_number == "6013820000009876"
    with pytest.raises(Conflict):  # one pending request at a time
        payees.request_change(station, actor=admin, **NEW | {"account_number": "60138200001111"})
    before = approved_statement(
        station, [spend(shop, 1500)], preparer=bureau.officer, approver=bureau.approver
    )
    assert before.payee_account_number == "6222000011112222"  # not yet approved
    with pytest.raises(PermissionDenied):  # a provider cannot approve its own change
        payees.approve(change, actor=admin)
    payees.approve(change, actor=bureau.officer)
    assert (change.status, change.decided_by_user_id) == ("approved", bureau.officer.id)
    db_session.refresh(station)
    assert station.bank_account_number == "6013820000009876"
    after = approved_statement(
        station, [spend(shop, 1000)], preparer=bureau.officer, approver=bureau.approver
    )
    assert after.payee_account_number == "6013820000009876"
    db_session.refresh(before)
    assert before.payee_account_number == "6222000011112222"  # frozen snapshot
    with pytest.raises(Conflict):
        payees.reject(change, reason="too late now", actor=bureau.approver)
    actions = db_session.scalars(
        sa.select(AuditLog).where(AuditLog.action.like("provider.payee_change_%"))
    ).all()
    assert [a.action for a in actions] == [
        "provider.payee_change_request",
        "provider.payee_change_approve",
    ]
    assert actions[1].before["account_number"] == "************2222"
    assert "6013820000009876" not in (actions[1].after_json or "")


def test_the_requester_never_decides_and_district_staff_cannot(shop, bureau, factory, db_session):
    station = shop.market.station
    # Someone holding both roles requests: they may not decide their own request.
    both = factory.user("both.roles", roles=["bureau_officer", "provider_admin"])
    change = payees.request_change(station, actor=both, **NEW)
    with pytest.raises(PermissionDenied):
        payees.approve(change, actor=both)
    district = factory.user("heping.officer2", roles=["bureau_officer"], district=shop.heping)
    with pytest.raises(PermissionDenied):
        payees.approve(change, actor=district)
    assert db_session.get(PayeeChange, change.id).status == "pending"


def test_a_rejection_needs_a_reason_and_changes_nothing(shop, bureau, db_session):
    station = shop.market.station
    change = payees.request_change(station, actor=shop.station_admin, **NEW)
    with pytest.raises(InvalidInput):
        payees.reject(change, reason=" ", actor=bureau.approver)
    payees.reject(change, reason="开户许可证与户名不符", actor=bureau.approver)
    db_session.refresh(station)
    assert change.status == "rejected" and station.bank_account_number == "6222000011112222"
    # Decided: a new request may be made.
    again = payees.request_change(station, actor=shop.station_admin, **NEW)
    assert again.status == "pending"


@pytest.mark.parametrize(
    "field,values",
    [
        ("account_number", {"account_number": "12ab"}),
        ("account_name", {"account_name": " "}),
        ("bank_name", {"bank_name": ""}),
        (
            "account_number",
            {
                "account_number": "6222000011112222",
                "bank_name": "盛京银行",
                "account_name": "南湖社区养老服务站",
            },
        ),  # fmt: skip
    ],
)
def test_bad_requests_are_refused_with_the_field(shop, db_session, field, values):
    with pytest.raises(InvalidInput) as refused:
        payees.request_change(shop.market.station, actor=shop.station_admin, **NEW | values)
    assert field in refused.value.details
    assert db_session.scalar(sa.select(sa.func.count()).select_from(PayeeChange)) == 0
