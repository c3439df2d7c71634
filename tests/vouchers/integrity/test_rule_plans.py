"""Every anomaly rule's queries keep a linear plan when the candidates are a month
(PostgreSQL; bench/anomalies.py measures them at a million redemptions).

``id IN (candidates)`` used as a value (in the select list, or under an OR) is a SubPlan that
PostgreSQL hashes only while the candidates fit in ``work_mem``; past that each row rescans
the whole list: shared_device and impossible_travel spent minutes on a month of a million
that way. Here ``work_mem`` is made tiny and the candidates are planned as 200,000 ids, so
any such SubPlan shows unhashed in the plan of the rule's statements."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa

from eldercare.db import db
from vouchers.integrity.rules import DEFAULTS, RULES

pytestmark = pytest.mark.postgres

PLANNED_CANDIDATES = 200_000
NODE = re.compile(r"^\s*(->\s*)?SubPlan \d+\s*$")
UNHASHED = re.compile(r"(?<!hashed )SubPlan \d+")


def plans_of(code: str) -> list[tuple[str, list[str]]]:
    """The rule's statements over PLANNED_CANDIDATES planned candidates, each with its plan."""
    statements: list[tuple[str, object]] = []

    def listener(conn, cursor, statement, parameters, context, executemany):
        statements.append((statement, parameters))

    db.session.execute(sa.text("SET LOCAL work_mem = '64kB'"))
    candidates = sa.select(sa.func.generate_series(1, PLANNED_CANDIDATES))
    engine = db.session.get_bind().engine
    sa.event.listen(engine, "before_cursor_execute", listener)
    try:
        list(RULES[code].detect(candidates, dict(DEFAULTS[code])))
    finally:
        sa.event.remove(engine, "before_cursor_execute", listener)
    connection = db.session.connection()
    return [
        (
            statement,
            [
                row[0]
                for row in connection.exec_driver_sql("EXPLAIN (VERBOSE) " + statement, parameters)
            ],
        )
        for statement, parameters in statements
    ]


@pytest.mark.parametrize("code", sorted(RULES))
def test_no_rule_rescans_the_candidates_for_each_row(code, db_session, shop):
    for statement, plan in plans_of(code):
        unhashed = [
            line for line in plan if not NODE.match(line) and UNHASHED.search(line) is not None
        ]
        assert not unhashed, (statement, "\n".join(plan))


# A month's findings name more redemptions than a statement can carry parameters (65,535):
# the evidence, the flags already raised and the districts are read with one array each.
MANY_IDS = range(1, 70_001)


def test_evidence_of_more_redemptions_than_a_statement_has_parameters(db_session):
    from vouchers.integrity.rules.base import facts_of

    assert facts_of(MANY_IDS) == {}


def test_the_flags_and_districts_of_a_month_of_findings_are_read_at_once(db_session):
    from vouchers.integrity import anomalies

    assert anomalies._already_flagged({(i, "review_sample") for i in MANY_IDS}) == set()
    assert anomalies._districts(set(MANY_IDS)) == {}
