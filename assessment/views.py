"""The assessment domain's HTML blueprint, and what its pages for every audience share.

The pages themselves are in modules named for whom they serve; each adds its routes to ``bp``
and ``assessment/__init__.py`` imports them all:

- ``views_agency``: the agency's worklist, arranging visits;
- ``views_record``: the assessors' tablet form;
- ``views_bureau``: the bureau's assignment and review queues, and the agencies;
- ``views_residents``: the bureau's pages for one resident (find, apply, eligibility);
- ``views_elder``: elders' and family agents' own page (/assessment/my).

Every step goes through the service functions (``lifecycle``, ``eligibility``, ``agencies``);
a view only reads the form, calls the service, and on a ``DomainError`` rolls back and shows
the page again with the service's messages next to the fields they concern.
"""

from __future__ import annotations

from datetime import date

from flask import Blueprint, render_template

from assessment.eligibility import EXCLUSION_LABELS, Eligibility, eligibility_on
from assessment.forms import (
    ADJUSTMENT_LABELS,
    AGENCY_STATUS_LABELS,
    STATUS_LABELS,
    TYPE_LABELS,
    VIA_LABELS,
)
from assessment.instrument import instrument
from assessment.models import Assessment
from eldercare import forms as shell_forms
from eldercare.accounts import ROLES
from eldercare.auth import roles_required
from eldercare.db import db
from eldercare.errors import DomainError, NotFound
from eldercare.forms import row_id, yuan
from eldercare.i18n import current_locale
from eldercare.residents import Resident
from eldercare.timeutil import local_today

bp = Blueprint(
    "assessment",
    __name__,
    url_prefix="/assessment",
    template_folder="templates",
    static_folder="static",
)


# --------------------------------------------------------------------------- words


def _is_zh() -> bool:
    return current_locale().startswith("zh")


def label_of(thing) -> str:
    """An instrument entry's name in the reader's language."""
    return thing.zh if _is_zh() else thing.en


def other_label_of(thing) -> str:
    return thing.en if _is_zh() else thing.zh


def level_label(code: str | None) -> str:
    if not code:
        return "—"
    return label_of(instrument().level(code))


@bp.context_processor
def _page_helpers():
    return {
        "yuan": yuan,
        "level_label": level_label,
        "label_of": label_of,
        "other_label_of": other_label_of,
        "TYPE_LABELS": TYPE_LABELS,
        "STATUS_LABELS": STATUS_LABELS,
        "VIA_LABELS": VIA_LABELS,
        "ADJUSTMENT_LABELS": ADJUSTMENT_LABELS,
        "AGENCY_STATUS_LABELS": AGENCY_STATUS_LABELS,
        "EXCLUSION_LABELS": EXCLUSION_LABELS,
        "instrument": instrument(),
        "today": local_today(),
    }


# --------------------------------------------------------------------------- refusals


def problem_from(error: DomainError, fields=(), message_fields=()) -> dict:
    """What a page needs to show a service's refusal: the message and the field errors.

    Unlike the marketplace's pages, these leave out the details for fields the form does not
    have: the assessment services' details are terse words for API clients ("required", a
    code), not sentences for people.
    """
    return shell_forms.problem_from(error, fields, message_fields=message_fields, others=False)


# --------------------------------------------------------------------------- lookups


def get_case(case_id: int) -> Assessment:
    case = db.session.get(Assessment, case_id)
    if case is None:
        raise NotFound()
    return case


def disputed_assessment(form) -> Assessment | None:
    """The assessment an application disputes, as the form names it (the service judges it)."""
    disputed_id = form.get("disputed_assessment_id", type=row_id)
    return db.session.get(Assessment, disputed_id) if disputed_id else None


def eligibility_and_basis(resident: Resident, day: date) -> tuple[Eligibility, Assessment | None]:
    """A resident's eligibility on a day, and the assessment it rests on (if any)."""
    result = eligibility_on(resident, day)
    basis = db.session.get(Assessment, result.assessment_id) if result.assessment_id else None
    return result, basis


# --------------------------------------------------------------------------- hub


@bp.get("/")
@roles_required(*ROLES)
def index():
    """Every audience's starting page: cards for what the account may do."""
    return render_template("assessment/index.html", lookup_error=None, id_number="")
