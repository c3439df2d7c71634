"""The account an assessment-fee refund is paid to, given on two pages:

- ``my_refund_account`` (POST /assessment/my/refunds/<id>/account): the elder or a family
  agent, from their own page (/assessment/my, which shows each refund and its form);
- ``fee_refund_account`` (GET/POST /assessment/fee-refunds/<id>/account): a bureau officer
  of the refund's district on the elder's behalf, saying on whose word; reached from the
  bureau's fee-refund list.

Both -> ``assessment.refund_accounts.set_account`` (validated, audited, refused once the
refund is paid or in a bank batch).
"""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user

from assessment import refund_accounts
from assessment.views import bp, problem_from
from assessment.views_elder import render_my
from eldercare.accounts import BUREAU_ROLES, ELDER_ROLES
from eldercare.auth import roles_required
from eldercare.db import db
from eldercare.errors import DomainError
from eldercare.residents import Resident

FIELDS = ("account_name", "bank_name", "account_number", "note")


def _form() -> dict:
    return {
        "account_name": request.form.get("account_name", ""),
        "bank_name": request.form.get("bank_name", ""),
        "account_number": request.form.get("account_number", ""),
    }


@bp.post("/my/refunds/<int:refund_id>/account")
@roles_required(*ELDER_ROLES)
def my_refund_account(refund_id: int):
    refund = refund_accounts.refund_for_elder(refund_id, current_user)
    try:
        refund_accounts.set_account(refund, actor=current_user, **_form())
    except DomainError as error:
        db.session.rollback()
        problem = problem_from(error, fields=FIELDS)
        refund = refund_accounts.refund_for_elder(refund_id, current_user)
        return render_my(
            error.status, problem, refund.resident_id, refund_id=refund.id, values=request.form
        )
    flash(_("Thank you. The refund will be paid to this account."), "success")
    return redirect(url_for(".my", _anchor=f"refund-{refund_id}"))


def _render_bureau(refund, status=200, problem=None, values=None):
    if values is None:
        values = {
            "account_name": refund.payee_account_name or "",
            "bank_name": refund.payee_bank_name or "",
            "account_number": refund.payee_account_number or "",
        }
    return render_template(
        "assessment/fee_refund_account.html",
        refund=refund,
        resident=db.session.get(Resident, refund.resident_id),
        changeable=refund_accounts.changeable(refund),
        problem=problem,
        values=values,
    ), status


@bp.get("/fee-refunds/<int:refund_id>/account")
@roles_required(*BUREAU_ROLES)
def fee_refund_account(refund_id: int):
    return _render_bureau(refund_accounts.refund_for_bureau(refund_id, current_user))


@bp.post("/fee-refunds/<int:refund_id>/account")
@roles_required(*BUREAU_ROLES)
def fee_refund_account_post(refund_id: int):
    refund = refund_accounts.refund_for_bureau(refund_id, current_user)
    try:
        refund_accounts.set_account(
            refund, actor=current_user, note=request.form.get("note", ""), **_form()
        )
    except DomainError as error:
        db.session.rollback()
        problem = problem_from(error, fields=FIELDS)
        refund = refund_accounts.refund_for_bureau(refund_id, current_user)
        return _render_bureau(refund, error.status, problem, request.form)
    flash(_("The refund's account was recorded."), "success")
    return redirect(url_for(".fee_refund_list"))
