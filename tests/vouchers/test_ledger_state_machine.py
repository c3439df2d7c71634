"""After any sequence of top-up, allocation, issue, hold, redeem, release, reverse, expire,
revoke, settle, approve, reject, bank batch, bank result (paid or failed lines), a result file
imported twice and clawback, the ledger balances to the fen, nothing goes negative, the ledger
and the voucher and statement rows tell the same story, no redemption is in two statements and
no statement is paid twice.

The machine lives in the scheme's (current) month. Settlement of that month may only start
after its reversal window: the settle rule passes the month's ``settles_from`` day as
``today`` (or the day before, which must be refused), and a clawback passes a ``now`` days
after the redemption.

Each step goes through the real service functions; a refusal (a domain error) is an allowed
outcome of a step, as long as it changed nothing. Each example runs in a savepoint of the
test's transaction, so examples start from the same scheme."""

from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from assessment.models import FeeRefund
from eldercare.db import db
from eldercare.errors import DomainError
from eldercare.timeutil import now_utc
from marketplace import catalogue
from tests.vouchers.settlement.builders import result_csv
from vouchers.issuance import monthly as issuance
from vouchers.models import JournalEntry, JournalLine, LedgerAccount, Redemption, Voucher
from vouchers.pool import funding as pool
from vouchers.pool import ledger
from vouchers.redemption import steps as redemption
from vouchers.settlement.bank import bank_files, bank_results
from vouchers.settlement.models import (
    BankBatch,
    BankTransfer,
    SettlementRules,
    Statement,
    StatementLine,
)
from vouchers.settlement.statements import approval, periods, run
from vouchers.settlement.statements.hashing import statement_hash

DISTRICT = "district:210102:available"
# The card co-payment side of the books: the elders' money, never the pool's.
COPAY_SIDE = ("copay:card", "gateway:clearing", "copay:paid_out")
# Accounts that go negative by design: funds received, elders' card co-payments, clawbacks.
SOURCES = ("funding:", "copay:card", "returns:clawback")
# Low enough that some statements of the machine need a second approver (¥300).
SECOND_APPROVAL_ABOVE_FEN = 30_000
# What the bank says of each line of a result file, in order ("omit": not in this file).
OUTCOMES = st.lists(st.sampled_from(["成功", "成功", "失败", "omit"]), max_size=6)


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
    few purchases use a voucher up; bureau staff to settle (a maker, two checkers); a low
    second-approval threshold; and the elders' assessment-fee refunds given an account, so
    bank batches carry them too."""
    others = [shop.world.factory.resident(shop.heping, birth=shop.elder.birth_date) for _ in "ab"]
    for resident in others:
        shop.assess(resident, "severe")
    catalogue.change_price(shop.market.meals, 200_000, actor=shop.station_admin)
    factory = shop.world.factory
    shop.officer = factory.user("machine.officer", roles=["bureau_officer"])
    shop.checkers = [
        factory.user(f"machine.approver{n}", roles=["bureau_approver"]) for n in (1, 2)
    ]
    db_session.add(
        SettlementRules(
            effective_from=shop.today - timedelta(days=1),
            second_approval_above_fen=SECOND_APPROVAL_ABOVE_FEN,
            note="machine",
        )
    )
    for number, refund in enumerate(db_session.scalars(sa.select(FeeRefund))):
        refund.payee_account_name, refund.payee_bank_name = "王秀英", "中国工商银行沈阳和平支行"
        refund.payee_account_number = f"62220200000012345{number}"
    db_session.flush()
    shop.residents = [shop.elder, *others]
    return shop


def _provider_of(code: str) -> int:
    return int(code.split(":")[1])


def _any(query) -> bool:
    return bool(db.session.scalar(sa.select(query.exists())))


# What a settlement rule needs before it can do anything (its precondition): the machine
# spends its steps on rules that have something to act on.
def _open_statement(_machine) -> bool:
    return _any(
        sa.select(Statement.id).where(Statement.status.in_(("prepared", "awaiting_second")))
    )


def _waiting_payment(_machine) -> bool:
    return _any(bank_files.waiting_statements().with_only_columns(Statement.id))


def _sent_transfer(_machine) -> bool:
    return _any(sa.select(BankTransfer.id).where(BankTransfer.status == "sent"))


def _settled_redemption(_machine) -> bool:
    return _any(
        sa.select(StatementLine.redemption_id)
        .join(Statement, Statement.id == StatementLine.statement_id)
        .join(Redemption, Redemption.id == StatementLine.redemption_id)
        .where(Redemption.status == "redeemed", Statement.status.in_(("approved", "paid")))
    )


def test_any_sequence_of_money_movements_balances(machine_world):
    world = machine_world
    seen = Counter()  # what the examples reached, printed at the end (pytest -s shows it)

    def event(name: str) -> None:
        seen[name] += 1

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

        @initialize(
            prices=st.lists(st.integers(1, 200_000), min_size=1, max_size=3),
            approved=st.booleans(),
        )
        def some_lunches(self, prices, approved):
            """Every example starts with a few cash purchases and, in half of them, their
            statement settled and approved (by two when above the threshold), so that the
            rules after it (bank, clawback, netting) get steps to work with."""
            for price in prices:
                self.purchase(pick=0, price=price, insurance_share=0, then="cash")
            if approved and periods.has_settleable(self.month):
                self.settle(early=False, by=0)
                for s in self.statements("prepared"):
                    for checker in world.checkers:
                        if s.status != "approved":
                            approval.approve(s, actor=checker)

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
            then=st.sampled_from(["cash", "cash", "hold", "hold", "leave"]),
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

        @precondition(lambda self: bool(self.redemptions("pending_payment")))
        @rule(pick=st.integers(0, 10))
        def capture(self, pick):
            pending = self.redemptions("pending_payment")
            if pending:
                r = pending[pick % len(pending)]
                self.attempt(lambda: redemption.capture(r))

        @precondition(lambda self: bool(self.redemptions("pending_payment")))
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
                # As ``payments.reverse`` does: the reversal decides under settlement's locks
                # whether an unsettled card co-payment is refunded (here: no gateway, its
                # decision recorded nowhere else); a settled one is not (a clawback).
                self.attempt(
                    lambda: redemption.reverse(
                        r,
                        actor=world.approver,
                        reason="核查",
                        refund_card=lambda: None,
                        now=now_utc() + timedelta(days=days),
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

        # --- settlement ---------------------------------------------------------------

        def statements(self, *statuses):
            return list(
                db.session.scalars(
                    sa.select(Statement)
                    .where(Statement.status.in_(statuses))
                    .order_by(Statement.id)
                )
            )

        def staff(self, who: int):
            """0: the officer (prepares, may not approve), 1-2: the approvers."""
            return [world.officer, *world.checkers][who]

        @precondition(lambda self: periods.has_settleable(self.month))
        @rule(early=st.sampled_from([False, False, False, True]), by=st.sampled_from([0, 0, 1]))
        def settle(self, early, by):
            """A settlement run of the month on the first day it may run (or, refused, the
            day before), by the officer or an approver (who then may not approve it)."""
            day = periods.settles_from(self.month) - timedelta(days=1 if early else 0)
            report = self.attempt(
                lambda: run.run_settlement(self.month, actor=self.staff(by), today=day)
            )
            assert (report is None) == early
            if report and report["lines_added"]:
                event("settle: lines added")

        @precondition(_open_statement)
        @rule(pick=st.integers(0, 10), who=st.sampled_from([0, 1, 1, 2, 2]))
        def approve(self, pick, who):
            waiting = self.statements("prepared", "awaiting_second")
            if waiting:
                s = waiting[pick % len(waiting)]
                if self.attempt(lambda: approval.approve(s, actor=self.staff(who))):
                    netted = " netting a clawback" if s.clawback_fen else ""
                    event(f"approve: {s.status}{netted}")

        @precondition(_open_statement)
        @rule(pick=st.integers(0, 10), who=st.integers(0, 2))
        def reject(self, pick, who):
            waiting = self.statements("prepared", "awaiting_second")
            if waiting:
                s = waiting[pick % len(waiting)]
                if self.attempt(lambda: approval.reject(s, actor=self.staff(who), reason="不符")):
                    event("reject")

        @precondition(_waiting_payment)
        @rule(answer=st.sampled_from(["later", "now", "now"]), outcomes=OUTCOMES)
        def batch(self, answer, outcomes):
            """A bank batch of everything waiting; the bank answers now or in a later step."""
            made = self.attempt(lambda: bank_files.create_batch(actor=world.officer))
            if made is None:
                return
            retried = db.session.scalar(
                sa.select(sa.func.count()).where(
                    BankTransfer.statement_id.in_([t.statement_id for t in made.transfers]),
                    BankTransfer.status == "failed",
                )
            )
            event("batch retrying a failed line" if retried else "batch")
            if answer == "now":
                self.answer(made.id, outcomes)

        @precondition(_sent_transfer)
        @rule(pick=st.integers(0, 10), outcomes=OUTCOMES)
        def bank_result(self, pick, outcomes):
            """The bank's answer for a batch sent earlier."""
            batches = sorted(
                set(
                    db.session.scalars(
                        sa.select(BankTransfer.batch_id).where(BankTransfer.status == "sent")
                    )
                )
            )
            if batches:
                self.answer(batches[pick % len(batches)], outcomes)

        def answer(self, batch_id: int, outcomes: list[str]) -> None:
            """A result file for the batch's lines still sent: each paid, failed (it goes
            into the next batch) or left out of this file (a later file tells)."""
            sent = list(
                db.session.scalars(
                    sa.select(BankTransfer)
                    .where(BankTransfer.batch_id == batch_id, BankTransfer.status == "sent")
                    .order_by(BankTransfer.line_no)
                )
            )
            rows = [
                (
                    t.reference,
                    t.payee_account_number,
                    t.amount_fen,
                    status,
                    "账户已销户" if status == "失败" else "",
                )  # fmt: skip
                for t, status in zip(sent, outcomes + ["成功"] * len(sent), strict=False)
                if status != "omit"
            ]
            if not rows:
                return
            batch = db.session.get(BankBatch, batch_id)
            data = result_csv(rows)
            outcome = self.attempt(
                lambda: bank_results.import_result(batch, data, "result.csv", actor=world.officer)
            )
            assert outcome is not None and not outcome.exceptions
            self.last_result = (batch_id, data)
            event(f"bank result: paid {bool(outcome.paid)}, failed {bool(outcome.failed)}")

        @precondition(lambda self: getattr(self, "last_result", None) is not None)
        @rule()
        def reimport(self):
            """The same result file again: refused, nothing changes."""
            if getattr(self, "last_result", None):
                batch_id, data = self.last_result
                batch = db.session.get(BankBatch, batch_id)
                outcome = self.attempt(
                    lambda: bank_results.import_result(
                        batch, data, "again.csv", actor=world.officer
                    )
                )
                assert outcome is None

        @precondition(_settled_redemption)
        @rule(pick=st.integers(0, 10), days=st.integers(0, 40))
        def clawback(self, pick, days):
            """The bureau reverses a redemption whose statement is approved or paid."""
            settled = list(
                db.session.scalars(
                    sa.select(Redemption)
                    .join(StatementLine, StatementLine.redemption_id == Redemption.id)
                    .join(Statement, Statement.id == StatementLine.statement_id)
                    .where(
                        Redemption.status == "redeemed",
                        Statement.status.in_(("approved", "paid")),
                    )
                    .order_by(Redemption.id)
                )
            )
            if settled:
                r = settled[pick % len(settled)]
                before = ledger.balances(["vouchers:outstanding", DISTRICT])
                done = self.attempt(
                    lambda: (
                        redemption.reverse(
                            r,
                            actor=world.approver,
                            reason="追回",
                            now=now_utc() + timedelta(days=days),
                        )
                        or True
                    )
                )
                assert done
                event("clawback")
                db.session.refresh(r)
                assert r.status == "reversed"
                # Nothing went back onto the (past) voucher or to the district.
                assert ledger.balances(["vouchers:outstanding", DISTRICT]) == before

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
                if fen < 0 and not code.startswith(SOURCES)
            ]
            assert negative == [] and check.negative_accounts == []

        @invariant()
        def vouchers_agree_with_the_ledger(self):
            balances = ledger.balances()
            vouchers = self.vouchers()
            assert all(v.balance_fen >= 0 and v.held_fen >= 0 for v in vouchers)
            assert balances["vouchers:outstanding"] == sum(v.balance_fen for v in vouchers)
            assert balances["vouchers:held"] == sum(v.held_fen for v in vouchers)
            settled_ids = set(
                db.session.scalars(
                    sa.select(StatementLine.redemption_id)
                    .join(Statement, Statement.id == StatementLine.statement_id)
                    .where(Statement.status.in_(("approved", "paid")))
                )
            )
            redeemed = self.redemptions("redeemed")
            assert balances["redeemed:unsettled"] == sum(
                r.subsidy_fen for r in redeemed if r.id not in settled_ids
            )
            # Every fen issued is spendable, held, redeemed, or went back to the district.
            issued = sum(v.face_value_fen for v in vouchers)
            assert issued == _entry_total("issue", "vouchers:outstanding")
            returned = (
                _entry_total("expire", DISTRICT)
                + _entry_total("revoke", DISTRICT)
                + _entry_total("reverse", DISTRICT)
                + _entry_total("release", DISTRICT)
            )
            settled_out = -_entry_total("settle", "redeemed:unsettled")
            assert issued == (
                balances["vouchers:outstanding"]
                + balances["vouchers:held"]
                + balances["redeemed:unsettled"]
                + returned
                + settled_out
            )
            # Every account together is zero; the elders' card co-payments are a side of
            # their own (zero by themselves); and the funding that came in is exactly what
            # the pool side holds, in whatever bucket (BRIEF books).
            assert sum(balances.values()) == 0
            copay = {
                k: v
                for k, v in balances.items()
                if k in COPAY_SIDE or (k.startswith("provider:") and k.endswith(":copay"))
            }
            assert sum(copay.values()) == 0, copay
            funded = -(balances["funding:central"] + balances["funding:local"])
            assert funded == sum(
                v for k, v in balances.items() if not k.startswith("funding:") and k not in copay
            )

        @invariant()
        def statements_agree_with_the_books(self):
            balances = ledger.balances()
            # No redemption in two statements; only a clawed-back one is reversed in one.
            twice = db.session.scalars(
                sa.select(StatementLine.redemption_id)
                .group_by(StatementLine.redemption_id)
                .having(sa.func.count() > 1)
            ).all()
            assert twice == []
            lines = db.session.execute(
                sa.select(StatementLine, Statement.status, Redemption.status)
                .join(Statement, Statement.id == StatementLine.statement_id)
                .join(Redemption, Redemption.id == StatementLine.redemption_id)
            ).all()
            for line, statement_status, redemption_status in lines:
                assert statement_status != "rejected"
                assert redemption_status == "redeemed" or (
                    redemption_status == "reversed" and statement_status in ("approved", "paid")
                ), (line.redemption_id, statement_status, redemption_status)
            payable, copay, settled, paid_out = {}, {}, 0, 0
            for s in self.statements("prepared", "awaiting_second", "approved", "paid"):
                mine = [line for line, *_ in lines if line.statement_id == s.id]
                assert (s.line_count, s.subsidy_fen, s.card_copay_fen) == (
                    len(mine),
                    sum(x.subsidy_fen for x in mine),
                    sum(x.card_copay_fen for x in mine),
                )
                if s.status in ("approved", "paid"):
                    assert s.lines_hash == statement_hash(s)
                    assert s.approved_by_user_id not in (None, s.prepared_by_user_id)
                    # Above the threshold at its first approval, a second person approved it
                    # (a reversal may shrink it afterwards, never grow it).
                    if s.subsidy_fen + s.card_copay_fen > SECOND_APPROVAL_ABOVE_FEN:
                        assert s.second_approved_by_user_id is not None
                    assert s.second_approved_by_user_id not in (
                        s.prepared_by_user_id,
                        s.approved_by_user_id,
                    )
                # No statement is paid twice: one live transfer at most, one paid at most,
                # and 'paid' exactly when the bank paid it and the books posted it once.
                transfers = db.session.scalars(
                    sa.select(BankTransfer.status).where(BankTransfer.statement_id == s.id)
                ).all()
                assert sum(t != "failed" for t in transfers) <= 1
                pays = _sum(
                    sa.select(sa.func.count())
                    .select_from(JournalEntry)
                    .where(
                        JournalEntry.kind == "pay",
                        JournalEntry.cause_type == "statements",
                        JournalEntry.cause_id == str(s.id),
                    )
                )
                paid = s.status == "paid"
                assert (transfers.count("paid"), pays, s.paid_at is not None) == (
                    int(paid),
                    int(paid),
                    paid,
                )
                if s.status == "approved":
                    key = s.provider_id
                    payable[key] = payable.get(key, 0) + s.subsidy_fen - s.clawback_fen
                    copay[key] = copay.get(key, 0) + s.card_copay_fen
                if paid:
                    settled += s.subsidy_fen - s.clawback_fen
                    paid_out += s.card_copay_fen
            # Each provider is owed Σ(subsidy − clawback) of its approved, unpaid statements.
            for code, fen in balances.items():
                if code.startswith("provider:") and code.endswith(":payable"):
                    assert fen == payable.get(_provider_of(code), 0), code
                if code.startswith("provider:") and code.endswith(":copay"):
                    assert fen == copay.get(_provider_of(code), 0), code
            assert balances["settled"] == settled
            assert balances["copay:paid_out"] == paid_out
            # Fee refunds: reserved once when first sent, paid once.
            refunds = db.session.scalars(sa.select(FeeRefund)).all()
            sent_ids = set(
                db.session.scalars(
                    sa.select(BankTransfer.fee_refund_id).where(
                        BankTransfer.fee_refund_id.is_not(None)
                    )
                )
            )
            assert balances["fee_refunds:paid"] == sum(
                r.amount_fen for r in refunds if r.status == "paid"
            )
            assert balances["fee_refunds:payable"] == sum(
                r.amount_fen for r in refunds if r.status == "owed" and r.id in sent_ids
            )

    run_state_machine_as_test(
        VoucherLedger,
        settings=settings(
            max_examples=25,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )
    print("state machine reached:", dict(sorted(seen.items())))
