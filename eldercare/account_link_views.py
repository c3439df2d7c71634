"""Pages for linking accounts to residents: the account holder's request, the bureau's queue,
and the account the bureau creates for a resident (eldercare/account_links.py)."""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user

from eldercare import account_links
from eldercare.accounts import BUREAU_ROLES, FamilyLink, User
from eldercare.auth import ensure_in_district, roles_required
from eldercare.db import db
from eldercare.errors import DomainError, NotFound
from eldercare.forms import problem_from
from eldercare.residents import Resident

bp = Blueprint("links", __name__)
PAGE_SIZE = 50
_ASK_FIELDS = ("id_number", "name", "relationship")
_ACCOUNT_FIELDS = ("username", "display_name", "password", "relationship")


def _relationship_options(user) -> list[tuple[str, str]]:
    """The relationships this account may ask for: its own record for an elder's account,
    an agent's relationships for a family member's."""
    options = []
    for code, label in account_links.LINK_RELATIONSHIPS.items():
        role = "elder" if code == account_links.SELF else "family_agent"
        if user.has_role(role):
            options.append((code, str(label)))
    return options


def _ask_page(problem=None, values=None, status=200):
    return (
        render_template(
            "links/ask.html",
            requests=account_links.requests_of(current_user),
            options=_relationship_options(current_user),
            labels=account_links.LINK_RELATIONSHIPS,
            problem=problem,
            values=values or {},
        ),
        status,
    )


@bp.get("/account/link")
@roles_required("elder", "family_agent")
def ask():
    return _ask_page()


@bp.post("/account/link")
@roles_required("elder", "family_agent")
def ask_post():
    values = {name: request.form.get(name, "") for name in _ASK_FIELDS}
    try:
        account_links.request_link(current_user, **values)
    except DomainError as error:
        db.session.rollback()
        return _ask_page(problem_from(error, _ASK_FIELDS), values, error.status)
    flash(
        _("Your request has been sent. The civil-affairs bureau will check it and answer here."),
        "success",
    )
    return redirect(url_for("links.ask"))


# --- the bureau ----------------------------------------------------------------------------


def _queue_page(problem=None, failed_id=None, status=200):
    statement = account_links.requests_for_officer(current_user)
    pending = db.session.scalars(
        statement.order_by(account_links.AccountLinkRequest.id).limit(PAGE_SIZE)
    ).all()
    return (
        render_template(
            "links/queue.html",
            pending=pending,
            labels=account_links.LINK_RELATIONSHIPS,
            problem=problem,
            failed_id=failed_id,
        ),
        status,
    )


@bp.get("/bureau/link-requests")
@roles_required(*BUREAU_ROLES)
def queue():
    return _queue_page()


@bp.post("/bureau/link-requests/<int:request_id>/confirm")
@roles_required("bureau_officer")
def confirm(request_id: int):
    try:
        account_links.confirm_link(current_user, request_id)
    except NotFound:
        raise
    except DomainError as error:
        db.session.rollback()
        return _queue_page(problem_from(error), request_id, error.status)
    flash(_("The account is now linked to the resident."), "success")
    return redirect(url_for("links.queue"))


@bp.post("/bureau/link-requests/<int:request_id>/refuse")
@roles_required("bureau_officer")
def refuse(request_id: int):
    try:
        account_links.refuse_link(current_user, request_id, request.form.get("reason", ""))
    except NotFound:
        raise
    except DomainError as error:
        db.session.rollback()
        return _queue_page(problem_from(error, ("reason",)), request_id, error.status)
    flash(_("The request has been refused; the account holder sees your reason."), "success")
    return redirect(url_for("links.queue"))


def _resident_in_scope(resident_id: int) -> Resident:
    resident = db.session.get(Resident, resident_id)
    if resident is None:
        raise NotFound()
    ensure_in_district(resident.district_id)
    return resident


def linked_accounts(resident: Resident) -> list[tuple[User, str]]:
    """The accounts linked to a resident and how: (account, relationship code)."""
    own = db.session.scalars(db.select(User).where(User.resident_id == resident.id)).all()
    agents = db.session.execute(
        db.select(User, FamilyLink.relationship)
        .join(FamilyLink, FamilyLink.agent_user_id == User.id)
        .where(FamilyLink.resident_id == resident.id)
        .order_by(FamilyLink.id)
    ).all()
    return [(user, account_links.SELF) for user in own] + [tuple(row) for row in agents]


def resident_accounts_page(resident: Resident, problem=None, values=None, status=200):
    return (
        render_template(
            "links/resident_accounts.html",
            resident=resident,
            accounts=linked_accounts(resident),
            labels=account_links.LINK_RELATIONSHIPS,
            problem=problem,
            values=values or {},
        ),
        status,
    )


@bp.get("/bureau/residents/<int:resident_id>/accounts")
@roles_required(*BUREAU_ROLES)
def resident_accounts(resident_id: int):
    return resident_accounts_page(_resident_in_scope(resident_id))


@bp.post("/bureau/residents/<int:resident_id>/accounts")
@roles_required("bureau_officer")
def create_account(resident_id: int):
    resident = _resident_in_scope(resident_id)
    values = {name: request.form.get(name, "") for name in _ACCOUNT_FIELDS}
    try:
        user = account_links.create_linked_account(current_user, resident, **values)
    except DomainError as error:
        db.session.rollback()
        values.pop("password")
        resident = _resident_in_scope(resident_id)
        return resident_accounts_page(
            resident, problem_from(error, _ACCOUNT_FIELDS), values, error.status
        )
    flash(_("Account %(username)s created and linked.", username=user.username), "success")
    return redirect(url_for("links.resident_accounts", resident_id=resident_id))
