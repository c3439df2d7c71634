"""What vouchers tell the marketplace and assessment through their ports."""

from datetime import timedelta

from assessment.conflicts import last_served
from marketplace.credit import fraud_flags
from marketplace.voucher_scope import accepts_vouchers
from tests.vouchers.helpers import give_voucher
from vouchers.pool.policy import add_version, policy_on
from vouchers.redemption import steps as redemption


def test_the_voucher_scope_is_the_policies_in_force(scheme, db_session):
    m = scheme.market
    assert accepts_vouchers(m.meals.category, scheme.today)
    assert accepts_vouchers(m.stay.category, scheme.today)  # institutional kind
    assert not accepts_vouchers(m.haircut.category, scheme.today)
    current = policy_on("home_community", scheme.today)
    later = scheme.today + timedelta(days=40)
    add_version(
        "home_community",
        effective_from=later,
        monthly_cap_fen=current.monthly_cap_fen,
        ratio_bp=5000,
        in_scope_categories=[*current.category_set, "hairdressing"],
        eligible_levels=list(current.level_set),
        evv_max_distance_m=500,
        reversal_window_days=7,
        note="试点扩围",
        actor=scheme.approver,
        known_categories={*current.category_set, "hairdressing"},
    )
    assert accepts_vouchers(m.haircut.category, later)
    assert not accepts_vouchers(m.haircut.category, scheme.today)


def _redeem(s, digest):
    r = redemption.check_in(
        s.voucher, scan_digest=digest, staff_user=s.caregiver, service_id=s.market.meals.id
    )
    redemption.set_price(r, price_fen=1500, staff_user=s.caregiver)
    redemption.pay_cash(r, staff_user=s.caregiver)
    return r


def test_bureau_reversals_are_fraud_flags_and_provider_ones_are_not(shop):
    station = shop.market.station
    since = shop.today - timedelta(days=1)
    assert fraud_flags(station.id, since) == 0
    redemption.reverse(_redeem(shop, "a"), actor=shop.station_admin, reason="扫错")
    assert fraud_flags(station.id, since) == 0
    redemption.reverse(_redeem(shop, "b"), actor=shop.approver, reason="核查无此服务")
    assert fraud_flags(station.id, since) == 1


def test_a_redemption_is_service_history_for_the_conflict_rule(shop):
    station = shop.market.station
    since = shop.today - timedelta(days=30)
    assert last_served(station.credit_code, shop.elder.id, since) is None
    _redeem(shop, "c")
    assert last_served(station.credit_code, shop.elder.id, since) == shop.today
    assert last_served(station.credit_code, shop.elder.id, shop.today + timedelta(days=1)) is None


def test_give_voucher_helper_reserves_from_the_district(scheme):
    from vouchers.pool import ledger

    before = ledger.balances()["district:210102:available"]
    give_voucher(scheme.elder, scheme.today)
    assert ledger.balances()["district:210102:available"] == before - 50_000


def test_the_marketplace_learns_the_kind_an_elder_pays_with(scheme, db_session):
    from marketplace.voucher_scope import kind_label, kinds_held, scope_on

    today = scheme.today
    # No voucher yet this month: the kind the month's voucher will have (the default).
    assert kinds_held([scheme.elder.id], today) == {"home_community"}
    give_voucher(scheme.elder, today, kind="institutional")
    assert kinds_held([scheme.elder.id], today) == {"institutional"}
    assert kind_label("institutional") == "机构养老"
    scope = scope_on(today)
    assert "day_care" in scope["institutional"] and "day_care" not in scope["home_community"]
