"""The auditor's view of the trail: filter, page through, and check the chain."""

from __future__ import annotations

from datetime import datetime, time, timedelta

import sqlalchemy as sa
from flask import Blueprint, render_template, request

from eldercare.audit import AuditLog, verify_chain
from eldercare.auth import roles_required, scope_to_district
from eldercare.db import db
from eldercare.paging import page_number
from eldercare.timeutil import SHANGHAI, in_date_range

bp = Blueprint("audit", __name__, url_prefix="/audit")
PAGE_SIZE = 50


def _local_day_start(text: str | None):
    """'2025-07-01' as the UTC instant when that day starts in Shanghai, or None."""
    if not text:
        return None
    try:
        day = datetime.strptime(text, "%Y-%m-%d").date()
    except ValueError:
        return None
    if not in_date_range(day):  # year 9999's next day overflows
        return None
    return datetime.combine(day, time.min, tzinfo=SHANGHAI)


@bp.get("/")
@roles_required("auditor")
def index():
    args = request.args
    statement = scope_to_district(sa.select(AuditLog), AuditLog.district_id)
    if args.get("action"):
        statement = statement.where(AuditLog.action.startswith(args["action"].strip()))
    if args.get("object_type"):
        statement = statement.where(AuditLog.object_type == args["object_type"].strip())
    if args.get("object_id"):
        statement = statement.where(AuditLog.object_id == args["object_id"].strip())
    if args.get("actor"):
        statement = statement.where(AuditLog.actor_label == args["actor"].strip().lower())
    start = _local_day_start(args.get("date_from"))
    if start is not None:
        statement = statement.where(AuditLog.occurred_at >= start)
    end = _local_day_start(args.get("date_to"))
    if end is not None:
        statement = statement.where(AuditLog.occurred_at < end + timedelta(days=1))
    page = page_number(args.get("page"))
    rows = db.session.scalars(
        statement.order_by(AuditLog.id.desc()).limit(PAGE_SIZE + 1).offset((page - 1) * PAGE_SIZE)
    ).all()
    return render_template(
        "audit/index.html",
        rows=rows[:PAGE_SIZE],
        has_next=len(rows) > PAGE_SIZE,
        page=page,
        filters=args,
    )


@bp.get("/verify")
@roles_required("auditor")
def verify():
    return render_template("audit/verify.html", report=verify_chain())
