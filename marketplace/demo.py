"""Demo data of the marketplace: providers of every type in several Shenyang districts, with
services of every category, a pending application, and a little booking history.

Everything goes through the real services (certification, catalogue, bookings, reviews), so
the demo also fills the audit trail and the notification outbox as real use would.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta

import sqlalchemy as sa

from eldercare import audit
from eldercare.accounts import User
from eldercare.credit_codes import compose_credit_code
from eldercare.db import db
from eldercare.demo import DEMO_PASSWORD, district_by_code, ensure_account
from eldercare.timeutil import SHANGHAI, local_today
from marketplace import bookings, catalogue, providers, reviews
from marketplace.models import Booking, Provider, ProviderStaff, Service
from marketplace.sample_documents import give_required_documents

WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAYTIME = {day: [["08:00", "18:00"]] for day in WEEK}
ALWAYS = {day: [["00:00", "23:59"]] for day in WEEK}

# (admin username, name, type, district, address, lat, lng, org-code body, hours, beds,
#  [(category, title, unit, price in fen, places per slot, where it is delivered)], approved)
PROVIDERS = [
    (
        "provider.admin",
        "和平区南湖社区养老服务站",
        "community_station",
        "210102",
        "和平区文化路 60 号",
        41.7760,
        123.4340,
        "NH000001",
        DAYTIME,
        None,
        [
            ("meal_help", "社区助餐（午餐两荤一素）", "meal", 1500, 40, "provider"),
            ("bathing", "助浴（站内浴室，护理员协助）", "visit", 6000, 2, "provider"),
            ("day_care", "日间照料（含午餐、午休）", "day", 8000, 15, "provider"),
            ("companionship", "陪伴聊天、读报", "hour", 3000, 3, "home"),
        ],
        True,
    ),
    (
        "provider.shengjing",
        "沈阳盛京居家养老服务有限公司",
        "home_service",
        "210102",
        "和平区南京南街 1 号",
        41.7820,
        123.4300,
        "HJ000002",
        DAYTIME,
        None,
        [
            ("cleaning", "居家保洁（2 小时）", "visit", 12000, 4, "home"),
            ("mobility_help", "助行：陪同外出、上下楼", "hour", 5000, 4, "home"),
            ("emergency_help", "助急：紧急呼叫上门", "visit", 8000, 6, "home"),
            ("medical_help", "助医：陪同就医、取药", "visit", 9000, 4, "home"),
            ("rehab_nursing", "康复护理（上门）", "hour", 15000, 2, "home"),
            ("hairdressing", "上门理发", "visit", 3000, 2, "home"),
            ("home_repair", "居家适老化小修", "visit", 10000, 2, "home"),
        ],
        True,
    ),
    (
        "provider.yikang",
        "沈河区颐康养老院",
        "care_institution",
        "210103",
        "沈河区沈阳路 171 号",
        41.7968,
        123.4558,
        "YK000003",
        ALWAYS,
        120,
        [
            ("long_term_stay", "长期入住（双人间，含餐）", "month", 350000, 10, "institution"),
            ("respite_stay", "短期托养（喘息服务）", "day", 18000, 5, "institution"),
            ("meal_help", "院内助餐（对外开放）", "meal", 1800, 30, "institution"),
        ],
        True,
    ),
    (
        "provider.beiling",
        "皇姑区北陵社区养老服务中心",
        "community_station",
        "210105",
        "皇姑区泰山路 12 号",
        41.8255,
        123.4255,
        "BL000004",
        DAYTIME,
        None,
        [
            ("meal_help", "社区食堂助餐", "meal", 1200, 60, "provider"),
            ("day_care", "日间托养", "day", 7000, 20, "provider"),
            ("bathing", "助浴", "visit", 5500, 2, "provider"),
        ],
        True,
    ),
    (
        "provider.kangle",
        "铁西区康乐护理院",
        "care_institution",
        "210106",
        "铁西区北二路 88 号",
        41.8000,
        123.3480,
        "KL000005",
        ALWAYS,
        200,
        [
            ("long_term_stay", "长期入住（护理型床位）", "month", 420000, 20, "institution"),
            ("respite_stay", "短期托养", "day", 20000, 6, "institution"),
            ("rehab_nursing", "院内康复训练", "hour", 12000, 4, "institution"),
        ],
        True,
    ),
    (
        "provider.leling",
        "浑南区乐龄居家服务有限公司",
        "home_service",
        "210112",
        "浑南区创新路 200 号",
        41.7150,
        123.4500,
        "LL000006",
        DAYTIME,
        None,
        [
            ("cleaning", "居家保洁", "visit", 10000, 4, "home"),
            ("meal_help", "送餐上门", "meal", 2000, 30, "home"),
        ],
        True,
    ),
    (
        "provider.beishichang",
        "和平区北市场社区养老服务站",
        "community_station",
        "210102",
        "和平区北市场街 9 号",
        41.7930,
        123.4180,
        "BC000008",
        DAYTIME,
        None,
        [
            ("meal_help", "老年餐桌（午餐）", "meal", 1300, 50, "provider"),
            ("day_care", "日间照料", "day", 7500, 15, "provider"),
            ("emergency_help", "助急：一键呼叫响应", "visit", 5000, 4, "home"),
        ],
        True,
    ),
    (
        "provider.ankang",
        "大东区安康养老服务站",
        "community_station",
        "210104",
        "大东区小什字街 20 号",
        41.8050,
        123.4700,
        "AK000007",
        DAYTIME,
        None,
        [],
        False,
    ),
]


def _account(username: str) -> User | None:
    return db.session.scalar(sa.select(User).where(User.username == username))


def _ensure_provider(number: int, spec, today) -> Provider:
    (
        username,
        name,
        type,
        district_code,
        address,
        lat,
        lng,
        body,
        hours,
        beds,
        services,
        approved,
    ) = spec
    district = district_by_code(district_code)
    code = compose_credit_code("52", district_code, body)
    provider = db.session.scalar(sa.select(Provider).where(Provider.credit_code == code))
    if provider is not None:
        if approved:  # a demo built before certification needed them gets them now
            give_required_documents(provider, uploader=_account(username))
        return provider
    admin = ensure_account(username, f"{name} 管理员", ["provider_admin"])
    db.session.flush()
    served = sorted(
        {district, district_by_code("210102"), district_by_code("210103")}, key=lambda d: d.code
    )
    provider = providers.apply_provider(
        applicant=admin,
        name=name,
        credit_code=code,
        type=type,
        district=district,
        address=address,
        latitude=lat,
        longitude=lng,
        service_districts=served,
        contact_name="服务台",
        contact_phone="024-23456789",
        bank_account_name=name,
        bank_name="盛京银行沈阳分行",
        bank_account_number=f"62148300{number:08d}",
        opening_hours=hours,
        beds_total=beds,
    )
    if not approved:
        return provider  # waits in the bureau's certification queue
    # Certification needs the documents the rules name (issue 14 item 5): generated samples,
    # stored and audited as uploads are.
    give_required_documents(provider, uploader=admin)
    providers.approve(provider, today=today, approver=_account("bureau.approver"))
    for category, title, unit, price, places, where in services:
        catalogue.add_service(
            provider,
            actor=admin,
            category_code=category,
            title=title,
            description="",
            unit=unit,
            price_fen=price,
            capacity_per_slot=places,
            districts=served,
            delivery_place=where,
        )
    return provider


def _ensure_staff(provider: Provider, today) -> None:
    staff_user = db.session.scalar(sa.select(User).where(User.username == "provider.staff"))
    if (
        db.session.scalar(sa.select(ProviderStaff.id).where(ProviderStaff.user_id == staff_user.id))
        is not None
    ):
        return
    staff = ProviderStaff(
        provider_id=provider.id,
        user_id=staff_user.id,
        caregiver_certificate_number="YLHLY-2101-0042",
        certificate_valid_until=today + timedelta(days=700),
    )
    db.session.add(staff)
    audit.record(
        "provider_staff.invite",
        staff,
        district_id=provider.district_id,
        after={"username": staff_user.username, "certificate": "YLHLY-2101-0042"},
    )


def _ensure_history(station: Provider, today) -> int:
    """elder.wang's meal tomorrow (accepted) and a bath last week (done, rated 5)."""
    wang = db.session.scalar(sa.select(User).where(User.username == "elder.wang"))
    admin = db.session.scalar(sa.select(User).where(User.username == "provider.admin"))
    if (
        db.session.scalar(sa.select(Booking.id).where(Booking.resident_id == wang.resident_id))
        is not None
    ):
        return 0
    services = {
        s.category_code: s
        for s in db.session.scalars(sa.select(Service).where(Service.provider_id == station.id))
    }
    week_ago = datetime.combine(today - timedelta(days=7), time(9), tzinfo=SHANGHAI)
    bath = bookings.book(
        services["bathing"],
        resident=wang.resident,
        booked_by=wang,
        slot_start=week_ago + timedelta(hours=1),
        now=week_ago,
    )
    bookings.accept(bath, admin, now=week_ago + timedelta(minutes=30))
    bookings.complete(bath, admin, now=week_ago + timedelta(hours=2))
    reviews.review(bath, by=wang, rating=5, text="护理员很耐心，洗得很干净。")
    tomorrow = datetime.combine(today + timedelta(days=1), time(11, 30), tzinfo=SHANGHAI)
    meal = bookings.book(
        services["meal_help"], resident=wang.resident, booked_by=wang, slot_start=tomorrow
    )
    bookings.accept(meal, admin)
    return 2


def build_demo() -> dict:
    today = local_today()
    made = [_ensure_provider(n, spec, today) for n, spec in enumerate(PROVIDERS, start=1)]
    db.session.flush()
    _ensure_staff(made[0], today)
    booked = _ensure_history(made[0], today)
    return {
        "providers": len(made),
        "bookings": booked,
        "accounts": [
            {"username": spec[0], "password": DEMO_PASSWORD, "roles": "provider_admin"}
            for spec in PROVIDERS[1:]
        ],
    }
