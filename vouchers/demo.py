"""Demo data of the vouchers domain: a funded pool, this month's vouchers, a printed card and
a redemption, so a newcomer sees a live pool.

Runs after the assessment and marketplace steps (their elders and providers), through the
real services, so the ledger, the audit trail and the family's messages fill as in real use.
Rerunning changes nothing that is already there.
"""

from __future__ import annotations

import sqlalchemy as sa

from eldercare.accounts import User
from eldercare.db import db
from eldercare.demo import district_by_code
from eldercare.residents import District
from eldercare.timeutil import local_today
from marketplace import catalogue
from marketplace.providers import provider_of
from vouchers.issuance import monthly as issuance
from vouchers.models import Redemption, Voucher, VoucherCard
from vouchers.pool import funding as pool
from vouchers.pool import ledger
from vouchers.redemption import cards
from vouchers.redemption import steps as redemption

# The Shenyang pilot's 53.28 million yuan, central and local 9:1 (POLICY.md), in fen.
PILOT_CENTRAL_FEN = 4_795_200_000
PILOT_LOCAL_FEN = 532_800_000
DISTRICT_ALLOCATION_FEN = 200_000_000  # 2 million yuan to each demo district
DEMO_CARD_PIN = "285714"  # the printed card's PIN in the demo (README); not a guessable one
CARD_HOLDER = "elder.wang"


def _user(username: str) -> User | None:
    return db.session.scalar(sa.select(User).where(User.username == username))


def _fund_pool(approver: User) -> None:
    balances = ledger.balances()
    if balances.get("funding:central", 0) == 0:
        pool.top_up(
            PILOT_CENTRAL_FEN, source="central", memo="中央财政试点资金（演示）", actor=approver
        )
        pool.top_up(PILOT_LOCAL_FEN, source="local", memo="市本级配套资金（演示）", actor=approver)
    balances = ledger.balances()
    for district in db.session.scalars(sa.select(District).order_by(District.code)):
        if balances.get(ledger.district_account_code(district.code), 0) == 0:
            pool.allocate(
                district,
                DISTRICT_ALLOCATION_FEN,
                memo=f"{district.name_zh} 演示额度",
                actor=approver,
            )


def _printed_card(holder: User, approver: User) -> None:
    existing = db.session.scalar(
        sa.select(VoucherCard).where(VoucherCard.resident_id == holder.resident_id)
    )
    if existing is None:
        cards.issue_card(holder.resident_id, DEMO_CARD_PIN, actor=approver)


def _a_redemption(holder: User) -> int:
    """elder.wang's lunch at the community station today, paid partly in cash."""
    voucher = db.session.scalar(
        sa.select(Voucher).where(
            Voucher.resident_id == holder.resident_id,
            Voucher.month == local_today().replace(day=1),
        )
    )
    staff = _user("provider.staff")
    if voucher is None or staff is None:
        return 0
    digest = f"demo-{voucher.month:%Y-%m}-lunch"
    if db.session.scalar(sa.select(Redemption.id).where(Redemption.scan_digest == digest)):
        return 0
    meal = next(
        s
        for s in catalogue.services_of(provider_of(staff))
        if s.category_code == "meal_help" and s.active
    )
    r = redemption.check_in(voucher, scan_digest=digest, staff_user=staff, service_id=meal.id)
    redemption.set_price(r, price_fen=meal.price_fen, staff_user=staff)
    redemption.pay_cash(r, staff_user=staff)
    return 1


def build_demo() -> dict:
    approver = _user("bureau.approver")
    holder = _user(CARD_HOLDER)
    if approver is None or district_by_code("210102") is None:
        return {}
    _fund_pool(approver)
    report = issuance.issue_monthly(local_today().replace(day=1))
    if holder is not None and holder.resident_id is not None:
        _printed_card(holder, approver)
        redeemed = _a_redemption(holder)
    else:
        redeemed = 0
    return {
        "vouchers_issued": report.issued,
        "vouchers_left_out": report.left_out_count,
        "redemptions": redeemed,
    }
