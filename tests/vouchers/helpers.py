"""Small builders for voucher tests."""

from datetime import date, timedelta

from eldercare.db import db
from vouchers.models import Voucher
from vouchers.pool import ledger, memos
from vouchers.pool.policy import policy_on


def give_voucher(resident, day: date, kind: str = "home_community") -> Voucher:
    """This month's voucher for ``resident``, reserved from the district like issuance does."""
    month = day.replace(day=1)
    policy = policy_on(kind, month)
    voucher = Voucher(
        resident_id=resident.id,
        month=month,
        kind=kind,
        policy_id=policy.id,
        district_id=resident.district_id,
        face_value_fen=policy.monthly_cap_fen,
        balance_fen=policy.monthly_cap_fen,
        held_fen=0,
    )
    db.session.add(voucher)
    db.session.flush()
    ledger.post(
        "issue",
        memos.memo("ledger.issue_one", month=f"{month:%Y-%m}", resident=resident.id),
        [
            (ledger.district_account_code(resident.district.code), -policy.monthly_cap_fen),
            ("vouchers:outstanding", policy.monthly_cap_fen),
        ],
        cause=("vouchers", voucher.id),
    )
    return voucher


def approved_moderate(resident_ids, today: date) -> list[dict]:
    """Assessment rows for a bulk insert: each elder assessed moderate and approved today,
    valid for 300 days (what the scale and crash tests seed instead of the real services)."""
    return [
        {
            "resident_id": rid,
            "type": "first",
            "status": "approved",
            "applied_via": "bureau",
            "assessed_on": today,
            "level": "moderate",
            "base_level": "moderate",
            "total": 50,
            "effective_from": today,
            "valid_until": today + timedelta(days=300),
        }
        for rid in resident_ids
    ]
