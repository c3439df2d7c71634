"""Flags on redemptions: raised, cleared, rejected. An open flag holds its redemption out of
settlement (a settlement run skips redemptions with one); a bureau officer decides it:

- ``raise_flag``: a rule, or a bureau officer by hand (rule ``"bureau"``, the officer's reason
  in the evidence), holds a completed redemption out of settlement: its line leaves a
  statement not yet approved (settlement's guard, ``steps.settlement_guard.hold_out``); in
  an approved statement it is already settled (``flag.settled``): rejecting the flag then
  claws the subsidy back from the provider;
- ``clear``: nothing wrong: the redemption is settled with the next run (unless it was
  reversed meanwhile: a reversal leaves its flags open, since a provider reversing a
  flagged redemption is itself worth a look, and ``is_held`` says nothing is held);
- ``reject``: the service was not delivered as claimed: the redemption is reversed through the
  normal path (``vouchers.redemption.payments.reverse``: a card co-payment is refunded, and a
  redemption already settled is clawed back once settlement's guard is in place).

A redemption may carry several flags (one per rule that found it, and an officer's own hold,
rule ``"bureau"``); it is held while any is open. Clearing one leaves the others open (the
page says how many still hold it). Rejecting one reverses the redemption once and closes
its other open flags as rejected with the same reason, each audited as rejected "with flag
#n" (``with_flag``): the redemption they judged no longer exists to settle.

Every step is audited, with the officer's reason. A decision is taken once: the flag moves out
of 'open' with a conditional UPDATE, so of two officers deciding at the same moment one wins
and the other is told someone else decided (``Conflict``), and nothing of theirs is kept.

Who: bureau officers and approvers; a district's officers only for its elders (others' flags
look missing, as everywhere). Providers never see or decide flags.

Lock order (adds to the one in ``vouchers.pool.ledger``): raising locks the redemption's row
first (as every money step on it does), then (settlement's guard) the month row FOR SHARE and
the statement row, and then inserts the flag; a decision locks every flag row of the
redemption in id order (``_lock_siblings``: SELECT … ORDER BY id FOR UPDATE), then moves its
flag (the conditional UPDATE) and, to reject, the other open ones, and then locks the
redemption's row through the reversal. Two officers deciding two flags of one redemption
take the flags in the same order, so they queue instead of deadlocking; nothing locks a
flag after its redemption's row, so the two cannot wait for each other. A
reject holds the flag's row while the gateway refunds a card co-payment: only another
decision on the same flag waits for that.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext

from eldercare import audit
from eldercare.accounts import BUREAU_ROLES, User
from eldercare.auth import ensure_in_district
from eldercare.db import db
from eldercare.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from eldercare.timeutil import now_utc
from vouchers.integrity.models import RedemptionFlag
from vouchers.models import Redemption, Voucher
from vouchers.redemption import payments
from vouchers.redemption import steps as redemptions

RULE_BUREAU = "bureau"
# What each rule means, in the reader's language (anomaly rules add theirs).
RULE_LABELS = {RULE_BUREAU: _l("Held by a bureau officer")}
REASON_MAX = 2000
# Only a completed redemption is settled, so only one can be held out of settlement.
FLAGGABLE_STATUSES = ("redeemed",)

NOT_BUREAU = _l("Only bureau officers can hold a redemption out of settlement or decide a flag.")
REASON_NEEDED = _l("Give the reason; it is kept in the audit trail.")
REASON_TOO_LONG = _l("Keep the reason under 2000 characters.")
ALREADY_HELD = _l("This redemption is already held out of settlement.")
NOT_FLAGGABLE = _l("Only a completed redemption can be held out of settlement.")
ALREADY_DECIDED = _l(
    "Another officer decided this flag a moment ago; nothing was changed. Reload to see it."
)


def rule_label(code: str) -> str:
    """A rule's name in the reader's language (its code if no rule has it any more)."""
    from vouchers.integrity.rules import RULES

    if code in RULE_LABELS:
        return str(RULE_LABELS[code])
    rule = RULES.get(code)
    return str(rule.label) if rule is not None else code


def explain(code: str, evidence: dict | None, *, district_id: int | None = None) -> str:
    """A flag's evidence in words, in the reader's language: the officer's reason for a hold
    by hand, the rule's ``describe`` otherwise (evidence of an older shape the rule no longer
    reads is shown as its data rather than failing the page). ``district_id``: the reader's
    district (None: city-wide), see ``evidence_for``."""
    from vouchers.integrity.rules import RULES

    evidence = evidence_for(evidence, district_id)
    if code == RULE_BUREAU:
        return str(evidence.get("reason", ""))
    words = None
    rule = RULES.get(code)
    if rule is not None:
        try:
            words = str(rule.describe(evidence))
        except (KeyError, TypeError, ValueError):
            pass
    if words is None:
        words = "; ".join(f"{key}: {value}" for key, value in sorted(evidence.items()))
    hidden = evidence.get(OTHER_DISTRICTS)
    if hidden:
        words += " " + ngettext(
            "And %(num)s redemption in other districts.",
            "And %(num)s redemptions in other districts.",
            hidden,
        )
    return words


# A district reader's evidence: how many redemptions of other districts were left out.
OTHER_DISTRICTS = "other_districts"
# Where a rule pairs a redemption with a place (impossible_travel): the other elder's place
# goes with them.
_PLACE_OF = {"earlier": "from", "later": "to"}


def _is_fact(value) -> bool:
    """A redemption as ``rules.base.facts_of`` describes it."""
    return isinstance(value, dict) and "id" in value and "at" in value


def evidence_for(evidence: dict | None, district_id: int | None) -> dict:
    """The evidence as a reader may see it, for the words (``explain``) and the API alike.
    City-wide (``district_id`` None): all of it. A district's reader: the redemptions of
    other districts a group rule names (a shared phone, a carer's overlapping visits or
    travel: elders of any district) are left out, and counted in ``"other_districts"``; a
    single one (a pair's other visit) becomes a bare ``{"other_district": true}`` with its
    place. Each item carries its district (``facts_of``); an item of older evidence without
    one is looked up (one query)."""
    evidence = dict(evidence or {})
    if district_id is None:
        return evidence
    facts = [v for v in evidence.values() if _is_fact(v)]
    for value in evidence.values():
        if isinstance(value, list):
            facts += [item for item in value if _is_fact(item)]
    for group in evidence.get("groups") or []:  # shared_device: each group's redemptions
        if isinstance(group, dict):
            facts += [item for item in group.get("redemptions") or [] if _is_fact(item)]
    districts = _districts_of(facts)

    def foreign(item) -> bool:
        return districts.get(item["id"]) != district_id

    hidden: set = set()  # ids: a redemption in two groups is one redemption

    def kept(items: list) -> list:
        hidden.update(item["id"] for item in items if _is_fact(item) and foreign(item))
        return [item for item in items if not (_is_fact(item) and foreign(item))]

    for key, value in list(evidence.items()):
        if _is_fact(value) and foreign(value):
            evidence[key] = {"other_district": True}
            if key in _PLACE_OF:
                evidence.pop(_PLACE_OF[key], None)
            hidden.add(value["id"])
        elif isinstance(value, list):
            evidence[key] = kept(value)
    if isinstance(evidence.get("groups"), list):
        evidence["groups"] = [
            group | {"redemptions": kept(group.get("redemptions") or [])}
            if isinstance(group, dict)
            else group
            for group in evidence["groups"]
        ]
    if hidden:
        evidence[OTHER_DISTRICTS] = len(hidden)
    return evidence


def _districts_of(facts: list[dict]) -> dict:
    districts = {item["id"]: item["district"] for item in facts if "district" in item}
    missing = {item["id"] for item in facts if "district" not in item}
    missing = [i for i in missing if isinstance(i, int)]
    if missing:
        districts |= dict(
            db.session.execute(
                sa.select(Redemption.id, Voucher.district_id)
                .join(Voucher, Voucher.id == Redemption.voucher_id)
                .where(Redemption.id.in_(missing))
            ).all()
        )
    return districts


def _district_of(redemption: Redemption) -> int:
    return db.session.scalar(
        sa.select(Voucher.district_id).where(Voucher.id == redemption.voucher_id)
    )


def _require_officer(actor: User | None, redemption: Redemption) -> None:
    """A bureau officer who covers the redemption's district. A district officer asking about
    another district's redemption finds nothing (``NotFound``), as on every bureau page."""
    if actor is None or not actor.has_role(*BUREAU_ROLES):
        raise PermissionDenied(NOT_BUREAU)
    ensure_in_district(_district_of(redemption), user=actor)


def clean_reason(reason: Any) -> str:
    text = reason.strip() if isinstance(reason, str) else ""
    if not text:
        raise InvalidInput(details={"reason": REASON_NEEDED})
    if len(text) > REASON_MAX:
        raise InvalidInput(details={"reason": REASON_TOO_LONG})
    return text


def open_flag_of(redemption_id: int) -> RedemptionFlag | None:
    return db.session.scalar(
        sa.select(RedemptionFlag)
        .where(RedemptionFlag.redemption_id == redemption_id, RedemptionFlag.status == "open")
        .order_by(RedemptionFlag.id)
        .limit(1)
    )


def flag_in_scope(flag_id: int, user: User) -> RedemptionFlag:
    """The flag, if the user may see it (bureau, in their district); otherwise NotFound."""
    flag = db.session.get(RedemptionFlag, flag_id)
    if flag is None:
        raise NotFound()
    _require_officer(user, db.session.get(Redemption, flag.redemption_id))
    return flag


def _flagged_by(redemption_id: int, rule: str) -> bool:
    return (
        db.session.scalar(
            sa.select(RedemptionFlag.id)
            .where(RedemptionFlag.redemption_id == redemption_id, RedemptionFlag.rule == rule)
            .limit(1)
        )
        is not None
    )


def raise_flag(
    redemption: Redemption, *, rule: str, evidence: dict | None, actor: User | None
) -> RedemptionFlag | None:
    """Hold a completed redemption out of settlement. By hand (rule ``"bureau"``) the actor
    must be a bureau officer covering its district and give a reason (``evidence["reason"]``);
    an automatic rule (no actor) brings its evidence as data, and flags a redemption once
    (None when it did already, or when the redemption is no longer completed). One open hold
    by hand per redemption: the redemption's row is locked first, so two officers at once
    make one flag."""
    evidence = dict(evidence or {})
    if rule == RULE_BUREAU or actor is not None:
        _require_officer(actor, redemption)
    if rule == RULE_BUREAU:
        evidence["reason"] = clean_reason(evidence.get("reason"))
    redemptions.lock_row(redemption)
    db.session.refresh(redemption)  # as it stands now, under the lock
    if redemption.status not in FLAGGABLE_STATUSES:
        if rule != RULE_BUREAU:
            return None  # reversed meanwhile: nothing left to hold
        raise Conflict(NOT_FLAGGABLE)
    if rule == RULE_BUREAU:
        if open_flag_of(redemption.id) is not None:
            raise Conflict(ALREADY_HELD)
    elif _flagged_by(redemption.id, rule):
        return None  # a rule flags a redemption once, whatever was decided
    # Out of its statement if that is not yet approved (settlement's guard, under the month
    # and statement locks a settlement run and an approval take): a flagged redemption is
    # never approved while its flag is open. In an approved statement it stays: settled.
    guard = redemptions.settlement_guard
    held = guard.hold_out(redemption, actor) if guard is not None else None
    if rule != RULE_BUREAU and _flagged_by(redemption.id, rule):
        # A settlement run held the month's lock (hold_out waited for it) and flagged it by
        # the same rule meanwhile: one flag (a review found the death feed parked on this).
        return None
    flag = RedemptionFlag(
        redemption_id=redemption.id,
        rule=rule[:40],
        evidence=evidence,
        status="open",
        raised_by_user_id=actor.id if actor is not None else None,
        raised_at=now_utc(),
    )
    try:
        with db.session.begin_nested():
            db.session.add(flag)
    except sa.exc.IntegrityError:
        if rule == RULE_BUREAU or not _flagged_by(redemption.id, rule):
            raise
        return None  # the same rule's flag committed a moment ago by another path
    audit.record(
        "redemption_flag.raise",
        flag,
        district_id=_district_of(redemption),
        actor=actor,
        after={
            "redemption": redemption.id,
            "rule": flag.rule,
            "evidence": evidence,
            "statement": held,
        },
    )
    flag.settled = held == "settled"  # for the page: say it was paid already
    return flag


def _lock_siblings(flag: RedemptionFlag) -> None:
    """Every flag of the flag's redemption, locked in id order (PostgreSQL; SQLite has one
    writer anyway): deciders of different flags of one redemption take them in the same
    order."""
    db.session.execute(
        sa.select(RedemptionFlag.id)
        .where(RedemptionFlag.redemption_id == flag.redemption_id)
        .order_by(RedemptionFlag.id)
        .with_for_update()
    ).all()


def _decide(flag: RedemptionFlag, status: str, reason: str, actor: User) -> None:
    """The once-only gate: only one transaction moves a flag out of 'open'. On PostgreSQL a
    second decider waits here for the first to commit, then finds it decided."""
    _lock_siblings(flag)
    moved = db.session.execute(
        sa.update(RedemptionFlag)
        .where(RedemptionFlag.id == flag.id, RedemptionFlag.status == "open")
        .values(status=status, decided_by_user_id=actor.id, decided_at=now_utc(), reason=reason)
        .execution_options(synchronize_session=False)
    ).rowcount
    if moved != 1:
        raise Conflict(ALREADY_DECIDED)
    db.session.refresh(flag)


def clear(flag: RedemptionFlag, *, reason: str, actor: User) -> None:
    """Nothing wrong: the redemption goes into the next settlement run (a reversed one,
    whose flags a reversal leaves open for a look, has nothing left to settle)."""
    redemption = db.session.get(Redemption, flag.redemption_id)
    _require_officer(actor, redemption)
    reason = clean_reason(reason)
    _decide(flag, "cleared", reason, actor)
    audit.record(
        "redemption_flag.clear",
        flag,
        district_id=_district_of(redemption),
        actor=actor,
        before={"status": "open"},
        after={"status": "cleared", "redemption": redemption.id, "reason": reason},
    )


def reject(flag: RedemptionFlag, *, reason: str, actor: User) -> None:
    """The service was not delivered as claimed: the flag is rejected and the redemption
    reversed through the normal path (card co-payment refunded; subsidy back to the voucher
    or the district; a settled one clawed back once settlement's guard exists). A refusal of
    the reversal (e.g. its window closed) refuses the whole decision: the flag stays open.
    A redemption the provider reversed meanwhile is not reversed twice."""
    redemption = db.session.get(Redemption, flag.redemption_id)
    _require_officer(actor, redemption)
    reason = clean_reason(reason)
    _decide(flag, "rejected", reason, actor)
    db.session.refresh(redemption)
    reversed_now = redemption.status != "reversed"
    # Audited first: the reversal commits (before it asks the gateway for a refund), and
    # the decision, its audit row and the reversal commit together.
    audit.record(
        "redemption_flag.reject",
        flag,
        district_id=_district_of(redemption),
        actor=actor,
        before={"status": "open"},
        after={
            "status": "rejected",
            "redemption": redemption.id,
            "reason": reason,
            "reversed": reversed_now,
        },
    )
    _close_siblings(flag, reason, actor, redemption)
    if reversed_now:
        payments.reverse(redemption, actor=actor, reason=reason)


def _close_siblings(
    flag: RedemptionFlag, reason: str, actor: User, redemption: Redemption
) -> list[int]:
    """The redemption's other open flags, rejected with the same decision (rows already
    locked by ``_decide``): one UPDATE, one audit row each, noted "with flag #n"."""
    closed = [
        row[0]
        for row in db.session.execute(
            sa.update(RedemptionFlag)
            .where(
                RedemptionFlag.redemption_id == flag.redemption_id,
                RedemptionFlag.status == "open",
                RedemptionFlag.id != flag.id,
            )
            .values(
                status="rejected", decided_by_user_id=actor.id, decided_at=now_utc(), reason=reason
            )
            .returning(RedemptionFlag.id)
            .execution_options(synchronize_session=False)
        )
    ]
    if not closed:
        return []
    for loaded in db.session.identity_map.values():
        if isinstance(loaded, RedemptionFlag) and loaded.id in closed:
            db.session.expire(loaded)
    district = _district_of(redemption)
    audit.record_many(
        {
            "action": "redemption_flag.reject",
            "object_type": "redemption_flags",
            "object_id": closed_id,
            "district_id": district,
            "actor": actor,
            "before": {"status": "open"},
            "after": {
                "status": "rejected",
                "redemption": redemption.id,
                "reason": reason,
                "with_flag": flag.id,
            },
        }
        for closed_id in sorted(closed)
    )
    return closed


def still_holding(flag: RedemptionFlag) -> int:
    """How many other open flags hold the flag's redemption out of settlement."""
    return db.session.scalar(
        sa.select(sa.func.count())
        .select_from(RedemptionFlag)
        .where(
            RedemptionFlag.redemption_id == flag.redemption_id,
            RedemptionFlag.status == "open",
            RedemptionFlag.id != flag.id,
        )
    )


def flags_of(redemption_id: int) -> list[RedemptionFlag]:
    """Every flag of a redemption, oldest first (for its page)."""
    return list(
        db.session.scalars(
            sa.select(RedemptionFlag)
            .where(RedemptionFlag.redemption_id == redemption_id)
            .order_by(RedemptionFlag.raised_at, RedemptionFlag.id)
        )
    )


def flag_query(
    user: User,
    *,
    status: str | None = "open",
    rule: str | None = None,
    month: date | None = None,
) -> sa.Select:
    """The flags the user may see (a district's officers: their district's), with their
    redemption, oldest first; ``status`` (None: any), ``rule`` and ``month`` (the voucher's)
    narrow it. Paged by the caller (OFFSET/LIMIT)."""
    statement = (
        sa.select(RedemptionFlag, Redemption)
        .join(Redemption, Redemption.id == RedemptionFlag.redemption_id)
        .join(Voucher, Voucher.id == Redemption.voucher_id)
        .order_by(RedemptionFlag.raised_at, RedemptionFlag.id)
    )
    return _narrowed(statement, user, status=status, rule=rule, month=month)


def _narrowed(statement, user, *, status, rule, month):
    if status is not None:
        statement = statement.where(RedemptionFlag.status == status)
    if rule is not None:
        statement = statement.where(RedemptionFlag.rule == rule)
    if month is not None:
        statement = statement.where(Voucher.month == month)
    if user.district_id is not None:
        statement = statement.where(Voucher.district_id == user.district_id)
    return statement


def counts_by_rule(
    user: User, *, status: str | None = "open", month: date | None = None
) -> dict[str, int]:
    """How many flags of each rule the user may see (one GROUP BY)."""
    statement = (
        sa.select(RedemptionFlag.rule, sa.func.count())
        .join(Redemption, Redemption.id == RedemptionFlag.redemption_id)
        .join(Voucher, Voucher.id == Redemption.voucher_id)
        .group_by(RedemptionFlag.rule)
    )
    statement = _narrowed(statement, user, status=status, rule=None, month=month)
    return {rule: count for rule, count in db.session.execute(statement)}


def open_flags(user: User, *, limit: int = 200) -> list[tuple[RedemptionFlag, Redemption]]:
    """The open flags the user may see, oldest first (a district's officers: theirs)."""
    statement = flag_query(user).limit(limit)
    return [(flag, redemption) for flag, redemption in db.session.execute(statement)]


def others_open(flag_ids_by_redemption: dict[int, int]) -> dict[int, int]:
    """For a page of flags ({redemption id: flag id}): how many other open flags hold each
    redemption (one GROUP BY)."""
    if not flag_ids_by_redemption:
        return {}
    counts = dict(
        db.session.execute(
            sa.select(RedemptionFlag.redemption_id, sa.func.count())
            .where(
                RedemptionFlag.redemption_id.in_(list(flag_ids_by_redemption)),
                RedemptionFlag.status == "open",
            )
            .group_by(RedemptionFlag.redemption_id)
        ).all()
    )
    return {rid: max(counts.get(rid, 0) - 1, 0) for rid in flag_ids_by_redemption}


def is_settled(redemption: Redemption) -> bool:
    """Is the redemption a line of an approved statement (rejecting then claws it back)?"""
    guard = redemptions.settlement_guard
    return guard is not None and guard.is_settled(redemption)


def is_held(redemption: Redemption) -> bool:
    """Is the redemption held out of settlement by its open flags now? Only a completed one
    not yet settled, with a flag still open, is: a reversal leaves its flags open (a
    provider reversing a flagged redemption is itself worth a look) but nothing is left to
    hold, one in an approved statement was paid already (rejecting claws it back), and once
    its last flag is decided nothing holds it."""
    return (
        redemption.status in FLAGGABLE_STATUSES
        and bool(open_flagged([redemption.id]))
        and not is_settled(redemption)
    )


def open_flagged(redemption_ids: list[int]) -> set[int]:
    """Which of these redemptions are held out of settlement (one query, for a list page)."""
    if not redemption_ids:
        return set()
    return set(
        db.session.scalars(
            sa.select(RedemptionFlag.redemption_id).where(
                RedemptionFlag.redemption_id.in_(redemption_ids), RedemptionFlag.status == "open"
            )
        )
    )
