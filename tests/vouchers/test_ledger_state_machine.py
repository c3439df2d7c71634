"""After any sequence of top-up, allocation, issue, hold, redeem, release, reverse, expire and
revoke, the ledger balances to the fen, nothing goes negative, and the ledger and the voucher
rows tell the same story.

Each step goes through the real service functions; a refusal (a domain error) is an allowed
outcome of a step, as long as it changed nothing. Each example runs in a savepoint of the
test's transaction, so examples start from the same scheme."""

from datetime import timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from eldercare.db import db
from eldercare.errors import DomainError
from eldercare.timeutil import now_utc
from marketplace import catalogue
from vouchers.issuance import monthly as issuance
from vouchers.models import JournalEntry, JournalLine, LedgerAccount, Redemption, Voucher
from vouchers.pool import funding as pool
from vouchers.pool import ledger
from vouchers.redemption import steps as redemption

DISTRICT = "district:210102:available"


def _sum(statement) -> int:
    return db.session.scalar(statement) or 0


def _entry_total(kind: str, account: str) -> int:
    """What entries of ``kind`` added to ``account`` in all."""
    return _sum(
        sa.select(sa.func.sum(JournalLine.amount_fen))
        .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
        .join(LedgerAccount, LedgerAccount.id == JournalLine.account_id)
        .where(JournalEntry.kind == kind, LedgerAccount.code == account)
    )


@pytest.fixture
def machine_world(shop, db_session):
    """Three eligible elders in Heping; the station's meal made dear enough (¥2,000) that a
    few purchases use a voucher up."""
    others = [shop.world.factory.resident(shop.heping, birth=shop.elder.birth_date) for _ in "ab"]
    for resident in others:
        shop.assess(resident, "severe")
    catalogue.change_price(shop.market.meals, 200_000, actor=shop.station_admin)
    db_session.flush()
    shop.residents = [shop.elder, *others]
    return shop


def test_any_sequence_of_money_movements_balances(machine_world):
    world = machine_world

    class VoucherLedger(RuleBasedStateMachine):
        def __init__(self):
            super().__init__()
            self.savepoint = db.session.begin_nested()
            self.scans = 0
            self.month = world.today.replace(day=1)

        def teardown(self):
            self.savepoint.rollback()
            db.session.expire_all()

        def attempt(self, action):
            """Run a step; a refusal must leave no trace."""
            before = ledger.balances()
            try:
                with db.session.begin_nested():
                    return action()
            except DomainError:
                db.session.expire_all()
                assert ledger.balances() == before
                return None

        def vouchers(self):
            return list(db.session.scalars(sa.select(Voucher).order_by(Voucher.id)))

        def redemptions(self, status):
            return list(
                db.session.scalars(
                    sa.select(Redemption).where(Redemption.status == status).order_by(Redemption.id)
                )
            )

        @rule(amount=st.integers(1, 300_000), source=st.sampled_from(["central", "local"]))
        def top_up(self, amount, source):
            self.attempt(lambda: pool.top_up(amount, source=source, memo="m", actor=world.approver))

        @rule(amount=st.integers(-300_000, 300_000).filter(bool))
        def allocate(self, amount):
            self.attempt(
                lambda: pool.allocate(world.heping, amount, memo="m", actor=world.approver)
            )

        @rule(who=st.integers(0, 2))
        def issue(self, who):
            self.attempt(lambda: issuance.issue_for(world.residents[who].id, self.month))

        @rule(
            pick=st.integers(0, 10),
            price=st.integers(1, 200_000),
            insurance_share=st.sampled_from([0, 0, 0.25, 0.5]),
            then=st.sampled_from(["cash", "hold", "hold", "leave"]),
        )
        def purchase(self, pick, price, insurance_share, then):
            """A scan, check-in and price; then cash, a card hold, or walking away."""
            vouchers = self.vouchers()
            self.scans += 1
            voucher = vouchers[pick % len(vouchers)]

            def step():
                r = redemption.check_in(
                    voucher,
                    scan_digest=f"machine-{self.scans}",
                    staff_user=world.caregiver,
                    service_id=world.market.meals.id,
                )
                redemption.set_price(
                    r,
                    price_fen=price,
                    insurance_fen=int(price * insurance_share),
                    staff_user=world.caregiver,
                )
                if then == "cash":
                    redemption.pay_cash(r, staff_user=world.caregiver)
                elif then == "hold":
                    redemption.hold(r, method="card")

            self.attempt(step)

        @rule(pick=st.integers(0, 10))
        def capture(self, pick):
            pending = self.redemptions("pending_payment")
            if pending:
                self.attempt(lambda: redemption.capture(pending[pick % len(pending)]))

        @rule(pick=st.integers(0, 10), retry=st.booleans())
        def release(self, pick, retry):
            pending = self.redemptions("pending_payment")
            if pending:
                r = pending[pick % len(pending)]
                self.attempt(lambda: redemption.release(r, reason="failed", retry=retry))

        @rule(pick=st.integers(0, 10), days=st.integers(0, 10))
        def reverse(self, pick, days):
            done = self.redemptions("redeemed")
            if done:
                r = done[pick % len(done)]
                self.attempt(
                    lambda: redemption.reverse(
                        r, actor=world.approver, reason="核查", now=now_utc() + timedelta(days=days)
                    )
                )

        @rule(pick=st.integers(0, 30))
        def expire(self, pick):
            # What month-end expiry does to each voucher (expire_month itself only takes a
            # month that has ended, and this machine lives in the current one).
            active = [v for v in self.vouchers() if v.status == "active"]
            if active and pick < 5:  # now and then: a month ends less often than money moves
                voucher = active[pick % len(active)]
                self.attempt(
                    lambda: issuance._close(
                        voucher,
                        status="expired",
                        entry_kind="expire",
                        memo="expiry",
                        actor_id=None,
                        audit_after={},
                    )
                )

        @rule(who=st.integers(0, 12))
        def revoke(self, who):
            if who > 2:  # now and then: a death is rarer than a purchase
                return
            self.attempt(
                lambda: issuance.revoke_for(
                    world.residents[who].id, from_month=self.month, reason="death"
                )
            )

        @invariant()
        def books_balance(self):
            check = ledger.verify_ledger()
            assert check.ok, check
            # The reconciliation's own sub-ledger proofs (what the pool page shows), beside
            # the independent sums in vouchers_agree_with_the_ledger.
            assert check.subledger_mismatches == [], check
            assert check.closed_vouchers_with_balance == [], check
            assert check.capture_mismatches == [], check
            negative = [
                code
                for code, fen in ledger.balances().items()
                # Sources go negative by design: funds received, elders' card co-payments.
                if fen < 0 and not code.startswith(("funding:", "copay:card"))
            ]
            assert negative == [] and check.negative_accounts == []

        @invariant()
        def vouchers_agree_with_the_ledger(self):
            balances = ledger.balances()
            vouchers = self.vouchers()
            assert all(v.balance_fen >= 0 and v.held_fen >= 0 for v in vouchers)
            assert balances["vouchers:outstanding"] == sum(v.balance_fen for v in vouchers)
            assert balances["vouchers:held"] == sum(v.held_fen for v in vouchers)
            redeemed = self.redemptions("redeemed")
            assert balances["redeemed:unsettled"] == sum(r.subsidy_fen for r in redeemed)
            # Every fen issued is spendable, held, redeemed, or went back to the district.
            issued = sum(v.face_value_fen for v in vouchers)
            assert issued == _entry_total("issue", "vouchers:outstanding")
            returned = (
                _entry_total("expire", DISTRICT)
                + _entry_total("revoke", DISTRICT)
                + _entry_total("reverse", DISTRICT)
                + _entry_total("release", DISTRICT)
            )
            assert issued == (
                balances["vouchers:outstanding"]
                + balances["vouchers:held"]
                + balances["redeemed:unsettled"]
                + returned
            )
            # The funding that came in is exactly what the pool holds, in whatever bucket.
            funded = -(balances["funding:central"] + balances["funding:local"])
            assert funded == sum(v for k, v in balances.items() if not k.startswith("funding:"))

    run_state_machine_as_test(
        VoucherLedger,
        settings=settings(
            max_examples=40,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
