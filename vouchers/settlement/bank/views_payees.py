"""Payment account pages.

- ``payee_account`` (GET/POST /settlement/payment-account, a provider's administrators):
  the account settlements are paid to (masked but for its last four digits), the request
  waiting for the bureau, past decisions, and the form to request a change.
- ``payee_changes`` (GET /settlement/payee-changes, city-wide bureau staff): the requests
  waiting, each with the current and the requested account, approve or reject with a reason.
"""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from eldercare import confirmation
from eldercare.accounts import BUREAU_ROLES
from eldercare.auth import roles_required
from eldercare.confirmation import Question
from eldercare.db import db
from eldercare.errors import DomainError
from eldercare.forms import problem_from
from eldercare.navigation import Destination
from marketplace.models import Provider
from marketplace.providers import administers_a_provider, provider_of
from vouchers.settlement.bank import payees
from vouchers.settlement.bank.bank_files import require_city_bureau
from vouchers.settlement.views import bp

FIELDS = ("account_name", "bank_name", "account_number")
STATUS_LABELS = {
    "pending": _l("Waiting for the bureau"),
    "approved": _l("Approved"),
    "rejected": _l("Rejected"),
}

DESTINATIONS = [
    Destination(
        "settlement.payee_account",
        _l("Payment account"),
        description=_l("The bank account your settlements are paid to, and changing it."),
    ),
    Destination("settlement.payee_changes", _l("Bank account changes")),
]


def _render_account(provider, status=200, problem=None, values=None):
    return render_template(
        "settlement/payee_account.html",
        provider=provider,
        masked=payees.masked(provider.bank_account_number),
        pending=payees.pending_of(provider.id),
        history=payees.history_of(provider.id),
        status_labels=STATUS_LABELS,
        masked_of=payees.masked,
        problem=problem,
        values=values or {},
    ), status


@bp.get("/payment-account")
@roles_required("provider_admin", also=administers_a_provider)
def payee_account():
    return _render_account(provider_of(current_user, admin=True))


@bp.post("/payment-account")
@roles_required("provider_admin")
def payee_account_request():
    provider = provider_of(current_user, admin=True)
    form = request.form
    try:
        payees.request_change(
            provider,
            account_name=form.get("account_name", ""),
            bank_name=form.get("bank_name", ""),
            account_number=form.get("account_number", ""),
            actor=current_user,
        )
    except DomainError as error:
        db.session.rollback()
        provider = provider_of(current_user, admin=True)
        return _render_account(provider, 422, problem_from(error, FIELDS), form)
    flash(
        _(
            "Your request has been sent. Settlements go to the new account once the bureau "
            "approves it."
        ),
        "success",
    )
    return redirect(url_for(".payee_account"))


def _render_changes(status=200, problem=None, target=None, values=None):
    require_city_bureau(current_user)
    return render_template(
        "settlement/payee_changes.html",
        changes=payees.pending_changes(),
        problem=problem,
        target=target,
        values=values or {},
    ), status


@bp.get("/payee-changes")
@roles_required(*BUREAU_ROLES, also=require_city_bureau)
def payee_changes():
    return _render_changes()


@bp.post("/payee-changes/<int:change_id>/approve")
@roles_required(*BUREAU_ROLES)
def payee_change_approve(change_id: int):
    change = payees.change_by_id(change_id)
    provider = db.session.get(Provider, change.provider_id)
    now = (provider.bank_account_name, provider.bank_name, provider.bank_account_number)
    try:
        payees.approve(change, actor=current_user)
    except DomainError as error:
        db.session.rollback()
        return _render_changes(422 if error.status == 422 else error.status,
                               problem_from(error, ()), change_id)  # fmt: skip
    # After the service's checks (not one's own request, still waiting); the question's
    # rollback undoes the approval until it is confirmed.
    confirmation.require(
        Question(
            title=_("Pay %(name)s to a new bank account?", name=provider.name),
            consequences=[
                _(
                    "Every statement of %(name)s from now on is paid to the account below, "
                    "not to the one it is paid to now. Money sent to a wrong account may "
                    "not come back.",
                    name=provider.name,
                )
            ],
            facts=[
                (_("New account holder"), change.account_name),
                (_("New bank and branch"), change.bank_name),
                (_("New account number"), change.account_number),
                (_("Paid to now"), " · ".join(v or "—" for v in now)),
            ],
            button=_("Yes, pay to the new account"),
            back=url_for(".payee_changes") + f"#change-{change.id}",
        )
    )
    flash(_("The change is approved: the next statements are paid to the new account."), "success")
    return redirect(url_for(".payee_changes"))


@bp.post("/payee-changes/<int:change_id>/reject")
@roles_required(*BUREAU_ROLES)
def payee_change_reject(change_id: int):
    change = payees.change_by_id(change_id)
    try:
        payees.reject(change, reason=request.form.get("reason", ""), actor=current_user)
    except DomainError as error:
        db.session.rollback()
        return _render_changes(error.status, problem_from(error, ("reason",)), change_id,
                               request.form)  # fmt: skip
    flash(_("The change is rejected; the provider is told the reason."), "success")
    return redirect(url_for(".payee_changes"))
