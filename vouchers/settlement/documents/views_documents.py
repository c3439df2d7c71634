"""Statements as documents, on the settlement blueprint ``bp``:

- ``verify`` (GET /settlement/verify/<token>, public): what a statement's QR opens. The
  token is the statement id signed with the app's SECRET_KEY (``facts``), so the
  page cannot be reached by counting ids. It shows the provider, month, statement number,
  status, the total to be paid, the hash stored at approval and whether the lines still
  hash to it now (recomputed); no elder's data. A forged or mangled token is a 404 page.
- ``my_statements`` (GET /settlement/my-statements): a provider administrator's own
  statements with their PDF and XLSX.
- ``statement_pdf`` / ``statement_xlsx`` (GET /settlement/statements/<id>/pdf|xlsx): the
  documents, for city-wide bureau staff and for the administrators of the statement's
  provider. Another provider's statement answers 404, as a missing one does: a provider
  does not learn that it exists.

The same downloads for API tokens are in ``api_documents`` (on ``api_statements.blp``).
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import Response, render_template
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required

from eldercare.accounts import BUREAU_ROLES
from eldercare.auth import roles_required
from eldercare.db import db
from eldercare.errors import NotFound, PermissionDenied
from eldercare.forms import yuan
from eldercare.navigation import Destination
from eldercare.streaming import row_body
from eldercare.timeutil import format_local
from marketplace.providers import administers_a_provider, provider_of, staff_record
from vouchers.exports import XLSX_TYPE
from vouchers.settlement.documents import facts
from vouchers.settlement.models import Statement
from vouchers.settlement.statements.hashing import statement_hash
from vouchers.settlement.views import bp

PDF_TYPE = "application/pdf"

STATUS_TEXT = {
    "prepared": _l("Prepared, awaiting approval"),
    "awaiting_second": _l("Approved once, awaiting a second approval"),
    "approved": _l("Approved, awaiting payment"),
    "paid": _l("Paid"),
    "rejected": _l("Rejected"),
}

DESTINATIONS = [
    Destination(
        "settlement.my_statements",
        _l("Settlement statements"),
        roles=("provider_admin",),
        description=_l(
            "What the subsidy pool owes you each month, and what it paid; PDF and XLSX."
        ),
    ),
]


# --------------------------------------------------------------------------- who may read


def readable_statement(statement_id: int, user) -> Statement:
    """The statement, if ``user`` may read it: city-wide bureau staff read every one, a
    provider's administrators their own. Anyone else, for another provider's statement or a
    missing one alike, gets 404."""
    statement = db.session.get(Statement, statement_id)
    if statement is None:
        raise NotFound()
    if user.has_role(*BUREAU_ROLES):
        if user.district_id is not None:
            raise PermissionDenied(
                _l("Statements are kept by the city-wide bureau staff, not a district's.")
            )
        return statement
    staff = staff_record(user)
    if staff is None or not staff.is_admin or staff.provider_id != statement.provider_id:
        raise NotFound()
    return statement


def _file_name(statement: Statement, ext: str) -> str:
    return f"statement-{facts.statement_number(statement)}.{ext}"


def pdf_response(statement: Statement) -> Response:
    from vouchers.settlement.documents.documents import statement_pdf

    response = Response(statement_pdf(statement), mimetype=PDF_TYPE)
    response.headers["Content-Disposition"] = (
        f'attachment; filename="{_file_name(statement, "pdf")}"'
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def xlsx_response(statement: Statement) -> Response:
    from vouchers.settlement.documents.statement_xlsx import statement_xlsx

    # The body loads the statement again in its own session (``eldercare.streaming``).
    response = Response(row_body(statement_xlsx, Statement, statement.id), mimetype=XLSX_TYPE)
    response.headers["Content-Disposition"] = (
        f'attachment; filename="{_file_name(statement, "xlsx")}"'
    )
    response.headers["Cache-Control"] = "no-store"
    return response


# --------------------------------------------------------------------------- downloads


@bp.get("/statements/<int:statement_id>/pdf", endpoint="statement_pdf")
@login_required
def statement_pdf_download(statement_id: int):
    return pdf_response(readable_statement(statement_id, current_user))


@bp.get("/statements/<int:statement_id>/xlsx", endpoint="statement_xlsx")
@login_required
def statement_xlsx_download(statement_id: int):
    return xlsx_response(readable_statement(statement_id, current_user))


# --------------------------------------------------------------------------- the provider's page


@bp.get("/my-statements", endpoint="my_statements")
@roles_required(also=administers_a_provider)  # the rule the menu asks too
def my_statements():
    provider = provider_of(current_user, admin=True)  # 403 with a message for anyone else
    statements = db.session.scalars(
        sa.select(Statement)
        .where(Statement.provider_id == provider.id)
        .order_by(Statement.month.desc(), Statement.seq.desc())
    ).all()
    return render_template(
        "settlement/my_statements.html",
        provider=provider,
        statements=statements,
        number=facts.statement_number,
        status_text=STATUS_TEXT,
        yuan=yuan,
        format_local=format_local,
    )


# --------------------------------------------------------------------------- the QR's page


def hash_check(statement: Statement) -> dict:
    """What the verification page says about the hash: ``state`` is 'yes' (the lines hash to
    what was stored at approval), 'no' (they do not: changed after approval), 'none' (no
    hash stored yet: not approved) or 'rejected'."""
    current = statement_hash(statement) if statement.status != "rejected" else None
    if statement.status == "rejected":
        state = "rejected"
    elif not statement.lines_hash:
        state = "none"
    else:
        state = "yes" if current == statement.lines_hash else "no"
    return {"state": state, "stored": statement.lines_hash, "current": current}


@bp.get("/verify/<token>", endpoint="verify")
def verify(token: str):
    statement_id = facts.statement_id_from_token(token)
    statement = db.session.get(Statement, statement_id) if statement_id is not None else None
    if statement is None:
        raise NotFound(
            _l(
                "This verification link is not valid: no statement has it. Check that the "
                "whole code was scanned, or ask the civil affairs bureau."
            )
        )
    head = facts.summary(statement)
    response = Response(
        render_template(
            "settlement/verify.html",
            head=head,
            status_text=STATUS_TEXT.get(statement.status, statement.status),
            check=hash_check(statement),
            yuan=yuan,
        )
    )
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Robots-Tag"] = "noindex"
    return response
