"""Issue 9's smaller rules: a new voucher after a revocation for a loss of eligibility (never
after death), a policy version that begins mid-month (ratio and scope of the service day,
the cap of the issue day), overlapping versions refused, and the family told of a reversal."""

from datetime import UTC, datetime, time, timedelta

import pytest
import sqlalchemy as sa

from assessment.eligibility import add_exclusion, end_exclusion
from eldercare import stored_text
from eldercare.db import db
from eldercare.errors import Conflict
from eldercare.notifications import Notification
from eldercare.timeutil import SHANGHAI
from marketplace.models import ServicePrice
from tests.conftest import ON_POSTGRES
from vouchers.errors import OutOfScope
from vouchers.issuance.eligibility_feed import process_eligibility_events
from vouchers.issuance.monthly import issue_for, issue_monthly, month_of, next_month, revoke_for
from vouchers.models import Voucher, VoucherPolicy
from vouchers.pool import ledger
from vouchers.redemption import steps as redemption
from vouchers.views_elder import voucher_in

HOME_CAP = 50_000


def vouchers_of(resident, month):
    return list(
        db.session.scalars(
            sa.select(Voucher)
            .where(Voucher.resident_id == resident.id, Voucher.month == month)
            .order_by(Voucher.id)
        )
    )


def spend(shop, price_fen=1500, now=None):
    shop.counter += 1
    r = redemption.check_in(
        shop.voucher,
        scan_digest=f"rules-{shop.counter}",
        staff_user=shop.caregiver,
        service_id=shop.market.meals.id,
        now=now,
    )
    split = redemption.set_price(r, price_fen=price_fen, staff_user=shop.caregiver, now=now)
    redemption.pay_cash(r, staff_user=shop.caregiver, now=now)
    return r, split


# --- re-issue after a revocation ---------------------------------------------------------


def test_a_voucher_revoked_for_an_exclusion_is_issued_again_when_it_is_lifted(shop, db_session):
    """An exclusion recorded late (it began last month) revokes this month's voucher; when
    it turns out to have ended, the elder gets the month's voucher again, less what the
    revoked one had already paid: never more than one cap in a month."""
    process_eligibility_events()  # the scheme's approval: the voucher is there already
    spend(shop)  # 6 yuan of it paid for a lunch
    current = month_of(shop.today)
    exclusion = add_exclusion(shop.elder, "basic_upgrade_project", current - timedelta(days=5))
    result = process_eligibility_events()
    assert result["revoked"] == [shop.voucher.id]

    end_exclusion(exclusion.id, shop.today - timedelta(days=1))
    result = process_eligibility_events()
    old, new = vouchers_of(shop.elder, current)
    assert (old.status, old.revoked_reason) == ("revoked", "exclusion")
    assert result["issued"] == [new.id] and new.status == "active"
    assert new.face_value_fen == new.balance_fen == HOME_CAP - 600
    assert voucher_in(shop.elder.id, current).id == new.id  # what the elder's page shows
    assert ledger.verify_ledger().ok
    assert process_eligibility_events()["issued"] == []  # and only once


def test_the_monthly_run_issues_again_after_a_lower_result_is_overturned(scheme, db_session):
    current = month_of(scheme.today)
    issue_monthly(next_month(current))
    revoke_for(scheme.elder.id, from_month=next_month(current), reason="assessment_below_threshold")
    again = issue_monthly(next_month(current))
    assert again.issued == 1
    statuses = [v.status for v in vouchers_of(scheme.elder, next_month(current))]
    assert statuses == ["revoked", "active"]


def test_death_is_final_and_a_bureau_decision_needs_the_bureau(scheme, db_session):
    current = month_of(scheme.today)
    issue_monthly(current)
    revoke_for(scheme.elder.id, from_month=current, reason="death")
    process_eligibility_events()
    issue_monthly(current)
    assert issue_for(scheme.elder.id, current, reason="manual").status == "revoked"
    assert [v.status for v in vouchers_of(scheme.elder, current)] == ["revoked"]

    other = scheme.world.factory.resident(scheme.heping, birth=scheme.elder.birth_date)
    scheme.assess(other, "moderate")
    issue_monthly(current)
    revoke_for(other.id, from_month=current, reason="bureau_decision")
    process_eligibility_events()
    issue_monthly(current)
    assert [v.status for v in vouchers_of(other, current)] == ["revoked"]
    manual = issue_for(other.id, current, reason="manual")  # the bureau undoes its decision
    assert manual.status == "active"
    assert [v.status for v in vouchers_of(other, current)] == ["revoked", "active"]


def test_the_database_refuses_two_live_vouchers_for_one_month(shop, db_session):
    def another(status):
        return Voucher(
            resident_id=shop.elder.id,
            month=shop.voucher.month,
            kind="home_community",
            policy_id=shop.voucher.policy_id,
            district_id=shop.voucher.district_id,
            face_value_fen=1,
            balance_fen=0,
            held_fen=0,
            status=status,
        )

    with pytest.raises(sa.exc.IntegrityError), db.session.begin_nested():
        db.session.add(another("expired"))
        db.session.flush()
    with db.session.begin_nested():  # a revoked one beside the live one is allowed
        db.session.add(another("revoked"))
        db.session.flush()
    assert len(vouchers_of(shop.elder, shop.voucher.month)) == 2


# --- a policy version that begins mid-month ----------------------------------------------


def _split_policy(day, **changes):
    """The home voucher's rule changes on ``day`` (policy is data: a version row)."""
    current = db.session.scalar(
        sa.select(VoucherPolicy).where(
            VoucherPolicy.kind == "home_community", VoucherPolicy.effective_to.is_(None)
        )
    )
    current.effective_to = day
    fields = {
        c: getattr(current, c)
        for c in (
            "kind",
            "monthly_cap_fen",
            "ratio_bp",
            "in_scope_categories",
            "eligible_levels",
            "evv_max_distance_m",
            "reversal_window_days",
        )
    }
    version = VoucherPolicy(**(fields | changes), effective_from=day, note="test")
    db.session.add(version)
    db.session.flush()
    return version


def _mid_month(shop):
    """A day D in this month with D-1 in it too, and noon on both; the elder assessed (and
    eligible) since before D-1."""
    today = shop.today
    earlier = today - timedelta(days=10)
    shop.assess(shop.elder, "moderate", assessed_on=earlier, approved_on=earlier, type="immediate")
    db.session.execute(  # the lunch was listed at its price since then too
        sa.update(ServicePrice)
        .where(ServicePrice.service_id == shop.market.meals.id)
        .values(effective_from=datetime.combine(earlier, time(0), tzinfo=UTC))
    )
    day = today if today.day > 1 else today + timedelta(days=1)
    noon = time(12, tzinfo=SHANGHAI)
    before = datetime.combine(day - timedelta(days=1), noon).astimezone(UTC)
    on = datetime.combine(day, noon).astimezone(UTC)
    return day, before, on


def test_a_mid_month_ratio_applies_to_services_from_its_day_and_the_cap_stays(shop, db_session):
    day, before, on = _mid_month(shop)
    _split_policy(day, ratio_bp=5000, monthly_cap_fen=80_000)
    _, old_split = spend(shop, now=before)
    _, new_split = spend(shop, now=on)
    assert (old_split.ratio_bp, old_split.subsidy_fen) == (4000, 600)
    assert (new_split.ratio_bp, new_split.subsidy_fen) == (5000, 750)
    db_session.refresh(shop.voucher)
    assert shop.voucher.face_value_fen == HOME_CAP  # fixed when issued
    assert shop.voucher.balance_fen == HOME_CAP - 600 - 750


def test_a_mid_month_scope_applies_from_its_day(shop, db_session):
    day, before, on = _mid_month(shop)
    current = db.session.scalar(
        sa.select(VoucherPolicy.in_scope_categories).where(
            VoucherPolicy.kind == "home_community", VoucherPolicy.effective_to.is_(None)
        )
    )
    without_meals = " ".join(c for c in current.split() if c != "meal_help")
    _split_policy(day, in_scope_categories=without_meals)
    spend(shop, now=before)  # in scope the day before
    with pytest.raises(OutOfScope):
        spend(shop, now=on)


def test_overlapping_versions_are_refused(scheme, db_session):
    current = db.session.scalar(
        sa.select(VoucherPolicy).where(
            VoucherPolicy.kind == "home_community", VoucherPolicy.effective_to.is_(None)
        )
    )
    overlapping = VoucherPolicy(
        kind="home_community",
        effective_from=current.effective_from + timedelta(days=10),
        monthly_cap_fen=60_000,
        ratio_bp=5000,
        in_scope_categories=current.in_scope_categories,
        eligible_levels=current.eligible_levels,
        evv_max_distance_m=500,
        reversal_window_days=7,
    )
    with pytest.raises(Conflict) as refused, db.session.begin_nested():
        db.session.add(overlapping)
        db.session.flush()
    assert "same day" in str(refused.value.message) or "同一天" in str(refused.value.message)
    assert (
        db.session.scalar(
            sa.select(sa.func.count())
            .select_from(VoucherPolicy)
            .where(VoucherPolicy.kind == "home_community")
        )
        == 1
    )


@pytest.mark.postgres
def test_postgresql_refuses_overlapping_versions_by_itself(scheme, db_session):
    """Written past the code's check (plain SQL), the exclusion constraint still refuses."""
    if not ON_POSTGRES:
        pytest.skip("PostgreSQL-only")
    insert = sa.text(
        "INSERT INTO voucher_policies (kind, effective_from, monthly_cap_fen, ratio_bp, "
        "in_scope_categories, eligible_levels, evv_max_distance_m, reversal_window_days, "
        "created_at) SELECT kind, effective_from + 10, 60000, 5000, in_scope_categories, "
        "eligible_levels, 500, 7, now() FROM voucher_policies "
        "WHERE kind = 'home_community' AND effective_to IS NULL"
    )
    with pytest.raises(sa.exc.IntegrityError, match="ex_voucher_policies_no_overlap"):
        with db.session.begin_nested():
            db.session.execute(insert)


# --- the family told of a reversal ------------------------------------------------------


def test_the_family_is_told_of_a_reversal(shop, db_session):
    r, _ = spend(shop)
    redemption.reverse(r, actor=shop.station_admin, reason="扫错了老人")
    notes = db_session.scalars(
        sa.select(Notification).where(Notification.dedupe_key.like(f"reversal:{r.id}:%"))
    ).all()
    assert {n.recipient_user_id for n in notes} == {shop.son.id, shop.elder_user.id}
    body = notes[0].body
    assert "¥6.00" in body and "南湖社区养老服务站" in body and "扫错了老人" in body
    assert shop.today.isoformat() in body
    assert "given back" in stored_text.render(body, "en")
    assert "退回" in stored_text.render(notes[0].subject, "zh_CN")
