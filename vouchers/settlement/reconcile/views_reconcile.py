"""The reconciliation page and the exception queue.

- ``reconcile_page`` (GET /settlement/reconcile?month=YYYY-MM): the last run of the month:
  the pool identity in total and per district, each check green or red with its evidence,
  when it ran; red while any finding of the month (or of the books) is open. Bureau staff;
  a district's officers see their district's row and findings only.
- ``reconcile_now`` (POST): reconcile the month now (city-wide bureau staff); clicks closer
  together than a minute show the last run instead (it reads the whole month).
- ``exceptions_page`` (GET /settlement/exceptions?status=&month=&kind=): the queue, open and
  resolved, each finding's evidence and, for city-wide staff, a form to resolve it in
  writing (``exceptions_resolve``, POST; audited by ``exceptions.resolve``).
"""

from __future__ import annotations

import re
from datetime import date, timedelta

import sqlalchemy as sa
from flask import abort, flash, redirect, render_template, request, url_for
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from eldercare.accounts import BUREAU_ROLES
from eldercare.auth import roles_required
from eldercare.db import db
from eldercare.errors import DomainError, InvalidInput, PermissionDenied
from eldercare.forms import problem_from, yuan
from eldercare.navigation import Destination
from eldercare.residents import District
from eldercare.timeutil import format_local, local_today, now_utc
from vouchers.settlement import exceptions as queue
from vouchers.settlement.models import SettlementException
from vouchers.settlement.reconcile import reconcile
from vouchers.settlement.reconcile.pool import BALANCE_TERMS, DISTRICT_TERMS
from vouchers.settlement.statements.run import parse_month
from vouchers.settlement.views import bp

BUTTON_INTERVAL = timedelta(minutes=1)
QUEUE_PAGE = 100
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")

TERM_LABELS = {
    "pool_available": _l("Pool, not yet allocated"),
    "districts_available": _l("District allocations, not yet issued"),
    "outstanding": _l("On vouchers, not yet used"),
    "held": _l("Held for payments in progress"),
    "unsettled": _l("Redeemed, not yet settled"),
    "provider_payable": _l("Owed to providers (approved statements)"),
    "settled": _l("Paid to providers"),
    "fee_refunds": _l("Fee refunds (in the bank or paid)"),
    "settlement_payable": _l("In a settlement batch (former account)"),
}
DISTRICT_LABELS = {
    "available": _l("Allocation not yet issued"),
    "outstanding": _l("On vouchers"),
    "held": _l("Held"),
    "unsettled": _l("Redeemed, unsettled"),
    "approved": _l("In approved statements"),
    "paid": _l("In paid statements"),
}
CHECKS = {
    "identity": _l("Pool identity"),
    "ledger": _l("Ledger and sub-ledgers"),
    "gateway": _l("Card gateway"),
    "bank": _l("Bank"),
    "statement": _l("Approved statements' hashes"),
}
GATEWAY_STATUS = {
    "ok": _l("Every card payment and refund matches the gateway."),
    "mismatch": _l("The gateway and the platform differ."),
    "not_checked": _l("Not checked: card payments are off (no gateway configured)."),
    "unavailable": _l("Not checked: the gateway could not be reached. Reconcile again later."),
}
STATUS_FILTERS = {"open": _l("Open"), "resolved": _l("Resolved"), "all": _l("All")}

DESTINATIONS = [
    Destination(
        "settlement.reconcile_page",
        _l("Reconciliation"),
        description=_l(
            "Every fen of the pool accounted for, the card gateway, the bank and the approved "
            "statements, with the findings still open."
        ),
    ),
    Destination("settlement.exceptions_page", _l("Settlement exceptions")),
]


def _month_arg(text: str | None, default: date) -> date:
    """The month asked for; none given: ``default``; one given but not a month of the
    programme (YYYY-MM, years 2000-2099): refused with the reason, nothing done."""
    if not (text or "").strip():
        return default
    found = _MONTH.match(text.strip())
    if not found:
        raise InvalidInput(details={"month": _l("Give the month as YYYY-MM, for example 2026-11.")})
    return parse_month(text)


def _city_staff() -> None:
    """Reconciling and resolving are the city bureau's: a district's officers read."""
    if current_user.district_id is not None:
        raise PermissionDenied(_l("This is for the city bureau's staff."))


def _mine(item: dict) -> bool:
    scope = current_user.district_id
    return scope is None or item.get("district_id") == scope


def _checks(run) -> list[dict]:
    """Each check, green or red, with the findings behind it (the reader's ones)."""
    mismatches = [m for m in run.findings["mismatches"] if _mine(m)]
    shown = []
    for key, label in CHECKS.items():
        found = [
            m | {"label": queue.kind_label(m["kind"])} for m in mismatches if m["check"] == key
        ]
        status = "ok" if not found else "red"
        if key == "gateway":
            gw = run.findings["gateway"]["status"]
            status = (
                "red" if found or gw == "unavailable" else ("grey" if gw == "not_checked" else "ok")
            )
        shown.append({"key": key, "label": label, "status": status, "found": found})
    return shown


@bp.get("/reconcile")
@roles_required(*BUREAU_ROLES)
def reconcile_page():
    month = _month_arg(request.args.get("month"), reconcile.previous_month())
    run = reconcile.last_run(month)
    scope = current_user.district_id
    open_count = reconcile.open_exceptions(month, district_id=scope)
    districts = []
    names = {d.id: d.display_name(_locale()) for d in db.session.scalars(sa.select(District))}
    if run is not None:
        districts = [
            d | {"name": names.get(d["district_id"], d["code"])}
            for d in run.findings["districts"]
            if _mine(d)
        ]
    green = (
        run is not None
        and open_count == 0
        and all(c["status"] != "red" for c in _checks(run))
        and all(d["ok"] for d in districts)
    )
    if scope is None and run is not None:
        green = green and run.ok
    return render_template(
        "settlement/reconcile.html",
        month=month,
        months=[reconcile.previous_month(), local_today().replace(day=1)],
        run=run,
        when=format_local(run.finished_at) if run else None,
        identity=run.findings["identity"] if run and scope is None else None,
        districts=districts,
        checks=_checks(run) if run else [],
        gateway_text=GATEWAY_STATUS.get(run.findings["gateway"]["status"]) if run else None,
        open_count=open_count,
        green=green,
        city=scope is None,
        term_labels=[(t, TERM_LABELS[t]) for t in BALANCE_TERMS],
        district_labels=[(t, DISTRICT_LABELS[t]) for t in DISTRICT_TERMS],
        yuan=yuan,
        evidence_text=evidence_text,
    )


def _locale() -> str:
    return str(get_locale() or "zh_CN")


@bp.post("/reconcile")
@roles_required(*BUREAU_ROLES)
def reconcile_now():
    _city_staff()
    month = _month_arg(request.form.get("month"), reconcile.previous_month())
    last = reconcile.last_run(month)
    if last is not None and last.finished_at > now_utc() - BUTTON_INTERVAL:
        flash(_("This month was reconciled less than a minute ago: the result below is that run."))
        return redirect(url_for(".reconcile_page", month=f"{month:%Y-%m}"))
    run = reconcile.reconcile_month(month, actor=current_user)
    if run.ok:
        flash(_("Reconciled just now: everything matches."), "success")
    else:
        flash(_("Reconciled just now: something does not match. See the findings."), "error")
    return redirect(url_for(".reconcile_page", month=f"{month:%Y-%m}"))


# Evidence keys as the reader calls them; a key not listed is shown as it is.
EVIDENCE_LABELS = {
    "statement": _l("Statement"),
    "provider": _l("Provider"),
    "status": _l("Status"),
    "stored": _l("Hash stored at approval"),
    "now": _l("Hash now"),
    "totals": _l("Statement totals"),
    "lines": _l("Sum of its lines"),
    "account": _l("Account"),
    "ledger": _l("In the books"),
    "rows": _l("In the rows behind it"),
    "entry": _l("Journal entry"),
    "voucher": _l("Voucher"),
    "redemption": _l("Redemption"),
    "intent": _l("Payment intent"),
    "refund": _l("Refund"),
    "amount": _l("Amount"),
    "gateway_status": _l("Status at the gateway"),
    "gateway_amount": _l("Amount at the gateway"),
    "platform_amount": _l("Amount recorded here"),
    "platform_state": _l("State recorded here"),
    "created": _l("Created"),
    "transfer": _l("Bank transfer"),
    "reference": _l("Reference"),
    "payable": _l("Payable"),
    "paid_transfers": _l("Paid transfers"),
    "paid_amount": _l("Amount paid"),
    "code": _l("District"),
    "allocated": _l("Allocated"),
    "difference": _l("Difference"),
    "funded": _l("Funds received (central and local)"),
    "settle_entries": _l("Approval entries"),
    "pay_entries": _l("Payment entries"),
}
# Amounts in fen whose key does not end in "_fen" (the identities' terms).
MONEY_KEYS = {"allocated", "returned", "right", "difference", "funded", "clawback_pair"}
MONEY_KEYS |= {"copay_group", *BALANCE_TERMS, *DISTRICT_TERMS}
HIDDEN_KEYS = {"district_id", "ok", "terms_ok"}


def _value(key: str, value) -> str:
    money = key.endswith("_fen") or key in MONEY_KEYS
    if isinstance(value, int) and not isinstance(value, bool) and money:
        return yuan(value)
    if isinstance(value, dict):
        return "; ".join(f"{_label(k)} {_value(k, v)}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "—"
    return "—" if value is None else str(value)


def _label(key: str) -> str:
    bare = key.removesuffix("_fen")
    return str(EVIDENCE_LABELS.get(bare, TERM_LABELS.get(bare, DISTRICT_LABELS.get(bare, bare))))


def evidence_text(evidence: dict) -> list[tuple[str, str]]:
    """Evidence as label/value pairs in the reader's language: amounts in yuan, nested
    values (an identity's terms, a statement's totals) spelled out."""
    return [(_label(k), _value(k, v)) for k, v in evidence.items() if k not in HIDDEN_KEYS]


def _queue_rows(status: str, month: date | None, kind: str | None):
    query = sa.select(SettlementException).order_by(
        SettlementException.found_at.desc(), SettlementException.id.desc()
    )
    if status in ("open", "resolved"):
        query = query.where(SettlementException.status == status)
    if month is not None:
        query = query.where(reconcile.of_month(month))
    if kind:
        query = query.where(SettlementException.kind == kind)
    if current_user.district_id is not None:
        query = query.where(SettlementException.district_id == current_user.district_id)
    return list(db.session.scalars(query.limit(QUEUE_PAGE)))


def _render_queue(status_code=200, problem=None, problem_id=None, values=None):
    status = request.args.get("status", "open")
    status = status if status in STATUS_FILTERS else "open"
    month_text = request.args.get("month")
    month = _month_arg(month_text, None) if month_text else None
    kind = request.args.get("kind") or None
    kind = kind if kind in queue.KIND_LABELS else None
    return render_template(
        "settlement/reconcile_exceptions.html",
        rows=_queue_rows(status, month, kind),
        status=status,
        month=month,
        kind=kind,
        status_filters=list(STATUS_FILTERS.items()),
        kinds=sorted((k, str(v)) for k, v in queue.KIND_LABELS.items()),
        kind_label=queue.kind_label,
        evidence_text=evidence_text,
        format_local=format_local,
        can_resolve=current_user.district_id is None,
        problem=problem,
        problem_id=problem_id,
        values=values or {},
    ), status_code


@bp.get("/exceptions")
@roles_required(*BUREAU_ROLES)
def exceptions_page():
    return _render_queue()


@bp.post("/exceptions/<int:exception_id>/resolve")
@roles_required(*BUREAU_ROLES)
def exceptions_resolve(exception_id: int):
    _city_staff()
    found = db.session.get(SettlementException, exception_id)
    if found is None:
        abort(404)
    try:
        queue.resolve(found, resolution=request.form.get("resolution", ""), actor=current_user)
    except DomainError as error:
        db.session.rollback()
        problem = problem_from(error, fields=("resolution",))
        return _render_queue(error.status, problem, exception_id, request.form)
    flash(_("The finding is resolved; your resolution is in the audit trail."), "success")
    return redirect(url_for(".exceptions_page", status=request.args.get("status", "open")))
