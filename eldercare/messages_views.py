"""Messages: every notice the outbox holds for the signed-in person, and where to email them.

Every role gets notices (families about vouchers and bookings, providers about bookings,
elders about assessments), so the page is for anyone signed in; it shows only one's own.
A notice is here whether or not it was emailed, which is what makes an account without an
email address a normal case rather than an error (eldercare/mail.py).
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required

from eldercare.db import db
from eldercare.errors import InvalidInput
from eldercare.forms import problem_from
from eldercare.mail import set_email
from eldercare.notifications import Notification
from eldercare.paging import page_number

bp = Blueprint("messages", __name__, url_prefix="/messages")
PAGE_SIZE = 50

CHANNEL_LABELS = {"email": _l("Sent to you by email")}


def delivery_text(message: Notification):
    """One line on how the notice reached (or did not reach) the person besides this page."""
    if message.status == "pending":
        return _("Waiting to be sent.")
    if message.status == "failed":
        return _("Could not be sent; you can read it here.")
    if message.last_error:  # delivered without its channel (no address): here only
        return _("Shown here only.")
    return CHANNEL_LABELS.get(message.channel, _l("Sent to you."))


def _page(problem=None, values=None, status=200):
    page = page_number(request.args.get("page"))
    mine = sa.select(Notification).where(Notification.recipient_user_id == current_user.id)
    total = db.session.scalar(sa.select(sa.func.count()).select_from(mine.subquery()))
    messages = db.session.scalars(
        mine.order_by(Notification.created_at.desc(), Notification.id.desc())
        .limit(PAGE_SIZE)
        .offset((page - 1) * PAGE_SIZE)
    ).all()
    pages = max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1)
    return (
        render_template(
            "messages/index.html",
            messages=messages,
            page=page,
            pages=pages,
            total=total,
            delivery_text=delivery_text,
            problem=problem,
            values=values if values is not None else {"email": current_user.email or ""},
        ),
        status,
    )


@bp.get("")
@login_required
def index():
    return _page()


@bp.post("/email")
@login_required
def update_email():
    typed = request.form.get("email", "")
    try:
        user = set_email(current_user.id, typed)
    except InvalidInput as error:
        db.session.rollback()
        return _page(problem_from(error, ("email",)), {"email": typed}, 422)
    if user.email:
        flash(_("Your notices will also be sent to %(email)s.", email=user.email), "success")
    else:
        flash(_("Your notices will be shown here only, not emailed."), "success")
    return redirect(url_for("messages.index"))
