"""A small demo city: Shenyang's districts, a bureau and one account for every role.

Every step looks up before it inserts, so running the demo twice adds nothing.
Domains add their own steps through ``app.extensions["demo_steps"]``.
"""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from flask import current_app

from eldercare import audit
from eldercare.accounts import FamilyLink, User, UserRole
from eldercare.db import db
from eldercare.residents import District, Resident, compose_resident_id, parse_resident_id

DEMO_PASSWORD = "demo-pass-2025"

# (code, zh, en, latitude, longitude of the district government: the centre for searches)
SHENYANG_DISTRICTS = [
    ("210102", "和平区", "Heping", 41.7894, 123.4203),
    ("210103", "沈河区", "Shenhe", 41.7967, 123.4526),
    ("210104", "大东区", "Dadong", 41.8054, 123.4695),
    ("210105", "皇姑区", "Huanggu", 41.8246, 123.4242),
    ("210106", "铁西区", "Tiexi", 41.8020, 123.3505),
    ("210111", "苏家屯区", "Sujiatun", 41.6650, 123.3440),
    ("210112", "浑南区", "Hunnan", 41.7146, 123.4490),
    ("210113", "沈北新区", "Shenbei", 42.0525, 123.5216),
    ("210114", "于洪区", "Yuhong", 41.7940, 123.3100),
    ("210115", "辽中区", "Liaozhong", 41.5164, 122.7240),
]

# (region, birth date, sequence, name, district code, street, address, lat, lng, phone)
DEMO_RESIDENTS = [
    (
        "210102",
        date(1944, 3, 12),
        122,
        "王秀英",
        "210102",
        "南湖街道",
        "三好街 12 号 3-2-1",
        41.7741,
        123.4356,
        "13804001234",
    ),
    (
        "210102",
        date(1972, 8, 5),
        131,
        "张伟",
        "210102",
        "南湖街道",
        "三好街 12 号 3-2-1",
        41.7741,
        123.4356,
        "13904005678",
    ),
]

# (username, display name, roles, district code or None, resident index or None)
DEMO_ACCOUNTS = [
    ("admin", "系统管理员", ["admin"], None, None),
    ("bureau.officer", "市民政局 刘科员", ["bureau_officer"], None, None),
    ("heping.officer", "和平区民政局 陈科员", ["bureau_officer"], "210102", None),
    ("bureau.approver", "市民政局 赵科长", ["bureau_approver"], None, None),
    # A second city-wide approver: settlement statements above the threshold need two.
    ("bureau.approver2", "市民政局 钱副局长", ["bureau_approver"], None, None),
    ("auditor", "审计 孙审计员", ["auditor"], None, None),
    ("agency.admin", "评估机构 管理员", ["agency_admin"], None, None),
    ("provider.admin", "服务机构 管理员", ["provider_admin"], None, None),
    ("provider.staff", "护理员 周强", ["provider_staff"], None, None),
    ("elder.wang", "王秀英", ["elder"], None, 0),
    ("family.zhang", "张伟（王秀英之子）", ["family_agent"], None, 1),
]


def _ensure_districts() -> dict[str, District]:
    existing = {d.code: d for d in db.session.scalars(sa.select(District))}
    for code, zh, en, lat, lng in SHENYANG_DISTRICTS:
        if code not in existing:
            existing[code] = District(code=code, name_zh=zh, name_en=en)
            db.session.add(existing[code])
        existing[code].center_latitude, existing[code].center_longitude = lat, lng
    db.session.flush()
    return existing


def ensure_resident(
    number: str,
    name: str,
    district: District,
    street: str,
    address: str,
    lat: float,
    lng: float,
    phone: str | None = None,
) -> Resident:
    """The demo resident with this ID number, created on first use."""
    resident = db.session.scalar(sa.select(Resident).where(Resident.id_number_is(number)))
    if resident is None:
        resident = Resident(
            id_number=number,
            name=name,
            birth_date=parse_resident_id(number).birth_date,
            phone=phone,
            district_id=district.id,
            street=street,
            address=address,
            latitude=lat,
            longitude=lng,
        )
        db.session.add(resident)
        audit.record(
            "resident.create",
            resident,
            district_id=district.id,
            after={"id_number": resident.masked_id_number, "source": "demo"},
        )
    return resident


def ensure_account(
    username: str,
    display: str,
    roles: list[str],
    *,
    district: District | None = None,
    resident: Resident | None = None,
) -> User:
    """The demo account with this username, created on first use with DEMO_PASSWORD."""
    user = db.session.scalar(sa.select(User).where(User.username == username))
    if user is None:
        user = User(username=username, display_name=display, district=district, resident=resident)
        user.set_password(DEMO_PASSWORD)
        user.role_rows = [UserRole(role=r) for r in roles]
        db.session.add(user)
        audit.record("user.create", user, after={"username": username, "roles": roles})
    return user


def district_by_code(code: str) -> District:
    return db.session.scalar(sa.select(District).where(District.code == code))


def _ensure_residents(districts: dict[str, District]) -> list[Resident]:
    return [
        ensure_resident(
            compose_resident_id(region, birth, seq),
            name,
            districts[district],
            street,
            address,
            lat,
            lng,
            phone,
        )
        for region, birth, seq, name, district, street, address, lat, lng, phone in DEMO_RESIDENTS
    ]


def _ensure_accounts(districts, residents) -> list[dict]:
    summary = []
    for username, display, roles, district_code, resident_index in DEMO_ACCOUNTS:
        ensure_account(
            username,
            display,
            roles,
            district=districts[district_code] if district_code else None,
            resident=residents[resident_index] if resident_index is not None else None,
        )
        summary.append({"username": username, "password": DEMO_PASSWORD, "roles": ",".join(roles)})
    return summary


def _ensure_family_link(residents) -> None:
    agent = db.session.scalar(sa.select(User).where(User.username == "family.zhang"))
    elder = residents[0]
    link = db.session.scalar(
        sa.select(FamilyLink).where(
            FamilyLink.agent_user_id == agent.id, FamilyLink.resident_id == elder.id
        )
    )
    if link is None:
        link = FamilyLink(
            agent_user_id=agent.id,
            resident_id=elder.id,
            relationship="child",
            consent_date=date(2025, 6, 20),
        )
        db.session.add(link)
        audit.record(
            "family_link.create",
            link,
            district_id=elder.district_id,
            after={"relationship": "child"},
        )


def build_demo() -> dict:
    districts = _ensure_districts()
    residents = _ensure_residents(districts)
    accounts = _ensure_accounts(districts, residents)
    _ensure_family_link(residents)
    summary = {"districts": len(districts), "accounts": accounts}
    for step in current_app.extensions.get("demo_steps", []):
        for key, value in (step() or {}).items():
            if key == "accounts":
                summary["accounts"].extend(value)
            else:
                summary[key] = value
    return summary
