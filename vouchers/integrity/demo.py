"""Demo data of the anomaly rules: a few redemptions of a past month that trip rules, and a
bureau officer's decisions on two of them.

On the 27th of the month (``seed``'s caller passes the month the demo settles): the 北市场
station's caregiver (``beishichang.staff``) answers the third elder's emergency call at home
in three minutes (implausible visit length), then visits the second and the third elder at
home with the visits overlapping by half an hour (one caregiver in two homes at once), and
the first elder has four lunches that day at the station (more than three a day). Each is
booked the day before and redeemed at the booking (the demo's catalogue is listed only from
the day the demo is built, so a past day's price is the booking's), through the real
services: the rules judge them at capture. Then ``bureau.officer`` clears the short visit
(the family confirmed it) and rejects one of the overlapping visits (reversed). The
settlement run that follows leaves the redemptions still held out of the month's statements.

Rerunning changes nothing: each redemption is found by its scan digest, each decision by its
flag's status.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import sqlalchemy as sa

from eldercare.accounts import User
from eldercare.db import db
from eldercare.residents import Resident
from eldercare.timeutil import SHANGHAI
from marketplace import bookings, catalogue
from marketplace.providers import provider_of
from vouchers.integrity import flags
from vouchers.integrity.models import RedemptionFlag
from vouchers.models import Redemption, Voucher
from vouchers.redemption import steps as redemption

DAY = 27
STAFF = "beishichang.staff"  # a caregiver of a station that visits homes (助急)
CLEAR_REASON = "已电话回访家属：当天护理员仅上门送药，服务时间短属实。"
REJECT_REASON = "同一护理员两次上门时间重叠，无法同时在两处服务，予以核减。"


def _user(username: str) -> User | None:
    return db.session.scalar(sa.select(User).where(User.username == username))


def _service(provider, category: str):
    return next(
        (s for s in catalogue.services_of(provider) if s.category_code == category and s.active),
        None,
    )


def _visit(voucher, staff, service, elder_user, start, minutes, tag) -> Redemption | None:
    digest = f"anomaly-demo-{voucher.month:%Y-%m}-{tag}"
    found = db.session.scalar(sa.select(Redemption).where(Redemption.scan_digest == digest))
    if found is not None:
        return found
    resident = db.session.get(Resident, voucher.resident_id)
    booking = bookings.book(
        service,
        resident=resident,
        booked_by=elder_user,
        slot_start=start,
        now=start - timedelta(hours=20),
    )
    bookings.accept(booking, staff, now=start - timedelta(hours=19))
    home = service.delivery_place == "home"
    r = redemption.check_in(
        voucher,
        scan_digest=digest,
        staff_user=staff,
        booking_id=booking.id,
        latitude=resident.latitude if home else None,
        longitude=resident.longitude if home else None,
        now=start,
    )
    end = start + timedelta(minutes=minutes)
    if home:
        redemption.check_out(r, staff_user=staff, now=end)
    redemption.set_price(r, price_fen=booking.price_fen, staff_user=staff, now=end)
    redemption.pay_cash(r, staff_user=staff, now=end)
    return r


def _decide(r: Redemption | None, rule: str, officer: User, *, reject: bool) -> bool:
    if r is None:
        return False
    flag = db.session.scalar(
        sa.select(RedemptionFlag).where(
            RedemptionFlag.redemption_id == r.id, RedemptionFlag.rule == rule
        )
    )
    if flag is None or flag.status != "open":
        return False
    if reject:
        flags.reject(flag, reason=REJECT_REASON, actor=officer)
    else:
        flags.clear(flag, reason=CLEAR_REASON, actor=officer)
    return True


def seed(month: date, residents: list[int], officer: User) -> dict:
    """The anomalies of ``month`` (a past month whose vouchers the caller issued) and the
    officer's two decisions; what was made, for the demo's report."""
    staff = _user(STAFF)
    if staff is None or len(residents) < 3:
        return {}
    station = provider_of(staff)
    companion, lunch = _service(station, "emergency_help"), _service(station, "meal_help")
    vouchers = [
        db.session.scalar(
            sa.select(Voucher).where(Voucher.resident_id == rid, Voucher.month == month)
        )
        for rid in residents[:3]
    ]
    elders = [
        db.session.scalar(sa.select(User).where(User.resident_id == rid)) for rid in residents[:3]
    ]
    if companion is None or lunch is None or None in vouchers or None in elders:
        return {}
    day = month.replace(day=DAY)

    def at(hour: int, minute: int = 0) -> datetime:
        return datetime.combine(day, time(hour, minute), tzinfo=SHANGHAI)

    short = _visit(vouchers[2], staff, companion, elders[2], at(9), 3, "short-visit")
    _visit(vouchers[1], staff, companion, elders[1], at(14), 60, "overlap-1")
    # Flagged at its capture; once it is rejected (reversed) the first visit overlaps nothing.
    second = _visit(vouchers[2], staff, companion, elders[2], at(14, 30), 60, "overlap-2")
    for n, hour in enumerate((8, 11, 12, 17), 1):
        _visit(vouchers[0], staff, lunch, elders[0], at(hour), 30, f"lunch-{n}")
    decided = _decide(short, "visit_length", officer, reject=False)
    decided += _decide(second, "staff_overlap", officer, reject=True)
    held = db.session.scalar(
        sa.select(sa.func.count(sa.distinct(RedemptionFlag.redemption_id)))
        .join(Redemption, Redemption.id == RedemptionFlag.redemption_id)
        .where(
            RedemptionFlag.status == "open",
            Redemption.scan_digest.like(f"anomaly-demo-{month:%Y-%m}-%"),
        )
    )
    return {"anomaly_month": f"{month:%Y-%m}", "anomaly_decisions": decided, "anomaly_held": held}
