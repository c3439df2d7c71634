"""Maker-checker approval of statements.

Only a city-wide ``bureau_approver`` approves or rejects, never a person who prepared lines
of the statement (``preparers``: its ``prepared_by``, the latest person to run it, and the
actor of every 'statement.prepare' audit row of it; the CHECK constraints back the
``prepared_by`` part). A statement only the scheduled job prepared has the job as its maker:
any approver may check it. The approver confirms what they were shown (the payable amount and
the statement's ``fingerprint``): a statement that changed since is refused. A statement
paying more than the threshold of the ``SettlementRules`` in force on the approval day needs
two different approvers: the first approval moves it to 'awaiting_second' (a line leaving
it then sends it back to 'prepared', its first approval cleared: ``guard.take_out``).
Nobody acts twice on one statement. The statement's row is locked (FOR UPDATE) first, so two
approvers at once take turns and the second sees what the first did. A statement holding a
line with an open flag is refused (flags take their line out as they are raised; this is the
backstop).

The final approval re-snapshots the payee from the provider, nets the provider's clawbacks
(``books``), freezes the statement (status 'approved'; the triggers refuse any later change
of its lines or totals), stores the hash of its lines and posts the "settle" entry. A
rejection deletes the lines (their redemptions are settled by the next run) and keeps the
totals and the reason.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from eldercare import audit
from eldercare.audit import AuditLog
from eldercare.db import db
from eldercare.errors import Conflict, InvalidInput, PermissionDenied
from eldercare.timeutil import local_today, now_utc
from marketplace.models import Provider
from vouchers.settlement import books
from vouchers.settlement.models import SettlementRules, Statement, StatementLine
from vouchers.settlement.statements import hashing

DEFAULT_THRESHOLD_FEN = 100_000_000  # 1 million yuan, if no rule row exists


def may_approve(user) -> bool:
    return (
        user is not None
        and user.has_role("bureau_approver")
        and getattr(user, "district_id", None) is None
    )


def may_prepare(user) -> bool:
    return (
        user is not None
        and user.has_role("bureau_officer", "bureau_approver")
        and getattr(user, "district_id", None) is None
    )


def threshold_fen(day) -> int:
    found = db.session.scalar(
        sa.select(SettlementRules.second_approval_above_fen)
        .where(SettlementRules.effective_from <= day)
        .order_by(SettlementRules.effective_from.desc())
        .limit(1)
    )
    return DEFAULT_THRESHOLD_FEN if found is None else int(found)


def _lock(statement: Statement) -> None:
    db.session.refresh(statement, with_for_update=True)


def preparers(statement: Statement) -> set[int]:
    """Everyone who prepared lines of the statement: its ``prepared_by`` (the latest person
    to run it) and the actor of every 'statement.prepare' audit row of it (the run that
    opened it and every rerun that added lines; the audit trail is append-only). A
    statement only the scheduled job prepared has the job as its maker: no person, so any
    approver may check it."""
    people = set(
        db.session.scalars(
            sa.select(AuditLog.actor_user_id).where(
                AuditLog.object_type == "statements",
                AuditLog.object_id == str(statement.id),
                AuditLog.action == "statement.prepare",
                AuditLog.actor_user_id.is_not(None),
            )
        )
    )
    if statement.prepared_by_user_id is not None:
        people.add(statement.prepared_by_user_id)
    return people


def fingerprint(statement: Statement) -> str:
    """What an approver saw, in a few characters: the statement's totals and which lines it
    holds (their count, the sum and the largest of their redemption ids). The page and the
    API carry it with the payable amount; approval refuses if either changed since."""
    ids = db.session.execute(
        sa.select(
            sa.func.coalesce(sa.func.sum(StatementLine.redemption_id), 0),
            sa.func.coalesce(sa.func.max(StatementLine.redemption_id), 0),
        ).where(StatementLine.statement_id == statement.id)
    ).one()
    text = (
        f"{statement.id}|{statement.status}|{statement.line_count}|{statement.subsidy_fen}|"
        f"{statement.card_copay_fen}|{statement.clawback_fen}|{int(ids[0])}|{int(ids[1])}"
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _flagged_lines(statement: Statement) -> int:
    from vouchers.integrity.models import RedemptionFlag

    return db.session.scalar(
        sa.select(sa.func.count())
        .select_from(StatementLine)
        .join(RedemptionFlag, RedemptionFlag.redemption_id == StatementLine.redemption_id)
        .where(StatementLine.statement_id == statement.id, RedemptionFlag.status == "open")
    )


def what_applies(statement: Statement, user) -> str | None:
    """Why ``user`` may not approve or reject ``statement`` now, or None (also for pages)."""
    if not may_approve(user):
        return _l("Only a city-wide bureau approver can approve or reject a statement.")
    if statement.status not in ("prepared", "awaiting_second"):
        return _l(
            "This statement is %(status)s: it can no longer be approved or rejected.",
            status=statement.status,
        )
    if user.id in preparers(statement):
        return _l("You prepared this statement: another approver must check it.")
    if statement.status == "awaiting_second" and user.id == statement.approved_by_user_id:
        return _l("You approved this statement already: a second, different approver must.")
    return None


def _refuse(statement: Statement, user) -> None:
    why = what_applies(statement, user)
    if why is None:
        return
    if may_approve(user) and statement.status not in ("prepared", "awaiting_second"):
        raise Conflict(why)  # the statement's state, whoever asks
    raise PermissionDenied(why)


CHANGED = _l("The statement changed since you opened it: review it again.")


def _check_seen(statement: Statement, expected_payable_fen, expected_fingerprint) -> None:
    """Refuse (Conflict) when what the approver was shown is no longer what is approved."""
    if expected_payable_fen is not None and expected_payable_fen != statement.payable_fen:
        raise Conflict(CHANGED)
    if expected_fingerprint is not None and expected_fingerprint != fingerprint(statement):
        raise Conflict(CHANGED)


def approve(
    statement: Statement,
    *,
    actor,
    expected_payable_fen: int | None = None,
    expected_fingerprint: str | None = None,
    now: datetime | None = None,
) -> Statement:
    """Approve (first or final). The page and the API pass what they showed (the payable
    amount, and the page its ``fingerprint``): if the statement changed since, nothing is
    approved (Conflict). A statement holding a line with an open flag is refused (flags
    take their line out as they are raised; this is the backstop)."""
    now = now or now_utc()
    _lock(statement)
    _refuse(statement, actor)
    _check_seen(statement, expected_payable_fen, expected_fingerprint)
    if _flagged_lines(statement):
        raise Conflict(
            _l(
                "A redemption in this statement is held out of settlement by an open flag: "
                "decide the flag first."
            )
        )
    before = statement.status
    threshold = threshold_fen(local_today(now))
    if statement.status == "prepared" and statement.payable_fen > threshold:
        statement.approved_by_user_id = actor.id
        statement.approved_at = now
        statement.status = "awaiting_second"
        db.session.flush()
        audit.record(
            "statement.approve_first",
            statement,
            actor=actor,
            before={"status": before},
            after={"status": statement.status, "payable_fen": statement.payable_fen},
        )
        return statement
    if statement.status == "prepared":
        statement.approved_by_user_id, statement.approved_at = actor.id, now
    else:
        statement.second_approved_by_user_id, statement.second_approved_at = actor.id, now
    provider = db.session.get(Provider, statement.provider_id)
    statement.payee_account_name = provider.bank_account_name
    statement.payee_bank_name = provider.bank_name
    statement.payee_account_number = provider.bank_account_number
    # The provider's receivable row is locked by the read: two approvals for one provider
    # cannot net the same clawback twice.
    statement.clawback_fen = min(books.receivable_fen(statement.provider_id), statement.subsidy_fen)
    db.session.flush()
    # The hash covers the totals, the payee and the lines, not the status: computed with
    # everything set, it is stored in the same UPDATE that freezes the statement.
    statement.lines_hash = hashing.statement_hash(statement)
    statement.status = "approved"
    db.session.flush()
    books.post_settle(statement, actor_id=actor.id)
    audit.record(
        "statement.approve",
        statement,
        actor=actor,
        before={"status": before},
        after={
            "status": "approved",
            "subsidy_fen": statement.subsidy_fen,
            "card_copay_fen": statement.card_copay_fen,
            "clawback_fen": statement.clawback_fen,
            "payable_fen": statement.payable_fen,
            "lines_hash": statement.lines_hash,
        },
    )
    return statement


def reject(statement: Statement, *, actor, reason: str, now: datetime | None = None) -> Statement:
    reason = reason.strip() if isinstance(reason, str) else ""
    if not reason:
        raise InvalidInput(details={"reason": _l("Say why the statement is rejected.")})
    now = now or now_utc()
    _lock(statement)
    _refuse(statement, actor)
    before = statement.status
    db.session.execute(
        sa.delete(StatementLine)
        .where(StatementLine.statement_id == statement.id)
        .execution_options(synchronize_session=False)
    )
    statement.status = "rejected"
    statement.rejected_by_user_id, statement.rejected_at = actor.id, now
    statement.rejection_reason = reason[:2000]
    db.session.flush()
    audit.record(
        "statement.reject",
        statement,
        actor=actor,
        before={"status": before},
        after={"status": "rejected", "reason": statement.rejection_reason},
    )
    return statement
