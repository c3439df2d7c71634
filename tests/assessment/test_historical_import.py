"""Assessments made before the programme's first eligibility policy (issue 10, item 3).

The pilot inherited assessments done in the first half of 2025, while the first eligibility
policy starts on 2025-07-01. Recording and approving a result needs no policy in force on
the visit day; deciding eligibility on a date does.
"""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa

from assessment import lifecycle
from assessment.eligibility import eligibility_on
from assessment.models import Assessment, EligibilityPolicy
from tests.assessment.test_importing import (
    ASSESSMENT_HEADER,
    assessment_row,
    run,
    write_csv,
    write_xlsx,
)

IMPORTED_ON = date(2025, 6, 20)  # the pilot loads its inherited cases before it starts
APPROVED_ON = date(2025, 6, 25)


def _first_policy_start(db_session) -> date:
    return db_session.scalar(sa.select(sa.func.min(EligibilityPolicy.effective_from)))


def test_assessments_from_before_the_first_policy_are_imported_and_count_in_july(
    world, tmp_path, db_session
):
    assert _first_policy_start(db_session) == date(2025, 7, 1)
    elders = [world.factory.resident(world.heping, birth=date(1940, 1, 2)) for _ in range(3)]
    rows = [
        assessment_row(elders[0], "H-1", assessed_on="2025-01-05"),
        assessment_row(elders[1], "H-2", assessed_on="2025-03-31", total=30),  # severe
        assessment_row(elders[2], "H-3", assessed_on="2025-06-10", total=80),  # mild
    ]
    csv_path = write_csv(tmp_path / "h.csv", ASSESSMENT_HEADER, rows[:2])
    xlsx_path = write_xlsx(tmp_path / "h.xlsx", ASSESSMENT_HEADER, rows[2:])
    for path in (csv_path, xlsx_path):
        report = run(path, "assessments", today=IMPORTED_ON)
        assert report.errors == [] and report.imported, report.errors

    cases = {
        case.external_ref: case
        for case in db_session.scalars(
            sa.select(Assessment).where(Assessment.external_ref.in_(["H-1", "H-2", "H-3"]))
        )
    }
    assert {ref: case.status for ref, case in cases.items()} == dict.fromkeys(
        ["H-1", "H-2", "H-3"], "recorded"
    )
    # The fee rule of the programme's first policy: refunded up to 100 yuan for moderate
    # or worse (80.50 yuan charged), nothing for a mild result.
    assert [cases[r].refundable_fee_fen for r in ("H-1", "H-2", "H-3")] == [8050, 8050, 0]

    for case in cases.values():
        lifecycle.approve(case, reviewer=world.approver, today=APPROVED_ON)
    assert cases["H-1"].valid_until == date(2026, 1, 4)  # 12 months from the visit
    assert cases["H-2"].valid_until == date(2026, 3, 30)

    july = eligibility_on(elders[0].id, date(2025, 7, 15))
    assert (july.eligible, july.level, july.assessment_id) == (True, "moderate", cases["H-1"].id)
    assert july.holds_until == date(2026, 1, 4)
    assert eligibility_on(elders[1].id, date(2025, 7, 1)).eligible
    assert eligibility_on(elders[2].id, date(2025, 7, 1)).reason_codes == ["level_below_threshold"]
    # Validity still ends 12 months after the visit.
    assert eligibility_on(elders[0].id, date(2026, 1, 5)).reason_codes == ["no_valid_assessment"]
