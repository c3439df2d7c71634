"""Demo data of the assessment domain: two agencies, their assessors, elders at every level.

Everything goes through the real service functions, so the demo also shows the audit trail
and the eligibility events a real assessment leaves behind.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta

import sqlalchemy as sa

from assessment import lifecycle
from assessment.agencies import add_assessor, create_agency
from assessment.instrument import instrument
from assessment.models import Agency, AgencyAdmin, Assessment, Assessor
from eldercare.accounts import User
from eldercare.db import db
from eldercare.demo import DEMO_PASSWORD, district_by_code, ensure_account, ensure_resident
from eldercare.residents import compose_resident_id
from eldercare.timeutil import SHANGHAI, local_today

AGENCIES = [
    ("LN-PG-2025-001", "沈阳康评老年人能力评估中心", "210102"),
    ("LN-PG-2025-002", "盛京第三方评估有限公司", "210103"),
]
# (username, display name, certificate, agency licence)
ASSESSORS = [
    ("assessor.li", "评估员 李芳", "GBT42195-2025-0101", "LN-PG-2025-001"),
    ("assessor.zhao", "评估员 赵敏", "GBT42195-2025-0102", "LN-PG-2025-001"),
    ("assessor.wu", "评估员 吴刚", "GBT42195-2025-0201", "LN-PG-2025-002"),
    ("assessor.zheng", "评估员 郑洁", "GBT42195-2025-0202", "LN-PG-2025-002"),
]
# Elders assessed at every level besides elder.wang's 王秀英 (moderate, from the shell demo):
# (birth, seq, name, district, street, address, lat, lng, total, adjustments)
ELDERS = [
    (
        date(1936, 11, 2),
        141,
        "刘桂兰",
        "210102",
        "北市场街道",
        "北市场 8 号 1-1-2",
        41.8002,
        123.4129,
        32,
        {"diagnoses": ["F00"]},
    ),  # severe by total, dementia
    (
        date(1939, 6, 18),
        153,
        "陈建国",
        "210103",
        "五里河街道",
        "青年大街 210 号 5-3-1",
        41.7638,
        123.4372,
        38,
        {},
    ),
    (
        date(1948, 1, 25),
        162,
        "赵淑珍",
        "210103",
        "大西街道",
        "中街路 56 号 2-1-4",
        41.7984,
        123.4470,
        72,
        {},
    ),
    (
        date(1950, 9, 9),
        171,
        "孙德明",
        "210102",
        "太原街街道",
        "太原北街 33 号",
        41.7990,
        123.4030,
        90,
        {},
    ),
]
PENDING = (
    date(1942, 4, 4),
    183,
    "周玉兰",
    "210102",
    "南湖街道",
    "文化路 77 号 4-2-2",
    41.7705,
    123.4401,
)


def items_with_total(total: int) -> dict[str, int]:
    """A complete, valid item set whose scores add up to ``total`` (filled greedily)."""
    if not 0 <= total <= instrument().max_total:
        raise ValueError(f"no item set adds up to {total}")
    items, remaining = {}, total
    for code, item in instrument().items.items():
        items[code] = min(item.max, remaining)
        remaining -= items[code]
    return items


def _ensure_agencies() -> dict[str, Agency]:
    agencies = {}
    until = local_today() + timedelta(days=365)
    for licence, name, district in AGENCIES:
        agency = db.session.scalar(sa.select(Agency).where(Agency.licence_number == licence))
        if agency is None:
            agency = create_agency(
                name=name,
                licence_number=licence,
                certified_until=until,
                district_id=district_by_code(district).id,
            )
        agencies[licence] = agency
    admin = db.session.scalar(sa.select(User).where(User.username == "agency.admin"))
    if admin is not None and db.session.get(AgencyAdmin, admin.id) is None:
        db.session.add(AgencyAdmin(user_id=admin.id, agency_id=agencies[AGENCIES[0][0]].id))
    return agencies


def _ensure_assessors(agencies) -> dict[str, Assessor]:
    assessors = {}
    until = local_today() + timedelta(days=730)
    for username, display, certificate, licence in ASSESSORS:
        user = ensure_account(username, display, ["assessor"])
        db.session.flush()
        assessor = db.session.scalar(sa.select(Assessor).where(Assessor.user_id == user.id))
        if assessor is None:
            assessor = add_assessor(
                agencies[licence],
                user,
                name=display.split()[-1],
                certificate_number=certificate,
                valid_until=until,
            )
        assessors[username] = assessor
    return assessors


def build_demo() -> dict:
    today = local_today()
    agencies = _ensure_agencies()
    assessors = _ensure_assessors(agencies)
    approver = db.session.scalar(sa.select(User).where(User.username == "bureau.approver"))
    officer = db.session.scalar(sa.select(User).where(User.username == "bureau.officer"))
    visit = datetime.combine(today, time(9), tzinfo=SHANGHAI)
    wang = db.session.scalar(sa.select(User).where(User.username == "elder.wang")).resident
    targets = [(wang, 50, {})]
    for birth, seq, name, district, street, address, lat, lng, total, adjust in ELDERS:
        resident = ensure_resident(
            compose_resident_id("210102", birth, seq),
            name,
            district_by_code(district),
            street,
            address,
            lat,
            lng,
        )
        ensure_account(f"elder.{seq}", name, ["elder"], resident=resident)
        targets.append((resident, total, adjust))
    db.session.flush()

    levels = []
    for index, (resident, total, adjust) in enumerate(targets):
        if db.session.scalar(sa.select(Assessment.id).where(Assessment.resident_id == resident.id)):
            continue  # assessed by an earlier run
        # Alternate the agencies so that both have results to show.
        first, second = (
            ("assessor.li", "assessor.zhao")
            if index % 2 == 0
            else ("assessor.wu", "assessor.zheng")
        )
        case = lifecycle.apply(resident, type="first", applied_by=officer, via="bureau")
        lifecycle.assign(case, assessors[first].agency)
        lifecycle.schedule(case, visit, actor=assessors[first].user)
        lifecycle.record(
            case,
            items=items_with_total(total),
            assessed_on=today,
            recorder=assessors[first],
            cosigner=assessors[second],
            fee_fen=8000,
            **adjust,
        )
        lifecycle.approve(case, reviewer=approver)
        levels.append(case.level)

    # One case waiting for the assessors, so the tablet form has work to show.
    birth, seq, name, district, street, address, lat, lng = PENDING
    pending = ensure_resident(
        compose_resident_id("210102", birth, seq),
        name,
        district_by_code(district),
        street,
        address,
        lat,
        lng,
    )
    db.session.flush()
    if (
        db.session.scalar(sa.select(Assessment.id).where(Assessment.resident_id == pending.id))
        is None
    ):
        case = lifecycle.apply(pending, type="first", applied_by=officer, via="bureau")
        lifecycle.assign(case, agencies[AGENCIES[0][0]])
        lifecycle.schedule(case, visit + timedelta(hours=5), actor=assessors["assessor.li"].user)
    return {
        "agencies": len(agencies),
        "accounts": [
            {"username": u, "password": DEMO_PASSWORD, "roles": "assessor"} for u, *_ in ASSESSORS
        ],
        "assessed_levels": levels,
    }
