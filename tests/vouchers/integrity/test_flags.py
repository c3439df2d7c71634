"""Redemption flags: a bureau officer holds a redemption out of settlement with a reason,
then clears it (settled with the next run) or rejects it (reversed through the normal path),
each audited; providers and other districts' officers cannot; a decision is taken once."""

import pytest
import sqlalchemy as sa

from eldercare.audit import AuditLog
from eldercare.db import db
from eldercare.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from tests.vouchers.settlement.conftest import spend
from tests.vouchers.test_payments import pay, priced
from vouchers.integrity import flags
from vouchers.integrity.models import RedemptionFlag
from vouchers.pool import ledger
from vouchers.redemption import steps as redemption
from vouchers.redemption.gateway import gateway


def _audit_actions(flag_id):
    return db.session.scalars(
        sa.select(AuditLog.action)
        .where(AuditLog.object_type == "redemption_flags", AuditLog.object_id == str(flag_id))
        .order_by(AuditLog.id)
    ).all()


def _hold(shop, r, reason="上门服务未签到，待核实"):
    return flags.raise_flag(
        r, rule=flags.RULE_BUREAU, evidence={"reason": reason}, actor=shop.market.officer
    )


def test_an_officer_holds_a_redemption_and_clears_it(shop, db_session):
    r = spend(shop)
    flag = _hold(shop, r)
    assert (flag.status, flag.rule, flag.raised_by_user_id) == (
        "open",
        "bureau",
        shop.market.officer.id,
    )
    assert flag.evidence == {"reason": "上门服务未签到，待核实"}
    assert flags.open_flag_of(r.id) == flag
    # Held once: a second hold on the same redemption is refused.
    with pytest.raises(Conflict):
        _hold(shop, r, "again")
    flags.clear(flag, reason="核实无误", actor=shop.approver)
    assert (flag.status, flag.reason, flag.decided_by_user_id) == (
        "cleared",
        "核实无误",
        shop.approver.id,
    )
    assert flag.decided_at is not None and flags.open_flag_of(r.id) is None
    assert r.status == "redeemed"
    assert _audit_actions(flag.id) == ["redemption_flag.raise", "redemption_flag.clear"]
    # Decided once: clearing or rejecting it again is refused, nothing changes.
    with pytest.raises(Conflict):
        flags.clear(flag, reason="again", actor=shop.market.officer)
    with pytest.raises(Conflict):
        flags.reject(flag, reason="again", actor=shop.market.officer)
    assert r.status == "redeemed" and flag.status == "cleared"


def test_rejecting_reverses_the_redemption(shop, db_session):
    r = spend(shop)
    db_session.refresh(shop.voucher)
    before = shop.voucher.balance_fen
    flag = _hold(shop, r)
    flags.reject(flag, reason="老人否认接受服务", actor=shop.market.officer)
    assert flag.status == "rejected" and flag.reason == "老人否认接受服务"
    assert (r.status, r.reversal_reason, r.reversed_by_user_id) == (
        "reversed",
        "老人否认接受服务",
        shop.market.officer.id,
    )
    db_session.refresh(shop.voucher)
    assert shop.voucher.balance_fen == before + r.subsidy_fen
    assert ledger.verify_ledger().ok
    assert _audit_actions(flag.id) == ["redemption_flag.raise", "redemption_flag.reject"]


def test_rejecting_a_card_redemption_refunds_the_co_payment(shop, db_session, gateway_app_config):
    r = priced(shop)
    pay(shop, r)
    flag = _hold(shop, r)
    flags.reject(flag, reason="服务未完成", actor=shop.market.officer)
    assert r.status == "reversed" and r.refund_id
    refund = gateway()._request("GET", f"/v1/refunds/{r.refund_id}")
    assert (refund["amount"], refund["payment_intent"]) == (900, r.payment_intent_id)


def test_a_redemption_the_provider_reversed_meanwhile_is_not_reversed_twice(shop, db_session):
    r = spend(shop)
    flag = _hold(shop, r)
    redemption.reverse(r, actor=shop.station_admin, reason="扫错了老人")
    flags.reject(flag, reason="已由服务商撤销", actor=shop.market.officer)
    assert flag.status == "rejected" and r.reversal_reason == "扫错了老人"
    assert ledger.verify_ledger().ok


@pytest.mark.parametrize("reason", ["", "   ", None, "x" * 2001])
def test_a_reason_is_required(shop, db_session, reason):
    r = spend(shop)
    with pytest.raises(InvalidInput) as refused:
        flags.raise_flag(
            r, rule=flags.RULE_BUREAU, evidence={"reason": reason}, actor=shop.market.officer
        )
    assert "reason" in refused.value.details
    flag = _hold(shop, r)
    for decide in (flags.clear, flags.reject):
        with pytest.raises(InvalidInput):
            decide(flag, reason=reason, actor=shop.market.officer)
    db_session.refresh(flag)
    assert flag.status == "open" and r.status == "redeemed"


def test_providers_and_other_districts_are_refused(shop, db_session, factory):
    r = spend(shop)
    for provider_user in (shop.station_admin, shop.caregiver):
        with pytest.raises(PermissionDenied):
            flags.raise_flag(
                r, rule=flags.RULE_BUREAU, evidence={"reason": "x"}, actor=provider_user
            )
    shenhe = factory.user("shenhe.officer", roles=["bureau_officer"], district=shop.market.shenhe)
    heping = factory.user("heping.officer", roles=["bureau_officer"], district=shop.heping)
    with pytest.raises(NotFound):
        flags.raise_flag(r, rule=flags.RULE_BUREAU, evidence={"reason": "x"}, actor=shenhe)
    flag = flags.raise_flag(r, rule=flags.RULE_BUREAU, evidence={"reason": "x"}, actor=heping)
    with pytest.raises(PermissionDenied):
        flags.clear(flag, reason="ok", actor=shop.station_admin)
    with pytest.raises(PermissionDenied):
        flags.reject(flag, reason="no", actor=shop.caregiver)
    with pytest.raises(NotFound):
        flags.reject(flag, reason="no", actor=shenhe)
    assert [f.id for f, _ in flags.open_flags(shenhe)] == []
    assert [f.id for f, _ in flags.open_flags(heping)] == [flag.id]
    assert [f.id for f, _ in flags.open_flags(shop.market.officer)] == [flag.id]
    db_session.refresh(flag)
    assert flag.status == "open" and r.status == "redeemed"


def test_only_a_completed_redemption_is_held(shop, db_session):
    checked_in = redemption.check_in(
        shop.voucher,
        scan_digest="not-paid",
        staff_user=shop.caregiver,
        service_id=shop.market.meals.id,
    )
    with pytest.raises(Conflict):
        _hold(shop, checked_in)
    r = spend(shop)
    redemption.reverse(r, actor=shop.station_admin, reason="扫错")
    with pytest.raises(Conflict):
        _hold(shop, r)
    assert db_session.scalar(sa.select(sa.func.count()).select_from(RedemptionFlag)) == 0


def test_an_automatic_rule_raises_a_flag_without_an_officer(shop, db_session):
    r = spend(shop)
    flag = flags.raise_flag(
        r, rule="distance", evidence={"distance_m": 2400, "limit_m": 500}, actor=None
    )
    assert (flag.status, flag.raised_by_user_id) == ("open", None)
    assert flag.evidence == {"distance_m": 2400, "limit_m": 500}


def test_a_pair_or_a_list_shows_a_district_reader_their_district_only(app_ctx):
    """impossible_travel and staff_overlap name a carer's other visits, of any district's
    elders: a district reader sees their own and a count of the others (a pair's other
    visit a bare marker, its place dropped); a city-wide reader sees all."""
    mine = {"id": 1, "at": "2026-03-02 09:00", "elder": "王*", "district": 7}
    theirs = {"id": 2, "at": "2026-03-02 09:20", "elder": "沈*", "district": 8}
    travel = {
        "redemption": mine,
        "earlier": theirs,
        "later": mine,
        "from": {"lat": 41.8, "lng": 123.4},
        "to": {"lat": 41.7, "lng": 123.3},
    }
    seen = flags.evidence_for(travel, 7)
    assert seen["earlier"] == {"other_district": True} and "from" not in seen
    assert seen["later"] == mine and seen["to"] == travel["to"] and seen["other_districts"] == 1
    assert flags.evidence_for(travel, None) == travel
    from flask_babel import force_locale

    with force_locale("en"):
        words = flags.explain("impossible_travel", travel, district_id=7)
    assert "沈*" not in words and "09:20" not in words and "#2" not in words
    assert words.endswith("And 1 redemption in other districts.")
    overlap = {"redemption": mine, "others": [theirs | {"overlap_minutes": 30}]}
    seen = flags.evidence_for(overlap, 7)
    assert seen["others"] == [] and seen["other_districts"] == 1
    assert flags.evidence_for(overlap, 8)["redemption"] == {"other_district": True}
