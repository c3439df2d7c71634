"""A small marketplace around 三好街 in Heping District, built through the real services.

Coordinates are WGS-84 of real places: the elder lives on 三好街; the community station is
about 250 m away, the home-service company about 1 km, the care home near 沈阳故宫 about 3 km.
"""

from datetime import date
from types import SimpleNamespace

import pytest

from eldercare.accounts import FamilyLink
from eldercare.credit_codes import compose_credit_code
from eldercare.timeutil import local_today
from marketplace import catalogue, providers
from marketplace.sample_documents import give_required_documents

ELDER_HOME = (41.7741, 123.4356)  # 三好街, 和平区


def _provider(world, name, type, district, lat, lng, body8, *, approve=True, beds=None):
    admin = world.factory.user(f"admin.{body8.lower()}", roles=["provider_admin"])
    provider = providers.apply_provider(
        applicant=admin,
        name=name,
        credit_code=compose_credit_code("52", district.code, body8),
        type=type,
        district=district,
        address=f"{name} 地址",
        latitude=lat,
        longitude=lng,
        service_districts=[world.heping, world.shenhe],
        contact_name="联系人",
        contact_phone="13800001111",
        bank_account_name=name,
        bank_name="盛京银行",
        bank_account_number="6222000011112222",
        beds_total=beds,
        opening_hours={d: [["08:00", "18:00"]] for d in providers.WEEKDAYS},
    )
    if approve:
        give_required_documents(provider, uploader=admin)
        providers.approve(provider, today=world.today)
    return provider, admin


@pytest.fixture
def market(app_ctx, factory, db_session):
    w = SimpleNamespace(factory=factory, today=local_today())
    w.heping = factory.district("210102", "和平区")
    w.heping.center_latitude, w.heping.center_longitude = 41.7890, 123.4015
    w.shenhe = factory.district("210103", "沈河区")
    w.shenhe.center_latitude, w.shenhe.center_longitude = 41.7967, 123.4526
    w.approver = factory.user("bureau.approver", roles=["bureau_approver"])
    w.officer = factory.user("bureau.officer", roles=["bureau_officer"])

    w.station, w.station_admin = _provider(
        w, "南湖社区养老服务站", "community_station", w.heping, 41.7760, 123.4340, "NH000001"
    )
    w.home, w.home_admin = _provider(
        w, "盛京居家养老服务有限公司", "home_service", w.heping, 41.7820, 123.4300, "HJ000002"
    )
    w.institution, w.institution_admin = _provider(
        w, "沈河区颐养院", "care_institution", w.shenhe, 41.7968, 123.4558, "YY000003", beds=120
    )

    def add(provider, admin, category, title, price_fen, unit="visit", capacity=2, place="home"):
        return catalogue.add_service(
            provider,
            actor=admin,
            category_code=category,
            title=title,
            description="",
            unit=unit,
            price_fen=price_fen,
            capacity_per_slot=capacity,
            districts=[w.heping, w.shenhe],
            delivery_place=place,
        )

    w.meals = add(
        w.station, w.station_admin, "meal_help", "社区助餐（午餐）", 1500, "meal", 20, "provider"
    )
    w.bath = add(w.station, w.station_admin, "bathing", "上门助浴", 8000)
    w.cleaning = add(w.home, w.home_admin, "cleaning", "居家保洁 2 小时", 12000)
    w.haircut = add(w.home, w.home_admin, "hairdressing", "上门理发", 3000)
    w.stay = add(
        w.institution,
        w.institution_admin,
        "long_term_stay",
        "长期入住（双人间）",
        350000,
        "month",
        10,
        "institution",
    )

    w.elder = factory.resident(
        w.heping, birth=date(1944, 3, 12), latitude=ELDER_HOME[0], longitude=ELDER_HOME[1]
    )
    w.elder_user = factory.user("elder.wang", roles=["elder"], resident=w.elder)
    w.son = factory.user("family.zhang", roles=["family_agent"])
    db_session.add(
        FamilyLink(
            agent_user_id=w.son.id,
            resident_id=w.elder.id,
            relationship="child",
            consent_date=date(2025, 6, 1),
        )
    )
    db_session.flush()
    return w
