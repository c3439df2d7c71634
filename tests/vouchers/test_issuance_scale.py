"""Issuance at scale: the statements of one batch do not grow with its elders."""

from datetime import date

import sqlalchemy as sa

from assessment.models import Assessment
from eldercare import audit
from eldercare.audit import AuditLog
from eldercare.residents import Resident, compose_resident_id
from tests.vouchers.helpers import approved_moderate
from vouchers.issuance.monthly import issue_monthly, month_of
from vouchers.models import Voucher
from vouchers.pool import funding as pool
from vouchers.pool import ledger

CAP = 50_000


def seed_eligible(session, district, n: int, today: date, first_seq: int) -> list[int]:
    """``n`` moderate elders approved today, by plain bulk inserts."""
    session.execute(
        sa.insert(Resident),
        [
            {
                "id_number": compose_resident_id("210104", date(1950, 1, 1), first_seq + i),
                "name": f"长者{i}",
                "birth_date": date(1950, 1, 1),
                "district_id": district.id,
                "street": "南湖街道",
                "address": f"三好街 {i} 号",
            }
            for i in range(n)
        ],
    )
    ids = list(
        session.scalars(
            sa.select(Resident.id).where(Resident.district_id == district.id).order_by(Resident.id)
        )
    )
    session.execute(
        sa.insert(Assessment),
        approved_moderate(ids, today),
    )
    return ids


def statements_of(session, work) -> tuple[int, object]:
    engine = session.get_bind().engine
    seen = []

    def count(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        result = work()
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    return len(seen), result


def test_a_district_batch_costs_the_same_statements_for_5_and_for_50_elders(scheme, db_session):
    w = scheme.world
    current = month_of(scheme.today)
    issue_monthly(current)  # the scheme's own elder first
    small, large = w.factory.district("210104"), w.factory.district("210105")
    pool.allocate(small, 5 * CAP, memo="五人", actor=scheme.approver)
    pool.allocate(large, 50 * CAP, memo="五十人", actor=scheme.approver)

    seed_eligible(db_session, small, 5, scheme.today, 100)
    few, report = statements_of(db_session, lambda: issue_monthly(current))
    assert (report.issued, report.total_fen) == (5, 5 * CAP)

    seed_eligible(db_session, large, 50, scheme.today, 200)
    many, report = statements_of(db_session, lambda: issue_monthly(current))
    assert (report.issued, report.already_issued, report.total_fen) == (50, 6, 50 * CAP)

    assert few == many, (few, many)
    assert ledger.balances()[ledger.district_account_code("210105")] == 0
    assert ledger.verify_ledger().ok
    # One audit row per voucher, as audit.record would have written it, in an unbroken chain.
    rows = list(db_session.scalars(sa.select(AuditLog).where(AuditLog.action == "voucher.issue")))
    vouchers = {str(v.id): v for v in db_session.scalars(sa.select(Voucher))}
    assert sorted(r.object_id for r in rows) == sorted(vouchers)
    sample = next(r for r in rows if vouchers[r.object_id].district_id == large.id)
    assert sample.after == {
        "month": current.strftime("%Y-%m"),
        "kind": "home_community",
        "face_value_fen": CAP,
        "level": "moderate",
        "reason": "monthly",
    }
    assert sample.district_id == large.id and sample.actor_label == "cli"
    assert audit.verify_chain().ok


def _vouchers_for(session, district, ids, month):
    """Vouchers for ``month`` reserved as the monthly run does (one entry for them all)."""
    from vouchers.models import VoucherPolicy

    policy = session.scalar(sa.select(VoucherPolicy).where(VoucherPolicy.kind == "home_community"))
    session.execute(
        sa.insert(Voucher),
        [
            {
                "resident_id": rid,
                "month": month,
                "kind": "home_community",
                "policy_id": policy.id,
                "district_id": district.id,
                "face_value_fen": CAP,
                "balance_fen": CAP,
                "held_fen": 0,
                "status": "active",
            }
            for rid in ids
        ],
    )
    ledger.post(
        "issue",
        "test",
        [
            (ledger.district_account_code(district.code), -CAP * len(ids)),
            ("vouchers:outstanding", CAP * len(ids)),
        ],
    )


def test_expiring_5_or_50_vouchers_of_a_district_costs_the_same_statements(scheme, db_session):
    from vouchers.issuance.monthly import expire_month, previous_month

    w = scheme.world
    current = month_of(scheme.today)
    small, large = w.factory.district("210104"), w.factory.district("210105")
    pool.allocate(small, 5 * CAP, memo="五人", actor=scheme.approver)
    pool.allocate(large, 50 * CAP, memo="五十人", actor=scheme.approver)
    one_ago, two_ago = previous_month(current), previous_month(previous_month(current))
    _vouchers_for(
        db_session, small, seed_eligible(db_session, small, 5, scheme.today, 100), one_ago
    )
    _vouchers_for(
        db_session, large, seed_eligible(db_session, large, 50, scheme.today, 200), two_ago
    )

    few, result = statements_of(db_session, lambda: expire_month(one_ago))
    assert (result["expired"], result["returned_fen"]) == (5, 5 * CAP)
    many, result = statements_of(db_session, lambda: expire_month(two_ago))
    assert (result["expired"], result["returned_fen"], result["held"]) == (50, 50 * CAP, [])
    assert few == many, (few, many)

    assert ledger.balances()[ledger.district_account_code("210105")] == 50 * CAP
    assert ledger.verify_ledger().ok
    expired = list(
        db_session.scalars(sa.select(AuditLog).where(AuditLog.action == "voucher.expired"))
    )
    assert len(expired) == 55
    sample = expired[-1]
    assert sample.before == {"status": "active", "balance_fen": CAP, "held_fen": 0}
    assert sample.after == {"status": "expired", "returned_fen": CAP, "still_held_fen": 0}
    assert audit.verify_chain().ok
