"""The bureau's certification queue: applications, decisions about certified providers,
renewals and star levels.

Bureau officers and approvers see the queue (district staff only their district's
providers); only approvers decide. Each decision calls the ``providers`` service, which
audits it; a refusal rolls back and shows the queue again (422) with the message on the
provider's card.
"""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from flask import flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from sqlalchemy.orm import selectinload

from eldercare import confirmation
from eldercare.auth import ensure_in_district, roles_required, scope_to_district
from eldercare.confirmation import Question
from eldercare.db import db
from eldercare.errors import DomainError, InvalidInput, NotFound
from eldercare.forms import problem_from
from eldercare.timeutil import local_today
from marketplace import documents, providers
from marketplace.forms import PROVIDER_STATUS_LABELS
from marketplace.models import DOCUMENT_KINDS, Provider, ProviderDocument
from marketplace.views import bp
from marketplace.views_provider import EXPIRY_WARNING_DAYS

PAGE_SIZE = 20
# The waiver inputs are per document kind: ``waive_<kind>`` (ticked) and its reason.
WAIVER_FIELDS = tuple(documents.waiver_field(kind) for kind in DOCUMENT_KINDS)
DECISION_FIELDS = ("reason", "note", "decision", "star_level", *WAIVER_FIELDS)

# The queue's tabs: what each shows, in which order.
SHOW_LABELS = {
    "applied": _l("Applications"),
    "expiring": _l("Expired or ending within 30 days"),
    "active": _l("Certified"),
    "suspended": _l("Suspended"),
    "closed": _l("Rejected or revoked"),
}
# What an approver may decide about a certified provider in each status (the service has
# the last word on whether it is allowed).
STATUS_DECISIONS = {
    "active": (("suspend", _l("Suspend")), ("revoke", _l("Revoke"))),
    "suspended": (("reinstate", _l("Reinstate")), ("revoke", _l("Revoke"))),
}
_DECIDE = {
    "suspend": providers.suspend,
    "reinstate": providers.reinstate,
    "revoke": providers.revoke,
}


def _filtered(show: str, today):
    statement = sa.select(Provider)
    if show == "applied":
        return statement.where(Provider.status == "applied").order_by(Provider.created_at)
    if show == "expiring":
        return statement.where(
            Provider.status.in_(("active", "suspended")),
            Provider.certified_until <= today + timedelta(days=EXPIRY_WARNING_DAYS - 1),
        ).order_by(Provider.certified_until, Provider.name)
    if show == "closed":
        return statement.where(Provider.status.in_(("rejected", "revoked"))).order_by(
            Provider.status_changed_at.desc(), Provider.id.desc()
        )
    return statement.where(Provider.status == show).order_by(Provider.name, Provider.id)


def _count(statement) -> int:
    return db.session.scalar(
        sa.select(sa.func.count()).select_from(statement.order_by(None).subquery())
    )


def _queue_args(source) -> dict:
    """The tab, search and page to come back to, from the query string or a form."""
    show = source.get("show", "applied")
    page = str(source.get("page", "1"))[:6]
    return {
        "show": show if show in SHOW_LABELS else "applied",
        "q": (source.get("q") or "").strip()[:100],
        "page": max(int(page), 1) if page.isdecimal() and page.isascii() else 1,
    }


def render_queue(
    status=200, problem=None, target: Provider | None = None, form=None, sent: str | None = None
):
    args = _queue_args(form if form is not None else request.args)
    today = local_today()
    scoped = {
        show: scope_to_district(_filtered(show, today), Provider.district_id)
        for show in SHOW_LABELS
    }
    statement = scoped[args["show"]]
    if args["q"]:
        q = args["q"]
        statement = statement.where(
            sa.or_(Provider.name.contains(q, autoescape=True), Provider.credit_code == q.upper())
        )
    if target is not None:
        statement = statement.where(Provider.id != target.id)
    total = _count(statement)
    listed = list(
        db.session.scalars(
            statement.options(
                selectinload(Provider.district), selectinload(Provider.service_districts)
            )
            .limit(PAGE_SIZE)
            .offset((args["page"] - 1) * PAGE_SIZE)
        )
    )
    shown = ([target] if target is not None else []) + listed
    docs_by_provider: dict[int, list[ProviderDocument]] = {p.id: [] for p in shown}
    if shown:
        for doc in db.session.scalars(
            sa.select(ProviderDocument)
            .where(ProviderDocument.provider_id.in_(list(docs_by_provider)))
            .order_by(ProviderDocument.uploaded_at.desc(), ProviderDocument.id.desc())
        ):
            docs_by_provider[doc.provider_id].append(doc)
    return render_template(
        "marketplace/certification_queue.html",
        args=args,
        counts={show: _count(st) for show, st in scoped.items()},
        show_labels=SHOW_LABELS,
        target=target,
        listed=listed,
        total=total,
        pages=max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1),
        docs_by_provider=docs_by_provider,
        missing_by_provider={
            p.id: documents.missing_kinds(p, docs_by_provider[p.id]) for p in shown
        },
        status_decisions=STATUS_DECISIONS,
        waiver_max=documents.MAX_WAIVER_REASON,
        problem=problem,
        form=form or {},
        sent=sent,
    ), status


@bp.get("/bureau/providers")
@roles_required("bureau_officer", "bureau_approver")
def certification_queue():
    return render_queue()


def _provider(provider_id: int) -> Provider:
    provider = db.session.get(Provider, provider_id)
    if provider is None:
        raise NotFound()
    ensure_in_district(provider.district_id)
    return provider


def _decide(provider_id: int, sent: str, decision, success_message):
    """Run one decision; on a refusal show the queue again with the message on the card."""
    provider = _provider(provider_id)
    form = request.form
    try:
        decision(provider, form)
    except DomainError as error:
        db.session.rollback()
        provider = _provider(provider_id)  # reloaded: the rollback expired it
        problem = problem_from(error, DECISION_FIELDS)
        return render_queue(422, problem, provider, form, sent)
    flash(success_message(provider), "success")
    args = _queue_args(form)
    return redirect(url_for(".certification_queue", **args) + f"#provider-{provider.id}")


def _waivers(form) -> dict[str, str]:
    """The documents the approver ticked to waive, each with the reason typed for it (blank
    if none: the service refuses a waiver without a reason, naming the document)."""
    return {
        kind: form.get(documents.waiver_field(kind), "")
        for kind in DOCUMENT_KINDS
        if form.get(f"waive_{kind}")
    }


def _certify(decision):
    """Approve or renew with the form's note and waivers, the signed-in approver deciding."""
    return lambda provider, form: decision(
        provider,
        note=form.get("note") or None,
        approver=current_user._get_current_object(),
        waivers=_waivers(form),
    )


@bp.post("/bureau/providers/<int:provider_id>/approve")
@roles_required("bureau_approver")
def certification_approve(provider_id: int):
    return _decide(
        provider_id,
        "approve",
        _certify(providers.approve),
        lambda provider: _(
            "%(name)s is certified until %(day)s.",
            name=provider.name,
            day=provider.certified_until.isoformat(),
        ),
    )


@bp.post("/bureau/providers/<int:provider_id>/reject")
@roles_required("bureau_approver")
def certification_reject(provider_id: int):
    return _decide(
        provider_id,
        "reject",
        _reject,
        lambda provider: _("The application of %(name)s is rejected.", name=provider.name),
    )


def _back_to(provider: Provider) -> str:
    return url_for(".certification_queue", **_queue_args(request.form)) + f"#provider-{provider.id}"


def _status_question(provider: Provider, decision: str) -> Question | None:
    """Suspending and revoking stop a provider's business at once: asked first."""
    reason = (request.form.get("reason") or "").strip()
    if decision == "suspend":
        title = _("Suspend %(name)s?", name=provider.name)
        words = _(
            "From now %(name)s is hidden from search and can accept no booking and no "
            "voucher, until the bureau reinstates it.",
            name=provider.name,
        )
        button = _("Yes, suspend %(name)s", name=provider.name)
    elif decision == "revoke":
        title = _("Revoke the certification of %(name)s?", name=provider.name)
        words = _(
            "%(name)s loses its certification for good: it is hidden from search and can "
            "accept no booking and no voucher. Only a new application can certify it again.",
            name=provider.name,
        )
        button = _("Yes, revoke the certification")
    else:
        return None
    return Question(
        title=title,
        consequences=[words, _("The provider is told the reason: %(reason)s", reason=reason)],
        button=button,
        back=_back_to(provider),
    )


def _change_status(provider: Provider, form) -> None:
    decision = form.get("decision", "")
    decide = _DECIDE.get(decision)
    if decide is None:
        raise InvalidInput(details={"decision": _l("Choose a decision.")})
    decide(provider, form.get("reason", ""))
    # After the service's checks (a reason is required); the question's rollback undoes it.
    question = _status_question(provider, decision)
    if question:
        confirmation.require(question)


def _reject(provider: Provider, form) -> None:
    providers.reject(provider, form.get("reason", ""))
    confirmation.require(
        Question(
            title=_("Reject the application of %(name)s?", name=provider.name),
            consequences=[
                _(
                    "%(name)s is not certified and cannot list services; to try again it "
                    "must apply anew. It is told the reason: %(reason)s",
                    name=provider.name,
                    reason=(form.get("reason") or "").strip(),
                )
            ],
            button=_("Yes, reject the application"),
            back=_back_to(provider),
        )
    )


@bp.post("/bureau/providers/<int:provider_id>/status")
@roles_required("bureau_approver")
def certification_status(provider_id: int):
    return _decide(
        provider_id,
        "status",
        _change_status,
        lambda provider: _(
            "The decision about %(name)s is recorded: %(status)s.",
            name=provider.name,
            status=PROVIDER_STATUS_LABELS[provider.status],
        ),
    )


@bp.post("/bureau/providers/<int:provider_id>/renew")
@roles_required("bureau_approver")
def certification_renew(provider_id: int):
    return _decide(
        provider_id,
        "renew",
        _certify(providers.renew),
        lambda provider: _(
            "%(name)s is certified until %(day)s.",
            name=provider.name,
            day=provider.certified_until.isoformat(),
        ),
    )


@bp.post("/bureau/providers/<int:provider_id>/stars")
@roles_required("bureau_approver")
def certification_stars(provider_id: int):
    return _decide(
        provider_id,
        "stars",
        lambda provider, form: providers.set_star_level(
            provider, form.get("star_level", type=int), form.get("reason", "")
        ),
        lambda provider: _(
            "%(name)s now has %(stars)s stars.", name=provider.name, stars=provider.star_level
        ),
    )
