"""The administrator's page for API tokens: create (secret shown once) and revoke."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _

from eldercare import confirmation
from eldercare.accounts import User
from eldercare.auth import roles_required
from eldercare.confirmation import Question
from eldercare.db import db
from eldercare.errors import DomainError, NotFound
from eldercare.forms import row_id
from eldercare.tokens import SCOPES, ApiToken, issue_token, revoke_token

bp = Blueprint("tokens", __name__, url_prefix="/admin/tokens")


def _render(status=200, **context):
    tokens = db.session.scalars(sa.select(ApiToken).order_by(ApiToken.id.desc())).all()
    users = db.session.scalars(sa.select(User).order_by(User.username)).all()
    return render_template(
        "admin/tokens.html", tokens=tokens, users=users, scopes=SCOPES, **context
    ), status


@bp.get("/")
@roles_required("admin")
def index():
    return _render()


@bp.post("/")
@roles_required("admin")
def create():
    user = db.session.get(User, request.form.get("user_id", type=row_id) or 0)
    try:
        if user is None:
            raise NotFound(_("Choose the account the token acts for."))
        token, secret = issue_token(
            user, request.form.get("name", ""), request.form.getlist("scopes")
        )
    except DomainError as error:
        db.session.rollback()
        return _render(422, error=error)
    return _render(201, new_secret=secret, new_token=token)


@bp.post("/<int:token_id>/revoke")
@roles_required("admin")
def revoke(token_id: int):
    token = db.session.get(ApiToken, token_id)
    if token is None:
        raise NotFound()
    confirmation.require(
        Question(
            title=_("Revoke the token %(name)s?", name=token.name),
            consequences=[
                _(
                    "Every program that calls with the token %(name)s (%(prefix)s…) is refused "
                    "from now on. A revoked token cannot be restored: the program needs a new one.",
                    name=token.name,
                    prefix=token.prefix,
                )
            ],
            button=_("Yes, revoke the token"),
            back=url_for("tokens.index"),
        )
    )
    revoke_token(token)
    flash(_("The token has been revoked."), "success")
    return redirect(url_for("tokens.index"))
