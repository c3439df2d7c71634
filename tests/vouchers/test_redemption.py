"""Redemption at a provider: check-in refusals, the split, holds, capture, release, reversal."""

from datetime import timedelta

import pytest
import sqlalchemy as sa

from assessment.agencies import add_assessor
from assessment.eligibility import add_exclusion, eligibility_on, record_death
from eldercare import stored_text
from eldercare.errors import InvalidInput, PermissionDenied
from eldercare.notifications import Notification
from eldercare.timeutil import now_utc
from marketplace import providers
from marketplace.errors import ProviderNotCertified
from tests.marketplace.conftest import ELDER_HOME
from vouchers.errors import (
    ElderNotEligible,
    InsufficientBalance,
    OutOfScope,
    RedemptionStateError,
    ReversalWindowClosed,
    StaffNotQualified,
    TooFarAway,
    VoucherNotUsable,
)
from vouchers.issuance import monthly as issuance
from vouchers.models import Redemption, Voucher
from vouchers.pool import ledger
from vouchers.redemption import steps as redemption

NEAR_HOME = (ELDER_HOME[0] + 0.001, ELDER_HOME[1])  # about 110 m north of the elder's door
FAR = (ELDER_HOME[0] + 0.01, ELDER_HOME[1])  # about 1.1 km


def scan(s, user=None, *, service=None, location=None, **kwargs):
    s.counter += 1
    lat, lng = location if location else (None, None)
    return redemption.check_in(
        s.voucher,
        scan_digest=f"scan-{s.counter}",
        staff_user=user or s.caregiver,
        service_id=(service or s.market.meals).id,
        latitude=lat,
        longitude=lng,
        **kwargs,
    )


def books():
    return ledger.balances(), ledger.verify_ledger()


def state(session):
    return (
        session.scalar(sa.select(sa.func.count()).select_from(Redemption)),
        ledger.balances(),
        session.execute(sa.select(Voucher.id, Voucher.balance_fen, Voucher.held_fen)).all(),
    )


def test_cash_meal_redeems_and_tells_the_family(shop, db_session):
    r = scan(shop)
    split = redemption.set_price(r, price_fen=1500, staff_user=shop.caregiver)
    assert (split.subsidy_fen, split.copay_fen) == (600, 900)
    redemption.pay_cash(r, staff_user=shop.caregiver)
    assert r.status == "redeemed" and r.payment_method == "cash"
    db_session.refresh(shop.voucher)
    assert (shop.voucher.balance_fen, shop.voucher.held_fen) == (49_400, 0)
    balances, check = books()
    assert check.ok
    assert balances["redeemed:unsettled"] == 600
    assert balances["vouchers:outstanding"] == 49_400
    notes = db_session.scalars(
        sa.select(Notification).where(Notification.dedupe_key.like(f"redemption:{r.id}:%"))
    ).all()
    assert {n.recipient_user_id for n in notes} == {shop.son.id, shop.elder_user.id}
    assert "¥6.00" in notes[0].body and "南湖社区养老服务站" in notes[0].body
    assert "社区助餐" in notes[0].body


def test_insurance_pays_first_and_the_split_is_recorded(shop):
    r = scan(shop)
    redemption.set_price(r, price_fen=1500, insurance_fen=1000, staff_user=shop.caregiver)
    assert (r.price_fen, r.insurance_fen, r.subsidy_fen, r.copay_fen) == (1500, 1000, 200, 300)


def test_the_same_scan_twice_is_one_redemption_and_another_phone_is_refused(shop):
    first = redemption.check_in(
        shop.voucher, scan_digest="same", staff_user=shop.caregiver, service_id=shop.market.meals.id
    )
    again = redemption.check_in(
        shop.voucher, scan_digest="same", staff_user=shop.caregiver, service_id=shop.market.meals.id
    )
    assert again.id == first.id
    with pytest.raises(RedemptionStateError):
        redemption.check_in(
            shop.voucher,
            scan_digest="same",
            staff_user=shop.station_admin,
            service_id=shop.market.meals.id,
        )


def test_paying_twice_redeems_once(shop):
    r = scan(shop)
    redemption.set_price(r, price_fen=1500, staff_user=shop.caregiver)
    redemption.pay_cash(r, staff_user=shop.caregiver)
    redemption.pay_cash(r, staff_user=shop.caregiver)
    assert ledger.balances()["redeemed:unsettled"] == 600
    assert redemption.capture(r) is False


def _refused(session, error, action):
    before = state(session)
    with pytest.raises(error), session.begin_nested():
        action()
    assert state(session) == before


def test_refusals_change_nothing(shop, db_session):
    s, m = shop, shop.market
    # The bath is a home service that needs a caregiver certificate: the admin has none.
    _refused(
        db_session,
        StaffNotQualified,
        lambda: scan(s, s.station_admin, service=m.bath, location=NEAR_HOME),
    )
    # A home service checked in 1.1 km from the elder's home, or with no location at all.
    _refused(db_session, TooFarAway, lambda: scan(s, service=m.bath, location=FAR))
    _refused(db_session, InvalidInput, lambda: scan(s, service=m.bath))
    # Hairdressing is not in the voucher's scope.
    _refused(
        db_session, OutOfScope, lambda: scan(s, m.home_admin, service=m.haircut, location=NEAR_HOME)
    )
    # Another provider's service cannot be redeemed by this staff member.
    _refused(db_session, Exception, lambda: scan(s, service=m.cleaning, location=NEAR_HOME))


def test_a_home_service_near_the_home_is_accepted_with_its_distance(shop):
    r = scan(shop, service=shop.market.bath, location=NEAR_HOME)
    assert 100 <= r.check_in_distance_m <= 120


def test_suspended_provider_is_refused(shop, db_session):
    providers.suspend(shop.market.station, "投诉调查")
    _refused(db_session, ProviderNotCertified, lambda: scan(shop))


def test_voucher_of_another_month_revoked_or_used_up_is_refused(shop, db_session):
    voucher = shop.voucher
    _refused(db_session, VoucherNotUsable, lambda: scan(shop, now=now_utc() + timedelta(days=40)))
    voucher.status = "revoked"
    _refused(db_session, VoucherNotUsable, lambda: scan(shop))
    voucher.status = "active"
    voucher.balance_fen = 0
    _refused(db_session, VoucherNotUsable, lambda: scan(shop))


def test_elder_no_longer_eligible_is_refused(shop, db_session):
    record_death(shop.elder, shop.today - timedelta(days=1), today=shop.today)
    _refused(db_session, ElderNotEligible, lambda: scan(shop))


def test_bad_prices_are_refused_without_change(shop, db_session):
    r = scan(shop)
    for price, insurance in [(0, 0), (-100, 0), (1500, 1600), (1501, 0), ("15", 0), (15.5, 0)]:
        _refused(
            db_session,
            InvalidInput,
            lambda p=price, i=insurance: redemption.set_price(
                r, price_fen=p, insurance_fen=i, staff_user=shop.caregiver
            ),
        )
    _refused(
        db_session,
        InvalidInput,  # insurance pays it all: nothing for the voucher
        lambda: redemption.set_price(
            r, price_fen=1500, insurance_fen=1500, staff_user=shop.caregiver
        ),
    )
    _refused(
        db_session,
        PermissionDenied,  # another provider's staff
        lambda: redemption.set_price(r, price_fen=1500, staff_user=shop.market.home_admin),
    )


def test_the_subsidy_stops_at_what_is_left(shop, db_session):
    shop.voucher.balance_fen = 250
    db_session.flush()
    r = scan(shop)
    redemption.set_price(r, price_fen=1500, staff_user=shop.caregiver)
    assert (r.subsidy_fen, r.copay_fen) == (250, 1250)


def test_release_returns_the_hold_and_a_retry_can_pay_cash(shop, db_session):
    r = scan(shop)
    redemption.set_price(r, price_fen=1500, staff_user=shop.caregiver)
    redemption.hold(r, method="card")
    db_session.refresh(shop.voucher)
    assert (shop.voucher.balance_fen, shop.voucher.held_fen) == (49_400, 600)
    assert ledger.balances()["vouchers:held"] == 600
    assert redemption.release(r, reason="card declined", retry=True)
    assert r.status == "checked_in"
    db_session.refresh(shop.voucher)
    assert (shop.voucher.balance_fen, shop.voucher.held_fen) == (50_000, 0)
    redemption.pay_cash(r, staff_user=shop.caregiver)
    assert r.status == "redeemed"
    assert ledger.verify_ledger().ok
    assert redemption.release(r, reason="late webhook") is False  # settled: nothing to do


def test_a_hold_bigger_than_the_balance_is_refused(shop, db_session):
    first, second = scan(shop), scan(shop)
    shop.voucher.balance_fen = 700
    db_session.flush()
    redemption.set_price(first, price_fen=1500, staff_user=shop.caregiver)
    redemption.set_price(second, price_fen=1500, staff_user=shop.caregiver)
    redemption.hold(first, method="card")
    _refused(db_session, InsufficientBalance, lambda: redemption.hold(second, method="cash"))


def test_stale_holds_are_found_after_fifteen_minutes(shop):
    r = scan(shop)
    redemption.set_price(r, price_fen=1500, staff_user=shop.caregiver)
    redemption.hold(r, method="card")
    assert redemption.stale_holds(now_utc() + timedelta(minutes=14)) == []
    assert redemption.stale_holds(now_utc() + timedelta(minutes=16)) == [r]


def test_reversal_in_the_same_month_returns_the_subsidy_to_the_voucher(shop, db_session):
    r = scan(shop)
    redemption.set_price(r, price_fen=1500, staff_user=shop.caregiver)
    redemption.pay_cash(r, staff_user=shop.caregiver)
    _refused(
        db_session,
        InvalidInput,
        lambda: redemption.reverse(r, actor=shop.station_admin, reason=" "),
    )
    _refused(
        db_session, PermissionDenied, lambda: redemption.reverse(r, actor=shop.son, reason="错误")
    )
    redemption.reverse(r, actor=shop.station_admin, reason="扫错了老人")
    assert r.status == "reversed"
    db_session.refresh(shop.voucher)
    assert shop.voucher.balance_fen == 50_000
    assert ledger.balances()["redeemed:unsettled"] == 0
    assert ledger.verify_ledger().ok
    with pytest.raises(RedemptionStateError):
        redemption.reverse(r, actor=shop.station_admin, reason="again")


def test_reversal_after_the_window_is_refused_and_later_months_go_to_the_district(shop, db_session):
    r = scan(shop)
    redemption.set_price(r, price_fen=1500, staff_user=shop.caregiver)
    redemption.pay_cash(r, staff_user=shop.caregiver)
    late = now_utc() + timedelta(days=8)
    _refused(
        db_session,
        ReversalWindowClosed,
        # The provider: only the bureau may reverse after the window (issue 12).
        lambda: redemption.reverse(r, actor=shop.caregiver, reason="x", now=late),
    )
    # The month has ended in the meantime: expiry closed the voucher (its balance went back).
    issuance._close(
        shop.voucher,
        status="expired",
        entry_kind="expire",
        memo="expiry",
        actor_id=None,
        audit_after={},
    )
    district = ledger.balances()["district:210102:available"]
    redemption.reverse(r, actor=shop.approver, reason="核查不实", now=now_utc() + timedelta(days=6))
    assert ledger.balances()["district:210102:available"] == district + 600
    assert ledger.verify_ledger().ok


def test_pricing_after_another_phone_spent_the_voucher_says_it_is_used_up(shop, db_session):
    first, second = scan(shop), scan(shop)
    shop.voucher.balance_fen = 600
    db_session.flush()
    redemption.set_price(first, price_fen=1500, staff_user=shop.caregiver)
    redemption.pay_cash(first, staff_user=shop.caregiver)
    _refused(
        db_session,
        VoucherNotUsable,
        lambda: redemption.set_price(second, price_fen=1500, staff_user=shop.caregiver),
    )


def test_a_payment_in_flight_when_the_elder_dies_sends_its_money_to_the_district(shop, db_session):
    from vouchers.issuance.monthly import revoke_for

    r = scan(shop)
    redemption.set_price(r, price_fen=1500, staff_user=shop.caregiver)
    redemption.hold(r, method="card")
    district = ledger.balances()["district:210102:available"]
    revoke_for(shop.elder.id, from_month=shop.voucher.month, reason="death")
    db_session.refresh(shop.voucher)
    assert (shop.voucher.status, shop.voucher.balance_fen, shop.voucher.held_fen) == (
        "revoked",
        0,
        600,
    )
    assert redemption.release(r, reason="card declined", retry=True)
    db_session.refresh(shop.voucher)
    assert (shop.voucher.balance_fen, shop.voucher.held_fen) == (0, 0)
    assert ledger.balances()["district:210102:available"] == district + 50_000
    # Nothing more can be held on it.
    _refused(db_session, VoucherNotUsable, lambda: redemption.hold(r, method="cash"))
    assert ledger.verify_ledger().ok


def test_a_provider_suspended_after_the_check_in_cannot_be_paid(shop, db_session):
    r = scan(shop)
    redemption.set_price(r, price_fen=1500, staff_user=shop.caregiver)
    providers.suspend(shop.market.station, "投诉调查")
    _refused(
        db_session, ProviderNotCertified, lambda: redemption.pay_cash(r, staff_user=shop.caregiver)
    )


def test_only_todays_accepted_booking_can_be_checked_in(shop, db_session):
    from datetime import datetime, time

    from eldercare.timeutil import SHANGHAI
    from marketplace import bookings

    start = datetime.combine(shop.today + timedelta(days=7), time(11), tzinfo=SHANGHAI)
    booking = bookings.book(
        shop.market.meals, resident=shop.elder, booked_by=shop.elder_user, slot_start=start
    )
    bookings.accept(booking, shop.station_admin)
    _refused(
        db_session,
        InvalidInput,
        lambda: redemption.check_in(
            shop.voucher,
            scan_digest="next-week",
            staff_user=shop.caregiver,
            booking_id=booking.id,
        ),
    )


# --- issue 10 item 1: only death voids the current month's voucher ------------------------


def _price_and_pay(s, r):
    redemption.set_price(r, price_fen=1500, staff_user=s.caregiver)
    redemption.pay_cash(r, staff_user=s.caregiver)
    return r


def test_a_reassessment_below_moderate_mid_month_leaves_this_months_voucher_usable(shop):
    """POLICY: vouchers stop from the next month; the current one still redeems."""
    w = shop.world
    second = add_assessor(
        w.other,
        w.factory.user("assessor-zheng", roles=["assessor"]),
        name="郑丽",
        certificate_number="C-004",
        valid_until=shop.today + timedelta(days=365),
    )
    shop.assess(
        shop.elder,
        "mild",
        type="reassessment",
        disputed=shop.assessment,
        agency=w.other,
        assessors=(w.wu, second),
    )
    assert not eligibility_on(shop.elder.id, shop.today).eligible
    r = _price_and_pay(shop, scan(shop))
    assert r.status == "redeemed" and r.subsidy_fen == 600


def test_a_new_exclusion_mid_month_leaves_this_months_voucher_usable(shop):
    add_exclusion(shop.elder, "extremely_poor_support", shop.today)
    assert not eligibility_on(shop.elder.id, shop.today).eligible
    r = _price_and_pay(shop, scan(shop))
    assert r.status == "redeemed"


def test_an_exclusion_after_the_check_in_does_not_stop_the_payment(shop):
    r = scan(shop)
    redemption.set_price(r, price_fen=1500, staff_user=shop.caregiver)
    add_exclusion(shop.elder, "extremely_poor_support", shop.today)
    redemption.pay_cash(r, staff_user=shop.caregiver)
    assert r.status == "redeemed"


def test_a_death_after_the_check_in_stops_the_payment(shop, db_session):
    """Before the feed has revoked the voucher (it runs every minute), the death alone
    refuses the payment."""
    r = scan(shop)
    redemption.set_price(r, price_fen=1500, staff_user=shop.caregiver)
    record_death(shop.elder, shop.today, today=shop.today)
    _refused(
        db_session, ElderNotEligible, lambda: redemption.pay_cash(r, staff_user=shop.caregiver)
    )
    assert shop.voucher.status == "active"  # not yet revoked: the check is the death itself


# --- issue 10 item 12: a quantity of units -------------------------------------------------


def test_ten_meals_are_priced_at_ten_times_the_listed_price(shop, db_session):
    r = scan(shop)
    # One meal's price cap no longer holds for ten meals; eleven meals' price is too much.
    _refused(
        db_session,
        InvalidInput,
        lambda: redemption.set_price(r, price_fen=15_001, quantity=10, staff_user=shop.caregiver),
    )
    split = redemption.set_price(r, price_fen=15_000, quantity=10, staff_user=shop.caregiver)
    assert (split.quantity, split.subsidy_fen, split.copay_fen) == (10, 6000, 9000)
    redemption.pay_cash(r, staff_user=shop.caregiver)
    assert (r.status, r.quantity, r.price_fen, r.subsidy_fen) == ("redeemed", 10, 15_000, 6000)
    notice = db_session.scalars(sa.select(Notification).order_by(Notification.id)).all()[-1]
    assert "10 ×" in stored_text.render(notice.body, "en")


def test_the_quantity_defaults_to_one_and_bad_quantities_change_nothing(shop, db_session):
    r = scan(shop)
    for bad in (0, -3, 101, 2.5, "3", None):
        _refused(
            db_session,
            InvalidInput,
            lambda q=bad: redemption.set_price(
                r, price_fen=1500, quantity=q, staff_user=shop.caregiver
            ),
        )
    assert r.quantity is None and r.price_fen is None
    redemption.set_price(r, price_fen=1500, staff_user=shop.caregiver)
    assert r.quantity == 1
