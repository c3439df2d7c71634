"""Bureau pages for the resident register; district staff see only their district."""

from __future__ import annotations

import re

import sqlalchemy as sa
from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import FloatField, SelectField, StringField
from wtforms.validators import Optional

from eldercare.accounts import BUREAU_ROLES
from eldercare.auth import ensure_in_district, roles_required, scope_to_district
from eldercare.db import db
from eldercare.errors import DomainError, NotFound
from eldercare.i18n import current_locale
from eldercare.paging import page_number
from eldercare.register import register_resident
from eldercare.residents import District, Resident

bp = Blueprint("register", __name__, url_prefix="/bureau/residents")
PAGE_SIZE = 50


class ResidentForm(FlaskForm):
    id_number = StringField(_l("Resident ID number"))
    name = StringField(_l("Name"))
    phone = StringField(_l("Phone (optional)"))
    district_id = SelectField(_l("District"), coerce=int)
    street = StringField(_l("Street or sub-district"))
    address = StringField(_l("Home address"))
    latitude = FloatField(_l("Latitude (optional)"), validators=[Optional()])
    longitude = FloatField(_l("Longitude (optional)"), validators=[Optional()])


def _district_choices():
    statement = scope_to_district(sa.select(District).order_by(District.code), District.id)
    return list(db.session.scalars(statement))


# More of an ID number than its last four characters (all the search matches), in an
# address (?q=...): refused.
LONG_ID_PART = re.compile(r"\d{4,}[0-9Xx]")
ID_NUMBER_NOT_IN_LINKS = _l(
    "ID numbers are not looked up from a link or address, to keep them out of logs and "
    "browser history. Type the number into the form below."
)


def _search_page(query: str, page: int, lookup_error: str | None = None, status: int = 200):
    statement = scope_to_district(sa.select(Resident), Resident.district_id)
    if len(query) == 4:  # the last four of the ID number (encrypted: matched by a hash)
        statement = statement.where(
            sa.or_(Resident.name.contains(query), Resident.id_number_ends_with(query))
        )
    elif len(query) == 18:  # a whole ID number, typed into the form (POSTed)
        statement = statement.where(Resident.id_number_is(query))
    elif query:
        statement = statement.where(Resident.name.contains(query))
    residents = []
    if lookup_error is None:
        residents = db.session.scalars(
            statement.order_by(Resident.id).limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)
        ).all()
    return render_template(
        "bureau/residents.html",
        residents=residents,
        q="" if lookup_error else query,
        page=page,
        lookup_error=lookup_error,
    ), status


@bp.get("/")
@roles_required(*BUREAU_ROLES)
def index():
    """The register, or a search by name or the last digits of an ID number from a link."""
    query = (request.args.get("q") or "").strip()
    page = page_number(request.args.get("page"))
    if LONG_ID_PART.search(query):
        return _search_page("", 1, lookup_error=str(ID_NUMBER_NOT_IN_LINKS), status=400)
    return _search_page(query, page)


@bp.post("/")
@roles_required(*BUREAU_ROLES)
def search():
    """The search form and its pager: the words typed (a whole ID number, perhaps) travel
    in the body, never in the address."""
    query = (request.form.get("q") or "").strip()
    page = page_number(request.form.get("page"))
    return _search_page(query, page)


@bp.route("/new", methods=["GET", "POST"])
@roles_required("bureau_officer")
def new():
    form = ResidentForm()
    districts = _district_choices()
    form.district_id.choices = [(d.id, d.display_name(current_locale())) for d in districts]
    errors: dict = {}
    if form.validate_on_submit():
        district = next((d for d in districts if d.id == form.district_id.data), None)
        try:
            resident = register_resident(
                id_number=form.id_number.data,
                name=form.name.data,
                phone=form.phone.data,
                district=district,
                street=form.street.data,
                address=form.address.data,
                latitude=form.latitude.data,
                longitude=form.longitude.data,
            )
        except DomainError as error:
            db.session.rollback()
            errors = {k: str(v) for k, v in error.details.items()} or {"_": str(error.message)}
        else:
            flash(_("The resident has been registered."), "success")
            return redirect(url_for("register.detail", resident_id=resident.id))
    status = 422 if (errors or form.errors) else 200
    return render_template("bureau/resident_new.html", form=form, errors=errors), status


@bp.get("/<int:resident_id>")
@roles_required(*BUREAU_ROLES)
def detail(resident_id: int):
    resident = db.session.get(Resident, resident_id)
    if resident is None:
        raise NotFound()
    ensure_in_district(resident.district_id)
    # Bureau staff handling the case need the full number; everyone else sees it masked.
    return render_template("bureau/resident_detail.html", resident=resident, user=current_user)
