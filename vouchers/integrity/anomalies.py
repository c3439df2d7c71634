"""The anomaly rules at work: which version of each rule is in force, judging one redemption
when it is captured, a month's batch before settlement, and an elder's redemptions again
when a death is recorded late.

- ``check_captured(redemption)``: in the capture's transaction (the redemption's row is
  already locked by the capture), every rule judged at capture (``Rule.at_capture``) runs on
  this one redemption; each finding becomes an open flag, so the redemption is held out of
  settlement from the moment it exists.
- ``check_batch(candidates, first_day, last_day)``: a settlement run calls it under its
  month's lock with the month's settleable redemptions, before it takes any line: every rule
  runs again set-based (one query per rule version), including the statistical ones that
  need the whole month. What it finds is held out of this run.
- ``recheck_deaths()`` / ``recheck_after_death(resident_id)``: a death recorded after the
  fact (the eligibility-events job, after the feed commits): every completed
  redemption of the elder on or after the date of death is flagged, settled or not, through
  ``flags.raise_flag`` (which takes a settled one's line out of an unapproved statement, or
  marks it settled); rejecting the flag reverses it, or claws it back from the provider.

A rule flags a redemption once (a unique index on redemption and rule, whatever the
decision): a finding an officer cleared is not raised again by the next run. Flags and their
audit rows are written in bulk (one INSERT … RETURNING, one audit executemany).

The thresholds are data (``AnomalyRule`` rows, versioned by effective dates): a redemption is
judged by the version in force on its service day (its Shanghai check-in date); a batch
spanning a change is judged in parts, each by its own version.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import date, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from eldercare import audit
from eldercare.db import db, is_transient
from eldercare.timeutil import local_today, now_utc
from vouchers.integrity.models import AnomalyRule, RedemptionFlag
from vouchers.integrity.rules import RULES
from vouchers.integrity.rules.base import (
    AT_CAPTURE,
    Finding,
    Rule,
    chunked,
    id_in,
    local_day,
    utc_start_of,
)
from vouchers.models import Redemption, Voucher

log = logging.getLogger(__name__)


def versions_between(first_day: date, last_day: date) -> dict[str, list[AnomalyRule]]:
    """The enabled versions of every rule in force on any day of [first_day, last_day], by
    rule code (one query)."""
    found: dict[str, list[AnomalyRule]] = defaultdict(list)
    for version in db.session.scalars(
        sa.select(AnomalyRule)
        .where(
            AnomalyRule.enabled.is_(True),
            AnomalyRule.effective_from <= last_day,
            sa.or_(AnomalyRule.effective_to.is_(None), AnomalyRule.effective_to > first_day),
        )
        .order_by(AnomalyRule.code, AnomalyRule.effective_from)
    ):
        found[version.code].append(version)
    return found


def _in_force_part(candidates: sa.Select, version: AnomalyRule, first_day, last_day):
    """The candidates whose service day falls in the version's days (and the batch's)."""
    start = max(version.effective_from, first_day)
    end = last_day + timedelta(days=1)
    if version.effective_to is not None:
        end = min(end, version.effective_to)
    ids = candidates.subquery()
    return sa.select(Redemption.id).where(
        Redemption.id.in_(sa.select(ids.c[0])),
        Redemption.checked_in_at >= utc_start_of(start),
        Redemption.checked_in_at < utc_start_of(end),
    )


def judge(
    candidates: sa.Select,
    first_day: date,
    last_day: date,
    *,
    capture: bool = False,
    only: str | None = None,
) -> list[tuple[str, Finding]]:
    """Every rule (at capture: those judged at capture; ``only``: that one) on the
    candidates, by the versions in force on their service days; ``[(code, finding), ...]``."""
    found = []
    versions = versions_between(first_day, last_day)
    for rule in RULES.values():
        if (capture and not rule.at_capture) or (only is not None and rule.code != only):
            continue
        for version in versions.get(rule.code, ()):
            # One day (a capture): the version is in force on it (versions_between), so the
            # candidates need no cut by date.
            part = (
                candidates
                if first_day == last_day
                else _in_force_part(candidates, version, first_day, last_day)
            )
            params = dict(version.params or {})
            if capture:
                params[AT_CAPTURE] = True  # what a rule may judge only once the month is done
            found.extend((rule.code, f) for f in rule.detect(part, params))
    return found


def _already_flagged(pairs: set[tuple[int, str]]) -> set[tuple[int, str]]:
    return {
        (redemption_id, rule)
        for ids in chunked(redemption_id for redemption_id, _ in pairs)
        for redemption_id, rule in db.session.execute(
            sa.select(RedemptionFlag.redemption_id, RedemptionFlag.rule).where(
                id_in(RedemptionFlag.redemption_id, ids)
            )
        )
    }


def _districts(ids: set[int]) -> dict[int, int]:
    return {
        redemption_id: district_id
        for part in chunked(ids)
        for redemption_id, district_id in db.session.execute(
            sa.select(Redemption.id, Voucher.district_id)
            .join(Voucher, Voucher.id == Redemption.voucher_id)
            .where(Redemption.id.in_(part))
        )
    }


def _insert_flags(found: list[tuple[str, Finding]], actor=None) -> list[tuple[int, int, str]]:
    """Open flags for the findings not flagged before by their rule, in one INSERT …
    RETURNING (ON CONFLICT DO NOTHING: a capture and a run that meet on one redemption make
    one flag), and their audit rows in one executemany. The flags raised; ``load=False``:
    only their (id, redemption id, rule), not tens of thousands of rows read back."""
    unique: dict[tuple[int, str], Finding] = {}
    for code, finding in found:
        unique.setdefault((finding.redemption_id, code), finding)
    flagged = _already_flagged(set(unique))
    fresh = {pair: f for pair, f in unique.items() if pair not in flagged}
    if not fresh:
        return []
    now = now_utc()
    rows = [
        {
            "redemption_id": redemption_id,
            "rule": code,
            "evidence": finding.evidence,
            "status": "open",
            "raised_by_user_id": None,
            "raised_at": now,
        }
        for (redemption_id, code), finding in sorted(fresh.items())
    ]
    table = RedemptionFlag.__table__
    dialect = postgresql if db.session.get_bind().dialect.name == "postgresql" else sqlite
    statement = (
        dialect.insert(table)
        .on_conflict_do_nothing(
            index_elements=[table.c.redemption_id, table.c.rule],
            index_where=sa.text("rule <> 'bureau'"),
        )
        .returning(table.c.id, table.c.redemption_id, table.c.rule)
    )
    inserted = [tuple(r) for r in db.session.execute(statement, rows)]
    if not inserted:
        return []
    districts = _districts({redemption_id for _, redemption_id, _ in inserted})
    audit.record_many(
        {
            "action": "redemption_flag.raise",
            "object_type": "redemption_flags",
            "object_id": flag_id,
            "district_id": districts.get(redemption_id),
            "actor": actor,
            "after": {
                "redemption": redemption_id,
                "rule": code,
                "evidence": fresh[(redemption_id, code)].evidence,
            },
        }
        for flag_id, redemption_id, code in inserted
    )
    return inserted  # (flag id, redemption id, rule) of each flag raised


def check_captured(redemption: Redemption) -> list[RedemptionFlag]:
    """The rules judged at capture, on this redemption (its row is locked by the capture).

    A rule that fails here (a defect, a version's thresholds a rule cannot read) must not
    fail the capture: the elder has paid and the card may already be charged. Its work is
    undone to a savepoint and logged, and the batch before settlement judges the redemption
    again, where a failure stops the run loudly (the job is recorded failed and retried)."""
    db.session.flush()
    day = local_today(redemption.checked_in_at)
    candidates = sa.select(Redemption.id).where(
        Redemption.id == redemption.id, Redemption.status == "redeemed"
    )
    try:
        with db.session.begin_nested():
            raised = _insert_flags(judge(candidates, day, day, capture=True))
    except Exception as error:  # noqa: BLE001  (see the docstring: never fail the capture)
        if is_transient(error):
            raise  # a deadlock or a lost connection is the capture's own, to be retried
        log.exception("anomaly rules failed at the capture of redemption %s", redemption.id)
        return []
    ids = [flag_id for flag_id, _, _ in raised]
    return list(db.session.scalars(sa.select(RedemptionFlag).where(RedemptionFlag.id.in_(ids))))


def check_batch(candidates: sa.Select, first_day: date, last_day: date) -> dict[str, int]:
    """Every rule on a batch (a SELECT of redemption ids whose service days lie in
    [first_day, last_day]); the flags raised, counted by rule."""
    db.session.flush()
    counts: dict[str, int] = defaultdict(int)
    for _flag_id, _redemption_id, rule in _insert_flags(judge(candidates, first_day, last_day)):
        counts[rule] += 1
    return dict(counts)


def recheck_after_death(resident_id: int) -> list[RedemptionFlag]:
    """A death recorded after the services it makes impossible: every completed redemption of
    the elder on or after the date of death, in any month, settled or not, is flagged (rule
    ``after_death``, by the version in force on its day). ``flags.raise_flag`` takes each one
    out of a statement not yet approved, or marks it settled: rejecting the flag then claws
    the subsidy back from the provider through the normal reversal."""
    from eldercare.residents import Resident
    from vouchers.integrity import flags

    died = db.session.scalar(sa.select(Resident.date_of_death).where(Resident.id == resident_id))
    if died is None:
        return []
    candidates = sa.select(Redemption.id).where(
        Redemption.resident_id == resident_id,
        Redemption.status == "redeemed",
        Redemption.checked_in_at >= utc_start_of(died),
    )
    last_day = max(local_today(), died)
    raised = []
    for code, finding in judge(candidates, died, last_day, only="after_death"):
        redemption = db.session.get(Redemption, finding.redemption_id)
        flag = flags.raise_flag(redemption, rule=code, evidence=finding.evidence, actor=None)
        if flag is not None:
            raised.append(flag)
    return raised


DEATH_LOOKBACK_DAYS = 400  # the catch-up re-checks deaths dated this long ago and since


def recheck_deaths(died: list[int] | None = None, today: date | None = None) -> dict:
    """The anomaly rules re-check the dead, after the eligibility feed has committed (the
    feed holds the vouchers' locks; flagging locks redemption rows, which come first in the
    lock order): ``died``, the residents whose death the feed run just handled, whatever the
    date of death (a death recorded years late too); then, as a catch-up for a run that
    failed in between, every elder whose date of death is in the last
    ``DEATH_LOOKBACK_DAYS`` days and who has a completed redemption on or after it not yet
    flagged by ``after_death``. Each resident in a savepoint of its own: one that fails is
    reported and the others go on. Returns ``{"flagged": n, "failed": {resident: error}}``."""
    from eldercare.residents import Resident

    today = today or local_today()
    flagged_already = sa.exists().where(
        RedemptionFlag.redemption_id == Redemption.id, RedemptionFlag.rule == "after_death"
    )
    catch_up = db.session.scalars(
        sa.select(Resident.id)
        .where(
            Resident.date_of_death >= today - timedelta(days=DEATH_LOOKBACK_DAYS),
            sa.exists().where(
                Redemption.resident_id == Resident.id,
                Redemption.status == "redeemed",
                local_day(Redemption.checked_in_at) >= Resident.date_of_death,
                ~flagged_already,
            ),
        )
        .order_by(Resident.id)
    ).all()
    report: dict = {"flagged": 0, "failed": {}}
    for resident_id in dict.fromkeys([*(died or []), *catch_up]):
        try:
            with db.session.begin_nested():
                report["flagged"] += len(recheck_after_death(resident_id))
        except Exception as error:  # noqa: BLE001  (reported; the others go on)
            log.exception("the after-death re-check of resident %s failed", resident_id)
            report["failed"][resident_id] = f"{type(error).__name__}: {error}"[:300]
    return report


def install() -> None:
    """The hook of the package below this one (which may not import it): the capture's
    check."""
    from vouchers.redemption import steps

    steps.anomaly_check = check_captured


def rule_of(code: str) -> Rule | None:
    return RULES.get(code)
