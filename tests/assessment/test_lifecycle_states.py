"""Property test: any sequence of lifecycle actions follows the state diagram, and a refused
action changes nothing (neither the case nor the audit trail)."""

from datetime import date, datetime, time, timedelta

import sqlalchemy as sa
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from assessment import lifecycle
from assessment.policy import add_months
from assessment.scoring import score_assessment
from eldercare.audit import AuditLog
from eldercare.errors import DomainError
from eldercare.timeutil import SHANGHAI
from tests.assessment.helpers import items_with_total

NEXT = {  # action -> {status before: status after}
    "assign": {"applied": "assigned", "assigned": "assigned"},
    "schedule": {"assigned": "scheduled", "scheduled": "scheduled"},
    "record": {"scheduled": "recorded", "returned": "recorded"},
    "approve": {"recorded": "approved"},
    "return": {"recorded": "returned"},
    "cancel": {"applied": "cancelled", "assigned": "cancelled", "scheduled": "cancelled"},
}


def test_lifecycle_state_machine(world, db_session):
    counter = iter(range(10_000))

    class Lifecycle(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.savepoint = db_session.begin_nested()
            resident = world.factory.resident(world.heping, birth=date(1941, 2, 3))
            self.case = lifecycle.apply(
                resident,
                type="first",
                applied_by=world.officer,
                via="bureau",
                note=f"run {next(counter)}",
            )
            self.status = "applied"

        def teardown(self):
            self.savepoint.rollback()

        def _snapshot(self):
            c = self.case
            audit_rows = db_session.scalar(sa.select(sa.func.count()).select_from(AuditLog))
            return (
                c.status,
                c.total,
                c.level,
                c.agency_id,
                c.valid_until,
                c.review_note,
                c.item_scores_json,
                audit_rows,
            )

        def _attempt(self, action, call, legal_extra=True):
            before = self._snapshot()
            legal = self.status in NEXT[action] and legal_extra
            try:
                call()
            except DomainError:
                assert not legal, f"{action} from {self.status} should have worked"
                assert self._snapshot() == before, f"refused {action} changed something"
                return
            assert legal, f"{action} from {self.status} should have been refused"
            self.status = NEXT[action][self.status]
            assert self._snapshot()[-1] == before[-1] + 1  # exactly one audit row

        @rule(other_agency=st.sampled_from([False, False, False, True]))
        def assign(self, other_agency):
            agency = world.other if other_agency else world.agency
            self._attempt("assign", lambda: lifecycle.assign(self.case, agency))

        @rule(days_ahead=st.sampled_from([0, 0, 1, 3, -1]))
        def schedule(self, days_ahead):
            when = datetime.combine(
                world.today + timedelta(days=days_ahead), time(10), tzinfo=SHANGHAI
            )
            # Any assessor of the assigned agency may schedule.
            actor = world.wu.user if self.case.agency_id == world.other.id else world.li.user
            self._attempt(
                "schedule",
                lambda: lifecycle.schedule(self.case, when, actor=actor),
                legal_extra=days_ahead >= 0,
            )

        # Mostly good input, so that runs get far; bad input must still change nothing.
        @rule(
            total=st.integers(0, 90),
            same_signer=st.sampled_from([False, False, True]),
            bad_score=st.sampled_from([False, False, False, True]),
        )
        def record(self, total, same_signer, bad_score):
            if self.case.agency_id == world.other.id:
                first, second = world.wu, world.wu  # the other agency has one assessor
            else:
                first, second = world.li, (world.li if same_signer else world.zhao)
            items = items_with_total(total)
            if bad_score:
                items["eating"] = 7
            ok = first.id != second.id and not bad_score
            self._attempt(
                "record",
                lambda: lifecycle.record(
                    self.case, items=items, assessed_on=world.today, recorder=first, cosigner=second
                ),
                legal_extra=ok,
            )

        @rule()
        def approve(self):
            self._attempt("approve", lambda: lifecycle.approve(self.case, reviewer=world.approver))

        @rule(reason=st.sampled_from(["", "  ", "scores unclear"]))
        def return_(self, reason):
            self._attempt(
                "return",
                lambda: lifecycle.return_for_correction(
                    self.case, reviewer=world.approver, reason=reason
                ),
                legal_extra=bool(reason.strip()),
            )

        @rule(reason=st.sampled_from(["", "", "", "elder withdrew"]))
        def cancel(self, reason):
            self._attempt(
                "cancel",
                lambda: lifecycle.cancel(self.case, actor=world.officer, reason=reason),
                legal_extra=bool(reason),
            )

        @rule(data=st.data())
        def advance(self, data):
            """A legal step from where the case is, so that runs reach every state; the
            other rules try anything, legal or not."""
            moves = [a for a, edges in NEXT.items() if self.status in edges and a != "cancel"]
            if not moves:
                return  # approved or cancelled: nothing moves it any more
            action = data.draw(st.sampled_from(moves))
            if action == "assign":
                self.assign(other_agency=False)
            elif action == "schedule":
                self.schedule(days_ahead=0)
            elif action == "record":
                self.record(total=data.draw(st.integers(0, 90)), same_signer=False, bad_score=False)
            elif action == "return":
                self.return_(reason="scores unclear")
            else:
                self.approve()

        @invariant()
        def result_matches_the_scores(self):
            c = self.case
            assert c.status == self.status
            if c.status in ("recorded", "approved", "returned"):
                expected = score_assessment(c.item_scores)
                assert (c.total, c.level) == (expected.total, expected.level)
                assert c.assessor1_id != c.assessor2_id
            if c.status == "approved":
                assert c.effective_from == world.today
                assert c.valid_until == add_months(c.assessed_on, 12) - timedelta(days=1)
            else:
                assert c.valid_until is None

    run_state_machine_as_test(
        Lifecycle, settings=settings(max_examples=100, stateful_step_count=30, deadline=None)
    )
