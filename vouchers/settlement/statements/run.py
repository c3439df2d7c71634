"""A settlement run of one voucher month: statements per provider and their lines.

Set-based whatever the month's size: under the month lock (FOR UPDATE, see ``periods``),
one INSERT … SELECT opens the statements that are missing, one INSERT … SELECT adds every
settleable redemption as a line of its provider's open statement, one UPDATE … FROM
re-totals the statements, and one bulk append audits what was prepared. No Python loop
over redemptions.

Rerunning adds only what is new (a hold that resolved late, a flag cleared, the lines of a
rejected statement) to the provider-month's open statement, or to a supplementary one
(seq + 1) when the earlier statement is already approved or paid. A redemption is in at most
one line (the primary key), and two runs of one month take turns on the month row.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l
from sqlalchemy.dialects import postgresql, sqlite

from eldercare import audit
from eldercare.db import db
from eldercare.errors import InvalidInput
from eldercare.timeutil import local_today, now_utc
from marketplace.models import Provider
from vouchers.integrity import anomalies
from vouchers.models import Redemption
from vouchers.settlement.models import SettlementMonth, Statement, StatementLine
from vouchers.settlement.statements import periods

OPEN = ("prepared", "awaiting_second")


MONTH_YEARS = range(2000, 2100)  # the programme's, inside the dates every field accepts (to 2100)


def parse_month(text: str) -> date:
    """'YYYY-MM' (years 2000-2099) -> the month's first day, or a clear refusal."""
    try:
        year, month = (int(part) for part in (text or "").strip().split("-"))
        if year not in MONTH_YEARS:
            raise ValueError(year)
        return date(year, month, 1)
    except (ValueError, TypeError):
        raise InvalidInput(
            details={"month": _l("Give the month as YYYY-MM, for example 2026-11.")}
        ) from None


def refusal(month: date, today: date) -> str | None:
    """Why ``month`` may not be settled on ``today``, or None."""
    day = periods.settles_from(month)
    if today < day:
        label = month.strftime("%Y-%m")
        return _l(
            "%(month)s cannot be settled before %(day)s: providers may still reverse its "
            "redemptions until the reversal window after the month's end has closed.",
            month=label,
            day=day.isoformat(),
        )
    return None


def _open_statements(month: date) -> dict[int, tuple[int, int, int, str]]:
    """The month's open statements: id -> (lines, subsidy, card co-payments, status)."""
    rows = db.session.execute(
        sa.select(
            Statement.id,
            Statement.line_count,
            Statement.subsidy_fen,
            Statement.card_copay_fen,
            Statement.status,
        ).where(Statement.month == month, Statement.status.in_(OPEN))
    )
    return {row[0]: tuple(row[1:]) for row in rows}


def _create_statements(month: date, actor_id: int | None, now: datetime) -> int:
    """One INSERT … SELECT: a prepared statement for every provider with something to
    settle and no open statement; seq follows the provider-month's earlier ones."""
    settleable = periods.settleable_lines(month).subquery()
    earlier = sa.orm.aliased(Statement)
    seq = (
        sa.select(sa.func.coalesce(sa.func.max(earlier.seq), 0) + 1)
        .where(earlier.provider_id == Provider.id, earlier.month == month)
        .scalar_subquery()
    )
    select = sa.select(
        Provider.id,
        sa.literal(month, sa.Date),
        seq,
        sa.literal("prepared"),
        sa.literal(0),
        sa.literal(0),
        sa.literal(0),
        sa.literal(0),
        Provider.bank_account_name,
        Provider.bank_name,
        Provider.bank_account_number,
        sa.literal(actor_id, sa.Integer),
        sa.literal(now, Statement.prepared_at.type),
    ).where(
        Provider.id.in_(sa.select(settleable.c.provider_id).distinct()),
        ~sa.exists().where(
            Statement.provider_id == Provider.id,
            Statement.month == month,
            Statement.status.in_(OPEN),
        ),
    )
    columns = [
        "provider_id",
        "month",
        "seq",
        "status",
        "line_count",
        "subsidy_fen",
        "card_copay_fen",
        "clawback_fen",
        "payee_account_name",
        "payee_bank_name",
        "payee_account_number",
        "prepared_by_user_id",
        "prepared_at",
    ]
    table = Statement.__table__
    result = db.session.execute(
        table.insert()
        .from_select([table.c[c] for c in columns], select)
        .execution_options(preserve_rowcount=True)
    )
    return result.rowcount


def _add_lines(month: date) -> int:
    """One INSERT … SELECT: every settleable redemption into its provider's statement that
    is still 'prepared' (one awaiting its second approver is not changed under it: its
    redemptions wait for the next run).

    A redemption already a line is skipped by the key (ON CONFLICT DO NOTHING), not by a
    NOT EXISTS on ``statement_lines``: the planner, judging that table by statistics from
    before the INSERT, scanned it once per redemption while the INSERT grew it, quadratic
    (100,000 redemptions took two minutes; bench/settlement.py)."""
    s = periods.settleable_lines(month, unlined=False).subquery()
    card = sa.case((s.c.payment_method == "card", s.c.copay_fen), else_=0)
    select = (
        sa.select(
            s.c.id,
            Statement.id,
            s.c.district_id,
            s.c.price_fen,
            sa.func.coalesce(s.c.insurance_fen, 0),
            s.c.subsidy_fen,
            sa.func.coalesce(s.c.copay_fen, 0),
            sa.func.coalesce(s.c.payment_method, "none"),
            sa.func.coalesce(card, 0),
        )
        .join(
            Statement,
            sa.and_(
                Statement.provider_id == s.c.provider_id,
                Statement.month == month,
                Statement.status == "prepared",
            ),
        )
        # SQLite reads "ON CONFLICT" after a join's ON as part of the join without a WHERE.
        .where(sa.true())
    )
    columns = [
        "redemption_id",
        "statement_id",
        "district_id",
        "price_fen",
        "insurance_fen",
        "subsidy_fen",
        "copay_fen",
        "payment_method",
        "card_copay_fen",
    ]
    table = StatementLine.__table__
    dialect = postgresql if db.session.get_bind().dialect.name == "postgresql" else sqlite
    result = db.session.execute(
        dialect.insert(table)
        .from_select([table.c[c] for c in columns], select)
        .on_conflict_do_nothing(index_elements=[table.c.redemption_id])
        .execution_options(preserve_rowcount=True)
    )
    return result.rowcount


def retotal(month: date) -> None:
    """One UPDATE … FROM: the month's prepared statements' totals from their lines."""
    totals = (
        sa.select(
            StatementLine.statement_id.label("sid"),
            sa.func.count().label("n"),
            sa.func.sum(StatementLine.subsidy_fen).label("subsidy"),
            sa.func.sum(StatementLine.card_copay_fen).label("card"),
        )
        .join(Statement, Statement.id == StatementLine.statement_id)
        .where(Statement.month == month, Statement.status == "prepared")
        .group_by(StatementLine.statement_id)
        .subquery()
    )
    db.session.execute(
        sa.update(Statement)
        .where(Statement.id == totals.c.sid)
        .values(line_count=totals.c.n, subsidy_fen=totals.c.subsidy, card_copay_fen=totals.c.card)
        .execution_options(synchronize_session=False)
    )
    # A statement opened for redemptions flagged or reversed a moment later keeps no line:
    # it is not kept (nothing was ever approved on it).
    db.session.execute(
        sa.delete(Statement)
        .where(
            Statement.month == month,
            Statement.status == "prepared",
            ~sa.exists().where(StatementLine.statement_id == Statement.id),
        )
        .execution_options(synchronize_session=False)
    )


def run_settlement(month: date, *, actor=None, today: date | None = None) -> dict:
    """Settle ``month`` (its first day or any day of it): the report of what was done.
    Refused (InvalidInput) before the month's cut-off. Flushes; the caller commits."""
    month = periods.first_of(month)
    today = today or local_today()
    why = refusal(month, today)
    if why:
        raise InvalidInput(why, details={"month": why})
    now = now_utc()
    row = periods.lock_month(month, share=False)  # a reversal of this month waits, or we do
    # The month's prepared statements, locked (in id order) before any line is added: an
    # approval in progress holds its statement's row, and a line added under it would land
    # in an approved statement, outside its totals and hash. We wait for it; PostgreSQL then
    # finds that statement no longer 'prepared', and its provider gets a new one (seq + 1).
    db.session.execute(
        sa.select(Statement.id)
        .where(Statement.month == month, Statement.status == "prepared")
        .order_by(Statement.id)
        .with_for_update()
    ).all()
    actor_id = actor.id if actor is not None else None
    # The anomaly rules judge the month's settleable redemptions again, set-based, before any
    # line is taken (statistical rules only here): what they find is held out of this run.
    flagged = anomalies.check_batch(
        periods.settleable_lines(month).with_only_columns(Redemption.id),
        month,
        periods.month_after(month) - timedelta(days=1),
    )
    before = _open_statements(month)
    _create_statements(month, actor_id, now)  # counted below: one may end up emptied
    added = _add_lines(month)
    retotal(month)
    after = _open_statements(month)
    extended = [sid for sid, totals in before.items() if after.get(sid, totals)[0] != totals[0]]
    new = [sid for sid in after if sid not in before]
    touched = extended + new
    if extended and actor_id is not None:
        # A person who adds lines is the statement's latest maker (their audit rows below
        # keep every earlier one: ``approval.preparers``); the job leaves the maker as is.
        db.session.execute(
            sa.update(Statement)
            .where(Statement.id.in_(extended))
            .values(prepared_by_user_id=actor_id, prepared_at=now)
            .execution_options(synchronize_session=False)
        )

    def delta(i: int) -> int:
        return sum(after[sid][i] - before.get(sid, (0, 0, 0))[i] for sid in touched)

    report = {
        "month": f"{month:%Y-%m}",
        "settles_from": row.settles_from.isoformat(),
        "statements_created": len(new),
        "statements_extended": len(extended),
        "lines_added": added,
        "subsidy_fen": delta(1),
        "card_copay_fen": delta(2),
        "refused": {},
        "flagged": flagged,  # held out of this run by the anomaly rules, by rule
    }
    waiting = sum(1 for totals in after.values() if totals[3] == "awaiting_second")
    if waiting:
        report["awaiting_second_statements"] = waiting  # their new lines wait for approval
    audit.record_many(
        {
            "action": "statement.prepare",
            "object_type": "statements",
            "object_id": sid,
            "before": {"line_count": before[sid][0]} if sid in before else None,
            "after": {
                "line_count": after[sid][0],
                "subsidy_fen": after[sid][1],
                "card_copay_fen": after[sid][2],
            },
            "actor": actor,
        }
        for sid in touched
    )
    db.session.execute(
        sa.update(SettlementMonth)
        .where(SettlementMonth.month == month)
        .values(last_run_at=now, last_run_lines=added)
        .execution_options(synchronize_session=False)
    )
    db.session.flush()
    return report


def settle_due(today: date | None = None, *, actor=None, commit: bool = False) -> dict:
    """The catch-up: every month whose cut-off passed and that has something to settle,
    oldest first. With ``commit`` each month is its own transaction (a failing month is
    rolled back and reported, the others still settle)."""
    today = today or local_today()
    done, failed = {}, {}
    for month in periods.settleable_months(today):
        try:
            done[f"{month:%Y-%m}"] = run_settlement(month, actor=actor, today=today)
            if commit:
                db.session.commit()
        except Exception as error:
            if not commit:
                raise
            db.session.rollback()
            failed[f"{month:%Y-%m}"] = str(error)
    return {"settled": done, "failed": failed}
