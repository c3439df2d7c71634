"""The bureau's pages: the subsidy pool at a glance, top-ups and allocations, policy
versions, the redemptions in scope, and the printed card made at the district office.

- ``pool`` (GET /vouchers/bureau/pool): funding received, unallocated pool, each district's
  allocation left, vouchers outstanding/held/redeemed-unsettled, this month's counts, the
  ledger check, this month's shortfalls and the journal, paged. Officers of a district see
  their district's figures only (the city-wide funding and journal are not theirs).
- ``pool_topup`` / ``pool_allocate`` (POST, approvers): -> pool.top_up / pool.allocate.
- ``policies`` (GET) / ``policy_add`` (POST, approvers): versions per kind; a new version.
- ``bureau_redemptions`` (GET): every provider's redemptions in scope, filtered.
- ``bureau_card`` (GET/POST): the printed card for an elder at the district office.

Amounts are typed in yuan and read exactly (Decimal, at most two decimals) into fen.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta

import sqlalchemy as sa
from flask import flash, redirect, render_template, request, url_for
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from eldercare import confirmation, stored_text
from eldercare.accounts import BUREAU_ROLES
from eldercare.auth import ensure_in_district, roles_required, scope_to_district
from eldercare.confirmation import Question
from eldercare.db import db
from eldercare.errors import DomainError, InvalidInput, NotFound, PermissionDenied
from eldercare.forms import (
    FormErrors,
    fen_from_yuan,
    input_problem,
    parse_effective_from,
    problem_from,
    whole_number,
    yuan,
    yuan_input,
)
from eldercare.job_runs import health_of
from eldercare.navigation import Destination
from eldercare.paging import page_number
from eldercare.residents import District, Resident, mask_name
from eldercare.timeutil import SHANGHAI, format_local, local_today, now_utc
from marketplace.models import Provider, Service, ServiceCategory
from vouchers.errors import GatewayUnavailable
from vouchers.integrity import flags
from vouchers.models import (
    REDEMPTION_STATUSES,
    VOUCHER_KINDS,
    JournalEntry,
    JournalLine,
    LedgerAccount,
    Redemption,
    Shortfall,
    Voucher,
    VoucherPolicy,
)
from vouchers.pool import funding as pool
from vouchers.pool import ledger, ledger_checks, memos, policy
from vouchers.redemption import payments
from vouchers.views import bp
from vouchers.views_elder import (
    KIND_LABELS,
    REDEMPTION_LABELS,
    card_facts,
    card_image,
    card_of,
    card_post,
    next_month,
)

APPROVER = ("bureau_approver",)
JOURNAL_PAGE = 25
REDEMPTION_PAGE = 50
LEVELS = ("mild", "moderate", "severe", "complete")
LEVEL_LABELS = {
    "mild": _l("Mild"),
    "moderate": _l("Moderate"),
    "severe": _l("Severe"),
    "complete": _l("Complete"),
}
SOURCE_LABELS = {"central": _l("Central funds"), "local": _l("Local funds")}
ENTRY_LABELS = {
    "topup": _l("Top-up"),
    "allocation": _l("Allocation"),
    "issue": _l("Voucher issued"),
    "hold": _l("Held for a payment"),
    "capture": _l("Redeemed"),
    "release": _l("Hold released"),
    "reverse": _l("Reversed"),
    "expire": _l("Expired, returned"),
    "revoke": _l("Revoked, returned"),
    "settle": _l("Settled"),
    "pay": _l("Paid to provider"),
    "fee_refund": _l("Fee refunded"),
}
# The vouchers' jobs, as the bureau calls them; a failure of any of them shows on the pool page.
JOB_LABELS = {
    "vouchers-monthly": _l("Monthly voucher expiry and issuance"),
    "vouchers-eligibility-events": _l("First vouchers and revocations from eligibility events"),
    "vouchers-settle-stale-holds": _l("Settling card payments left pending"),
    "vouchers-verify-ledger": _l("The hourly ledger check"),
}
MONTHLY_JOB = "vouchers-monthly"
# The command that shows whether the scheduler runs: shown as code, the same in both languages.
SCHEDULER_LIST = "flask scheduler list"
# The monthly catch-up runs every 10 minutes: no success for an hour means it is failing or
# the scheduler is not running.
MONTHLY_JOB_STALE_AFTER = timedelta(hours=1)
_SIGNED_YUAN = re.compile(r"^\s*([+-]?)\s*(.*)$", re.S)
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")

DESTINATIONS = [
    Destination(
        "vouchers.pool",
        _l("Subsidy pool"),
        description=_l(
            "Money received, allocated to districts, held by vouchers and redeemed; top-ups, "
            "allocations and elders left out."
        ),
    ),
    Destination("vouchers.policies", _l("Voucher policy")),
]


# --------------------------------------------------------------------------- reading input


def parse_amount(text: str | None, field: str, errors: FormErrors, *, signed=False) -> int | None:
    """Yuan typed by bureau staff as exact fen: "500" -> 50000, "500.5" -> 50050. Refuses
    more than two decimals, letters, and a sign unless ``signed`` (an allocation taken back)."""
    match = _SIGNED_YUAN.match(text or "")
    sign, rest = match.group(1), match.group(2)
    if not rest.strip():
        errors.add(field, _l("Enter the amount in yuan, for example 500 or 500.50."))
        return None
    if sign and not signed:
        errors.add(field, _l("Enter an amount greater than zero, without a sign."))
        return None
    fen = fen_from_yuan(rest)
    if fen is None:
        errors.add(field, _l("Enter the amount in yuan with at most two decimals, e.g. 500.50."))
        return None
    if fen == 0:
        errors.add(field, ledger.AMOUNT_MESSAGE)
        return None
    return -fen if sign == "-" else fen


def month_bounds(month: date) -> tuple[datetime, datetime]:
    """A Shanghai month as aware datetimes, for comparing with UTC timestamps."""
    start = datetime.combine(month, time(0), tzinfo=SHANGHAI)
    return start, datetime.combine(next_month(month), time(0), tzinfo=SHANGHAI)


def districts_in_scope() -> list[District]:
    statement = scope_to_district(sa.select(District), District.id).order_by(District.code)
    return list(db.session.scalars(statement))


def _locale() -> str:
    return str(get_locale() or "zh_CN")


# --------------------------------------------------------------------------- the pool


def pool_figures(month: date) -> dict:
    """What the pool page shows, in fen, for the user's scope."""
    scoped = current_user.district_id is not None
    balances = ledger.balances()
    districts = districts_in_scope()
    district_ids = [d.id for d in districts]
    rows = [
        {
            "district": d,
            "name": d.display_name(_locale()),
            "left": balances.get(ledger.district_account_code(d.code)),
        }
        for d in districts
    ]
    start, end = month_bounds(month)
    vouchers_q = sa.select(
        sa.func.count(Voucher.id), sa.func.coalesce(sa.func.sum(Voucher.face_value_fen), 0)
    ).where(Voucher.month == month)
    redeemed_q = (
        sa.select(
            sa.func.count(Redemption.id), sa.func.coalesce(sa.func.sum(Redemption.subsidy_fen), 0)
        )
        .join(Voucher, Voucher.id == Redemption.voucher_id)
        .where(
            Redemption.status == "redeemed",
            Redemption.redeemed_at >= start,
            Redemption.redeemed_at < end,
        )
    )
    # Expired and revoked balances went back to the district accounts this month.
    codes = [ledger.district_account_code(d.code) for d in districts]
    returned_q = (
        sa.select(sa.func.coalesce(sa.func.sum(JournalLine.amount_fen), 0))
        .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
        .join(LedgerAccount, LedgerAccount.id == JournalLine.account_id)
        .where(
            JournalEntry.kind.in_(("expire", "revoke")),
            JournalEntry.occurred_at >= start,
            JournalEntry.occurred_at < end,
            LedgerAccount.code.in_(codes),
        )
    )
    if scoped:
        vouchers_q = vouchers_q.where(Voucher.district_id.in_(district_ids))
        redeemed_q = redeemed_q.where(Voucher.district_id.in_(district_ids))
    issued, issued_fen = db.session.execute(vouchers_q).one()
    redeemed, redeemed_fen = db.session.execute(redeemed_q).one()
    figures = {
        "scoped": scoped,
        "districts": rows,
        "issued": issued,
        "issued_fen": issued_fen,
        "redeemed": redeemed,
        "redeemed_fen": redeemed_fen,
        "returned_fen": db.session.scalar(returned_q),
    }
    if not scoped:
        figures.update(
            central=-balances.get("funding:central", 0),
            local=-balances.get("funding:local", 0),
            unallocated=balances.get("pool:available", 0),
            outstanding=balances.get("vouchers:outstanding", 0),
            held=balances.get("vouchers:held", 0),
            unsettled=balances.get("redeemed:unsettled", 0),
        )
    return figures


def shortfalls_of(month: date) -> list[dict]:
    statement = scope_to_district(
        sa.select(Shortfall, Resident.name, District)
        .join(Resident, Resident.id == Shortfall.resident_id)
        .join(District, District.id == Shortfall.district_id)
        .where(Shortfall.month == month),
        Shortfall.district_id,
    ).order_by(Shortfall.resolved_at.is_not(None), Shortfall.recorded_at, Shortfall.id)
    return [
        {
            "name": mask_name(name),
            "district": district.display_name(_locale()),
            "level": LEVEL_LABELS.get(s.level, s.level),
            "needed": s.needed_fen,
            "recorded": format_local(s.recorded_at),
            "resolved": format_local(s.resolved_at) if s.resolved_at else None,
        }
        for s, name, district in db.session.execute(statement).all()
    ]


def journal_page(page: int) -> tuple[list[dict], bool]:
    entries = db.session.scalars(
        sa.select(JournalEntry)
        .order_by(JournalEntry.occurred_at.desc(), JournalEntry.id.desc())
        .offset((page - 1) * JOURNAL_PAGE)
        .limit(JOURNAL_PAGE + 1)
    ).all()
    more = len(entries) > JOURNAL_PAGE
    entries = entries[:JOURNAL_PAGE]
    amounts = dict(
        db.session.execute(
            sa.select(JournalLine.entry_id, sa.func.sum(JournalLine.amount_fen))
            .where(JournalLine.entry_id.in_([e.id for e in entries]), JournalLine.amount_fen > 0)
            .group_by(JournalLine.entry_id)
        ).all()
    )
    return [
        {
            "id": e.id,
            "kind": ENTRY_LABELS.get(e.kind, e.kind),
            "memo": stored_text.render(e.memo),
            "amount": amounts.get(e.id, 0),
            "when": format_local(e.occurred_at),
            "cause": memos.reference(e.cause_type, e.cause_id),
        }
        for e in entries
    ], more


def job_problems() -> list[dict]:
    """Red notices for the pool page: a vouchers job whose last run failed (it is retried on
    its next run), or a monthly catch-up that has not succeeded lately."""
    problems = []
    for job_id, label in JOB_LABELS.items():
        health = health_of(job_id)
        if health.failing:
            failure = health.last_failure
            when = format_local(failure.started_at)
            if job_id == MONTHLY_JOB:
                text = _(
                    "This month's voucher job failed (%(when)s): %(error)s. The system will "
                    "retry it automatically.",
                    when=when,
                    error=failure.error,
                )
            else:
                text = _(
                    "The job “%(job)s” failed (%(when)s): %(error)s. The system will retry it "
                    "automatically.",
                    job=label,
                    when=when,
                    error=failure.error,
                )
            problems.append({"job": job_id, "text": text})
        elif job_id == MONTHLY_JOB and not health.succeeded_within(MONTHLY_JOB_STALE_AFTER):
            if health.last_success is None:
                text = _(
                    "The monthly voucher job has never succeeded. Check that the scheduler is "
                    "running; this command lists its jobs:"
                )
            else:
                text = _(
                    "The monthly voucher job has not succeeded since %(when)s. Check that the "
                    "scheduler is running; this command lists its jobs:",
                    when=format_local(health.last_success.finished_at),
                )
            problems.append({"job": job_id, "text": text, "command": SCHEDULER_LIST})
    return problems


def _age(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 1:
        return _("less than a minute")
    if minutes < 120:
        return _("%(n)s minutes", n=minutes)
    if minutes < 48 * 60:
        return _("%(n)s hours", n=minutes // 60)
    return _("%(n)s days", n=minutes // (24 * 60))


def ledger_check_shown() -> dict | None:
    """The last stored ledger check as the pool page shows it: its findings, when it ran,
    how long ago, and whether it is too old to trust (the hourly job is not running)."""
    run = ledger_checks.last_check()
    if run is None:
        return None
    return dict(run.findings) | {
        "ok": run.ok,
        "when": format_local(run.finished_at),
        "age": _age((now_utc() - run.finished_at).total_seconds()),
        "stale": ledger_checks.is_stale(run),
        "journal_lines": run.journal_lines,
    }


def _render_pool(status=200, problem=None, problem_form=None, values=None):
    month = local_today().replace(day=1)
    scoped = current_user.district_id is not None
    page = page_number(request.args.get("page"))
    journal, more = ([], False) if scoped else journal_page(page)
    return render_template(
        "vouchers/bureau_pool.html",
        month=month,
        figures=pool_figures(month),
        check=ledger_check_shown(),
        job_problems=job_problems(),
        shortfalls=shortfalls_of(month),
        journal=journal,
        page=page,
        more=more,
        is_approver=current_user.has_role("bureau_approver") and not scoped,
        sources=list(SOURCE_LABELS.items()),
        district_options=[(d.id, d.display_name(_locale())) for d in districts_in_scope()],
        problem=problem,
        problem_form=problem_form,
        values=values or {},
        yuan=yuan,
    ), status


@bp.get("/bureau/pool", endpoint="pool")  # the module ``pool`` keeps the function's name
@roles_required(*BUREAU_ROLES)
def pool_page():
    return _render_pool()


def _city_approver() -> None:
    """Funding the pool, sharing it between districts and setting the voucher policy are the
    city bureau's decisions."""
    if current_user.district_id is not None:
        raise PermissionDenied()


@bp.post("/bureau/pool/verify")
@roles_required(*BUREAU_ROLES)
def pool_verify():
    """Check the books now (the hourly job does it too) and show the result."""
    if ledger_checks.checked_recently(ledger_checks.last_check()):
        flash(_("The books were checked less than a minute ago: the result below is that check."))
        return redirect(url_for(".pool"))
    run = ledger_checks.run_check(requested_by_user_id=current_user.id)
    if run.ok:
        flash(_("The books were checked just now and balance to the fen."), "success")
    else:
        flash(_("The books were checked just now and do not balance."), "error")
    return redirect(url_for(".pool"))


@bp.post("/bureau/pool/topup")
@roles_required(*APPROVER)
def pool_topup():
    _city_approver()
    form = request.form
    errors = FormErrors()
    amount = parse_amount(form.get("amount"), "amount", errors)
    if errors:
        return _render_pool(422, input_problem(errors), "topup", form)
    try:
        pool.top_up(
            amount, source=form.get("source", ""), memo=form.get("memo", ""), actor=current_user
        )
    except DomainError as error:
        db.session.rollback()
        return _render_pool(422, _problem(error, ("source", "memo")), "topup", form)
    # Asked after the service's own checks ran (a missing document is said first); the
    # question's rollback undoes the entry until the approver confirms.
    source = SOURCE_LABELS.get(form.get("source", ""), "")
    confirmation.require(
        Question(
            title=_("Record %(amount)s received?", amount=yuan(amount)),
            consequences=[
                _(
                    "%(amount)s from %(source)s goes into the pool under the funding document "
                    "%(memo)s. The books keep the entry for ever; a mistake is corrected by "
                    "another entry.",
                    amount=yuan(amount),
                    source=source,
                    memo=form.get("memo", "").strip(),
                )
            ],
            facts=[
                (_("Amount"), yuan(amount)),
                (_("Source of the money"), source),
                (_("Not yet allocated, after"), yuan(ledger.balances().get("pool:available", 0))),
            ],
            button=_("Yes, record %(amount)s", amount=yuan(amount)),
            back=url_for(".pool") + "#topup-heading",
        )
    )
    flash(_("%(amount)s received into the pool.", amount=yuan(amount)), "success")
    return redirect(url_for(".pool"))


@bp.post("/bureau/pool/allocate")
@roles_required(*APPROVER)
def pool_allocate():
    _city_approver()
    form = request.form
    errors = FormErrors()
    amount = parse_amount(form.get("amount"), "amount", errors, signed=True)
    district = None
    district_id = whole_number(form.get("district_id"))
    if district_id is not None:
        district = db.session.get(District, district_id)
    if district is None:
        errors.add("district_id", _l("Choose the district."))
    if errors:
        return _render_pool(422, input_problem(errors), "allocate", form)
    try:
        pool.allocate(district, amount, memo=form.get("memo", ""), actor=current_user)
    except DomainError as error:
        db.session.rollback()
        return _render_pool(422, _problem(error, ("memo",)), "allocate", form)
    name = district.display_name(_locale())
    confirmation.require(_allocation_question(district, name, amount))
    if amount > 0:
        flash(
            _("%(amount)s allocated to %(district)s.", amount=yuan(amount), district=name),
            "success",
        )
    else:
        flash(
            _("%(amount)s taken back from %(district)s.", amount=yuan(-amount), district=name),
            "success",
        )
    return redirect(url_for(".pool"))


def _allocation_question(district: District, name: str, amount: int) -> Question:
    """Asked after the allocation was posted (so a pool too small is said first): the
    balances read now are the ones after; the question's rollback undoes the entry."""
    after = ledger.balances()
    if amount > 0:
        title = _("Allocate %(amount)s to %(district)s?", amount=yuan(amount), district=name)
        words = _(
            "%(amount)s leaves the pool for %(district)s, whose officers can then issue "
            "vouchers with it.",
            amount=yuan(amount),
            district=name,
        )
        button = _("Yes, allocate %(amount)s to %(district)s", amount=yuan(amount), district=name)
    else:
        title = _("Take %(amount)s back from %(district)s?", amount=yuan(-amount), district=name)
        words = _(
            "%(amount)s goes back from %(district)s to the pool: the district can issue that "
            "much less.",
            amount=yuan(-amount),
            district=name,
        )
        button = _("Yes, take %(amount)s back", amount=yuan(-amount))
    return Question(
        title=title,
        consequences=[words],
        facts=[
            (_("Amount"), yuan(abs(amount))),
            (_("District"), name),
            (_("Not yet allocated, after"), yuan(after.get("pool:available", 0))),
            (
                _("Left to issue in %(district)s, after", district=name),
                yuan(after.get(ledger.district_account_code(district.code), 0)),
            ),
        ],
        button=button,
        back=url_for(".pool") + "#allocate-heading",
    )


def _problem(error: DomainError, fields) -> dict:
    """A service refusal for a form whose amount field is called ``amount``."""
    problem = problem_from(error, fields=fields)
    details = error.details or {}
    if "amount_fen" in details:
        problem["fields"]["amount"] = str(ledger.AMOUNT_MESSAGE)
    if "account" in details and "amount_fen" in details:
        # InsufficientFunds: the account names a bucket, not a form field.
        problem["fields"]["amount"] = str(error.message)
    return problem


# --------------------------------------------------------------------------- policies


def known_categories() -> list[ServiceCategory]:
    return list(
        db.session.scalars(
            sa.select(ServiceCategory).order_by(ServiceCategory.sort_order, ServiceCategory.code)
        )
    )


def _render_policies(status=200, problem=None, values=None, checked=None):
    versions = {
        kind: db.session.scalars(
            sa.select(VoucherPolicy)
            .where(VoucherPolicy.kind == kind)
            .order_by(VoucherPolicy.effective_from.desc())
        ).all()
        for kind in VOUCHER_KINDS
    }
    categories = known_categories()
    names = {c.code: c.display_name(_locale()) for c in categories}
    today = local_today()
    suggested = date(today.year + 1, 1, 1)
    return render_template(
        "vouchers/bureau_policies.html",
        versions=versions,
        kind_labels=KIND_LABELS,
        category_names=names,
        category_options=[(c.code, names[c.code]) for c in categories],
        level_options=[(lv, LEVEL_LABELS[lv]) for lv in LEVELS],
        level_labels=LEVEL_LABELS,
        kind_options=[(k, KIND_LABELS[k]) for k in VOUCHER_KINDS],
        today=today,
        # The policy is the city's: a district's approver reads it and cannot change it.
        is_approver=current_user.has_role("bureau_approver") and current_user.district_id is None,
        problem=problem,
        values=values or {"effective_from": suggested.isoformat()},
        checked=checked or {"in_scope_categories": (), "eligible_levels": ()},
        yuan=yuan,
        yuan_input=yuan_input,
    ), status


@bp.get("/bureau/policies")
@roles_required(*BUREAU_ROLES)
def policies():
    return _render_policies()


def _percent_bp(text: str | None, errors: FormErrors) -> int | None:
    """ "50" or "37.5" percent as basis points."""
    value = (text or "").strip().rstrip("%").strip()
    if not re.fullmatch(r"\d{1,3}(\.\d{1,2})?", value):
        errors.add("ratio", _l("Enter the ratio as a percent, for example 50."))
        return None
    return round(float(value) * 100)


def _whole(text: str | None, field: str, errors: FormErrors, message) -> int | None:
    value = (text or "").strip()
    if not re.fullmatch(r"\d{1,6}", value):
        errors.add(field, message)
        return None
    return int(value)


@bp.post("/bureau/policies")
@roles_required(*APPROVER)
def policy_add():
    _city_approver()
    form = request.form
    checked = {
        "in_scope_categories": form.getlist("in_scope_categories"),
        "eligible_levels": form.getlist("eligible_levels"),
    }
    errors = FormErrors()
    effective_from = parse_effective_from(form.get("effective_from"), errors)
    cap = parse_amount(form.get("cap"), "cap", errors)
    ratio_bp = _percent_bp(form.get("ratio"), errors)
    distance = _whole(
        form.get("evv_max_distance_m"),
        "evv_max_distance_m",
        errors,
        _l("The visit distance must be 1 to 10,000 metres."),
    )
    window = _whole(
        form.get("reversal_window_days"),
        "reversal_window_days",
        errors,
        _l("The reversal window is 0 to 90 days."),
    )
    if errors:
        return _render_policies(422, input_problem(errors), form, checked)
    try:
        version = policy.add_version(
            form.get("kind", ""),
            effective_from=effective_from,
            monthly_cap_fen=cap,
            ratio_bp=ratio_bp,
            in_scope_categories=checked["in_scope_categories"],
            eligible_levels=checked["eligible_levels"],
            evv_max_distance_m=distance,
            reversal_window_days=window,
            note=form.get("note", ""),
            actor=current_user,
            known_categories={c.code for c in known_categories()},
        )
    except DomainError as error:
        db.session.rollback()
        problem = problem_from(
            error,
            fields=(
                "kind",
                "effective_from",
                "ratio_bp",
                "in_scope_categories",
                "eligible_levels",
                "evv_max_distance_m",
                "reversal_window_days",
                "note",
            ),
        )
        # The form's names for the service's fields.
        for service_name, form_name in (("monthly_cap_fen", "cap"), ("ratio_bp", "ratio")):
            message = (error.details or {}).get(service_name)
            if message is not None:
                problem["fields"][form_name] = str(message)
        return _render_policies(422, problem, form, checked)
    confirmation.require(_policy_question(version))
    flash(
        _(
            "New rule for %(kind)s saved; it applies from %(day)s.",
            kind=KIND_LABELS[version.kind],
            day=version.effective_from.isoformat(),
        ),
        "success",
    )
    return redirect(url_for(".policies"))


def _policy_question(version: VoucherPolicy) -> Question:
    """Asked after the service accepted the version (its checks speak first); the
    question's rollback undoes it until the approver confirms."""
    kind = KIND_LABELS[version.kind]
    day = version.effective_from.isoformat()
    ratio = f"{version.ratio_bp / 100:g}"
    return Question(
        title=_("Change the voucher policy from %(day)s?", day=day),
        consequences=[
            _(
                "Every %(kind)s voucher issued from %(day)s pays %(ratio)s%% of each service, "
                "up to %(cap)s a month, under this rule instead of the one in force now.",
                kind=kind,
                day=day,
                ratio=ratio,
                cap=yuan(version.monthly_cap_fen),
            ),
            _("A rule cannot be taken back once it applies; a later rule can change it."),
        ],
        facts=[
            (_("Voucher"), kind),
            (_("Applies from"), day),
            (_("Monthly cap"), yuan(version.monthly_cap_fen)),
            (_("Subsidy ratio"), f"{ratio}%"),
        ],
        button=_("Yes, save the new rule"),
        back=url_for(".policies"),
    )


# --------------------------------------------------------------------------- redemptions


def _month_filter(text: str | None) -> date | None:
    match = _MONTH.match((text or "").strip())
    if not match or not 1 <= int(match.group(2)) <= 12 or not 2000 <= int(match.group(1)):
        return None  # not a month the programme could have: no filter
    return date(int(match.group(1)), int(match.group(2)), 1)


@bp.get("/bureau/redemptions")
@roles_required(*BUREAU_ROLES)
def bureau_redemptions():
    args = request.args
    statement = (
        sa.select(Redemption, Voucher, Resident.name, Provider.name, Service.title)
        .join(Voucher, Voucher.id == Redemption.voucher_id)
        .join(Resident, Resident.id == Redemption.resident_id)
        .join(Provider, Provider.id == Redemption.provider_id)
        .outerjoin(Service, Service.id == Redemption.service_id)
    )
    statement = scope_to_district(statement, Voucher.district_id)
    provider_id = whole_number(args.get("provider_id"))
    if provider_id is not None:
        statement = statement.where(Redemption.provider_id == provider_id)
    status = args.get("status", "")
    if status in REDEMPTION_STATUSES:
        statement = statement.where(Redemption.status == status)
    month = _month_filter(args.get("month"))
    if month is not None:
        statement = statement.where(Voucher.month == month)
    page = page_number(args.get("page"))
    rows = db.session.execute(
        statement.order_by(Redemption.checked_in_at.desc(), Redemption.id.desc())
        .offset((page - 1) * REDEMPTION_PAGE)
        .limit(REDEMPTION_PAGE + 1)
    ).all()
    providers = db.session.execute(
        sa.select(Provider.id, Provider.name)
        .where(
            Provider.id.in_(
                scope_to_district(
                    sa.select(Redemption.provider_id).join(
                        Voucher, Voucher.id == Redemption.voucher_id
                    ),
                    Voucher.district_id,
                )
            )
        )
        .order_by(Provider.name)
    ).all()
    held = flags.open_flagged([r.id for r, *_ in rows[:REDEMPTION_PAGE]])
    items = [
        {
            "id": r.id,
            "when": format_local(r.redeemed_at or r.checked_in_at),
            "elder": mask_name(elder),
            "provider": provider,
            "service": title or "—",
            "price": r.price_fen,
            "subsidy": r.subsidy_fen,
            "copay": r.copay_fen,
            "status": REDEMPTION_LABELS.get(r.status, r.status),
            "link": url_for("vouchers.redemption_page", redemption_id=r.id),
            # "Hold out of settlement" (vouchers.integrity.views) for a completed one.
            "held": r.id in held,
            "flaggable": r.status in flags.FLAGGABLE_STATUSES and r.id not in held,
        }
        for r, _voucher, elder, provider, title in rows[:REDEMPTION_PAGE]
    ]
    filters = {"provider_id": provider_id, "status": status, "month": args.get("month", "")}
    return render_template(
        "vouchers/bureau_redemptions.html",
        items=items,
        more=len(rows) > REDEMPTION_PAGE,
        page=page,
        filters=filters,
        provider_options=[(str(pid), name) for pid, name in providers],
        status_options=[(s, REDEMPTION_LABELS[s]) for s in REDEMPTION_STATUSES],
        yuan=yuan,
    )


# --------------------------------------------------------------------------- stuck payments


def _redemption_in_scope(redemption_id: int) -> Redemption:
    """A redemption paid from a district the signed-in officer covers; others look missing."""
    r = db.session.get(Redemption, redemption_id)
    if r is None:
        raise NotFound()
    ensure_in_district(r.voucher.district_id)
    return r


def _render_resolve(r: Redemption, status=200, problem=None, values=None):
    return render_template(
        "vouchers/bureau_resolve.html",
        r=r,
        elder=mask_name(db.session.get(Resident, r.resident_id).name),
        provider=db.session.get(Provider, r.provider_id).name,
        format_local=format_local,
        yuan=yuan,
        problem=problem,
        values=values or {},
    ), status


@bp.get("/bureau/redemptions/<int:redemption_id>/resolve")
@roles_required(*BUREAU_ROLES)
def bureau_resolve(redemption_id: int):
    return _render_resolve(_redemption_in_scope(redemption_id))


@bp.post("/bureau/redemptions/<int:redemption_id>/resolve")
@roles_required(*BUREAU_ROLES)
def bureau_resolve_post(redemption_id: int):
    """Resolve a card payment left waiting: the gateway is asked first (a charge that went
    through is redeemed), otherwise the payment is cancelled there and the hold given back."""
    r = _redemption_in_scope(redemption_id)
    try:
        status = payments.resolve_stuck_payment(
            r, actor=current_user, reason=request.form.get("reason", "")
        )
    except GatewayUnavailable as error:
        db.session.rollback()
        message = _l(
            "The payment service cannot be reached, so whether the card was charged is not "
            "known. Nothing was changed; try again when it answers."
        )
        problem = {"message": str(message), "fields": {}}
        return _render_resolve(_redemption_in_scope(redemption_id), error.status, problem)
    except DomainError as error:
        db.session.rollback()
        problem = problem_from(error, fields=("reason",))
        r = _redemption_in_scope(redemption_id)
        return _render_resolve(r, error.status, problem, request.form)
    if status == "redeemed":
        flash(_("The card had been charged: the redemption is now complete."), "success")
    else:
        flash(_("The payment was cancelled and the voucher amount given back."), "success")
    return redirect(url_for(".redemption_page", redemption_id=redemption_id))


# --------------------------------------------------------------------------- printed card


def _resident_in_scope(resident_id: int) -> Resident:
    resident = db.session.get(Resident, resident_id)
    if resident is None:
        raise NotFound()
    ensure_in_district(resident.district_id)
    return resident


def _render_card(resident: Resident, status=200, problem=None, problem_form=None):
    return render_template(
        "vouchers/bureau_card.html",
        resident=resident,
        masked=mask_name(resident.name),
        card=card_facts(card_of(resident.id)),
        card_action=lambda action: url_for(
            ".bureau_card_post", resident_id=resident.id, action=action
        ),
        card_download=lambda fmt: url_for(".bureau_card_image", resident_id=resident.id, fmt=fmt),
        problem=problem,
        problem_form=problem_form,
    ), status


@bp.get("/bureau/residents/<int:resident_id>/card")
@roles_required(*BUREAU_ROLES)
def bureau_card(resident_id: int):
    return _render_card(_resident_in_scope(resident_id))


@bp.post("/bureau/residents/<int:resident_id>/card/<action>")
@roles_required(*BUREAU_ROLES)
def bureau_card_post(resident_id: int, action: str):
    resident = _resident_in_scope(resident_id)
    try:
        back = url_for(".bureau_card", resident_id=resident_id)
        message = card_post(resident, action, request.form, back)
    except InvalidInput as error:
        db.session.rollback()
        problem = problem_from(error, fields=("pin", "pin_again"))
        return _render_card(_resident_in_scope(resident_id), 422, problem, f"card-{action}")
    flash(message, "success")
    return redirect(url_for(".bureau_card", resident_id=resident_id))


@bp.get("/bureau/residents/<int:resident_id>/card.<fmt>")
@roles_required(*BUREAU_ROLES)
def bureau_card_image(resident_id: int, fmt: str):
    return card_image(_resident_in_scope(resident_id), fmt)
