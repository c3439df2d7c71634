"""The bureau's settlement pages (city-wide bureau staff only).

- ``months`` (GET /settlement/): each voucher month with its cut-off (settles_from), last
  run and statements by status, and "Settle now" for a settleable month (with a
  confirmation);
- ``run_post`` (POST /settlement/runs): settle a month (``run.run_settlement``);
- ``month`` (GET /settlement/months/YYYY-MM): the month's statements;
- ``statement`` (GET /settlement/statements/<id>): totals, approval trail, its lines paged
  (100 a page, the elder masked), and the approve / reject forms for whom they apply;
- ``approve_post`` / ``reject_post``: ``approval.approve`` / ``approval.reject``.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from eldercare import confirmation
from eldercare.accounts import BUREAU_ROLES, User
from eldercare.auth import roles_required
from eldercare.confirmation import Question
from eldercare.db import db
from eldercare.errors import Conflict, DomainError, InvalidInput, NotFound, PermissionDenied
from eldercare.forms import problem_from, yuan
from eldercare.navigation import Destination
from eldercare.residents import Resident, mask_name
from eldercare.timeutil import format_local, local_today
from marketplace.models import Provider, Service
from vouchers.models import Redemption, Voucher
from vouchers.settlement.models import STATEMENT_STATUSES, SettlementMonth, Statement, StatementLine
from vouchers.settlement.statements import approval, periods, run
from vouchers.settlement.views import bp

LINES_PAGE = 100
MONTHS_SHOWN = 24
STATUS_LABELS = {
    "prepared": _l("Prepared, waiting for approval"),
    "awaiting_second": _l("Waiting for a second approver"),
    "approved": _l("Approved, waiting for the bank"),
    "paid": _l("Paid"),
    "rejected": _l("Rejected"),
}
METHOD_LABELS = {"card": _l("Card"), "cash": _l("Cash"), "none": _l("Nothing to pay")}
DESTINATIONS = [
    Destination(
        "settlement.months",
        _l("Settlement"),
        description=_l("Settle each voucher month with the providers: statements and approval."),
    )
]


def city_bureau(user=None) -> None:
    """Settlement is the city bureau's: district staff and everyone else are refused."""
    if not approval.may_prepare(user or current_user):
        raise PermissionDenied(_l("Settlement is done by the city-wide bureau staff."))


def month_rows(today) -> list[dict]:
    months = list(
        db.session.scalars(
            sa.select(Voucher.month).distinct().order_by(Voucher.month.desc()).limit(MONTHS_SHOWN)
        )
    )
    runs = {
        row.month: row
        for row in db.session.scalars(
            sa.select(SettlementMonth).where(SettlementMonth.month.in_(months))
        )
    }
    counts: dict = {}
    for month, status, n in db.session.execute(
        sa.select(Statement.month, Statement.status, sa.func.count())
        .where(Statement.month.in_(months))
        .group_by(Statement.month, Statement.status)
    ):
        counts.setdefault(month, {})[status] = n
    rows = []
    for month in months:
        day = periods.settles_from(month)
        due = day <= today
        rows.append(
            {
                "month": month,
                "settles_from": day,
                "run": runs.get(month),
                "counts": counts.get(month, {}),
                "due": due,
                "settleable": due and periods.has_settleable(month),
            }
        )
    return rows


@bp.get("/")
@roles_required(*BUREAU_ROLES, also=city_bureau)
def months():
    return render_template(
        "settlement/statements_months.html",
        rows=month_rows(local_today()),
        statuses=STATEMENT_STATUSES,
        status_labels=STATUS_LABELS,
        format_local=format_local,
    )


@bp.post("/runs")
@roles_required(*BUREAU_ROLES)
def run_post():
    city_bureau()
    try:
        month = run.parse_month(request.form.get("month", ""))
        if request.form.get("confirm") != "yes":
            raise InvalidInput(
                details={"confirm": _l("Tick the box to confirm you want to settle this month.")}
            )
        report = run.run_settlement(month, actor=current_user)
    except DomainError as error:
        db.session.rollback()
        flash(problem_text(error), "error")
        return redirect(url_for(".months"), 303)
    flash(
        _(
            "%(month)s settled: %(lines)s lines added, %(created)s statements created and "
            "%(extended)s extended (subsidy %(subsidy)s, card co-payments %(card)s).",
            month=report["month"],
            lines=report["lines_added"],
            created=report["statements_created"],
            extended=report["statements_extended"],
            subsidy=yuan(report["subsidy_fen"]),
            card=yuan(report["card_copay_fen"]),
        ),
        "success",
    )
    return redirect(url_for(".month", month_text=report["month"]), 303)


def problem_text(error: DomainError) -> str:
    details = getattr(error, "details", None) or {}
    return "; ".join(str(v) for v in details.values()) or str(error)


@bp.get("/months/<month_text>")
@roles_required(*BUREAU_ROLES)
def month(month_text: str):
    city_bureau()
    try:
        first = run.parse_month(month_text)
    except InvalidInput:
        raise NotFound() from None
    rows = db.session.execute(
        sa.select(Statement, Provider.name)
        .join(Provider, Provider.id == Statement.provider_id)
        .where(Statement.month == first)
        .order_by(Provider.name, Statement.seq)
    ).all()
    return render_template(
        "settlement/statements_month.html",
        month=first,
        settles_from=periods.settles_from(first),
        rows=rows,
        status_labels=STATUS_LABELS,
        yuan=yuan,
    )


def _statement(statement_id: int) -> Statement:
    statement = db.session.get(Statement, statement_id)
    if statement is None:
        raise NotFound()
    return statement


def line_rows(statement_id: int, page: int):
    """One page of the statement's lines with what the page shows of each."""
    return db.session.execute(
        sa.select(StatementLine, Redemption, Resident.name, Service.title)
        .join(Redemption, Redemption.id == StatementLine.redemption_id)
        .join(Resident, Resident.id == Redemption.resident_id)
        .outerjoin(Service, Service.id == Redemption.service_id)
        .where(StatementLine.statement_id == statement_id)
        .order_by(StatementLine.redemption_id)
        .limit(LINES_PAGE)
        .offset((page - 1) * LINES_PAGE)
    ).all()


def _people(statement: Statement) -> dict:
    ids = {
        statement.prepared_by_user_id,
        statement.approved_by_user_id,
        statement.second_approved_by_user_id,
        statement.rejected_by_user_id,
    } - {None}
    users = db.session.scalars(sa.select(User).where(User.id.in_(ids))) if ids else []
    return {u.id: u.display_name for u in users}


def render_statement(statement: Statement, problem=None, values=None, status=200):
    try:
        page = max(1, int(request.args.get("page", "1")))
    except ValueError:
        page = 1
    provider = db.session.get(Provider, statement.provider_id)
    pages = max(1, -(-statement.line_count // LINES_PAGE))
    page = min(page, pages)  # past the end: the last page (a huge one overflows the OFFSET)
    return (
        render_template(
            "settlement/statements_detail.html",
            s=statement,
            provider=provider,
            lines=line_rows(statement.id, page),
            page=page,
            pages=pages,
            people=_people(statement),
            status_labels=STATUS_LABELS,
            method_labels=METHOD_LABELS,
            mask_name=mask_name,
            format_local=format_local,
            yuan=yuan,
            refusal=approval.what_applies(statement, current_user),
            fingerprint=approval.fingerprint(statement),
            problem=problem,
            values=values or {},
        ),
        status,
    )


@bp.get("/statements/<int:statement_id>")
@roles_required(*BUREAU_ROLES)
def statement(statement_id: int):
    city_bureau()
    return render_statement(_statement(statement_id))


def _decide(statement_id: int, decide, done_message):
    city_bureau()
    statement = _statement(statement_id)
    try:
        decide(statement)
    except DomainError as error:
        db.session.rollback()
        statement = _statement(statement_id)
        return render_statement(
            statement, problem_from(error, ("reason", "confirm")), request.form, error.status
        )
    flash(done_message(statement), "success")
    return redirect(url_for(".statement", statement_id=statement_id), 303)


@bp.post("/statements/<int:statement_id>/approve")
@roles_required("bureau_approver")
def approve_post(statement_id: int):
    def decide(statement):
        if request.form.get("confirm") != "yes":
            raise InvalidInput(
                details={"confirm": _l("Tick the box to confirm the amount you approve.")}
            )
        shown = request.form.get("expected_payable_fen", "")
        if not shown.isdigit() or len(shown) > 18:
            raise Conflict(approval.CHANGED)  # a form from before: review the statement again
        approval.approve(
            statement,
            actor=current_user,
            expected_payable_fen=int(shown),
            expected_fingerprint=request.form.get("expected_fingerprint") or None,
        )

    return _decide(
        statement_id,
        decide,
        lambda s: (
            _("Statement approved.")
            if s.status == "approved"
            else _("First approval recorded: a second approver must approve it too.")
        ),
    )


@bp.post("/statements/<int:statement_id>/reject")
@roles_required("bureau_approver")
def reject_post(statement_id: int):
    def decide(statement):
        approval.reject(statement, actor=current_user, reason=request.form.get("reason", ""))
        # After the service's checks (a reason, a statement still open to a decision); the
        # question's rollback undoes the rejection until it is confirmed.
        provider = db.session.get(Provider, statement.provider_id)
        confirmation.require(
            Question(
                title=_("Reject the statement of %(amount)s?", amount=yuan(statement.payable_fen)),
                consequences=[
                    _(
                        "%(name)s is not paid the %(amount)s of this statement now: its "
                        "redemptions go back to be settled by the next run.",
                        name=provider.name,
                        amount=yuan(statement.payable_fen),
                    ),
                    _(
                        "The reason is kept with the statement: %(reason)s",
                        reason=(request.form.get("reason") or "").strip(),
                    ),
                ],
                facts=[
                    (_("Provider"), provider.name),
                    (_("Amount"), yuan(statement.payable_fen)),
                ],
                button=_(
                    "Yes, reject the statement of %(amount)s", amount=yuan(statement.payable_fen)
                ),
                back=url_for(".statement", statement_id=statement.id),
            )
        )

    return _decide(
        statement_id,
        decide,
        lambda s: _("Statement rejected; its redemptions will be settled by the next run."),
    )
