"""The /api/v1 base: flask-smorest builds the OpenAPI document from the schemas."""

from __future__ import annotations

import functools
import threading
from datetime import datetime

import marshmallow as ma
import sqlalchemy as sa
from flask import g
from flask_babel import lazy_gettext as _l
from flask_smorest import Api, Blueprint

from eldercare.accounts import BUREAU_ROLES
from eldercare.db import db
from eldercare.errors import DomainError, NotFound, PermissionDenied
from eldercare.residents import District
from eldercare.timeutil import to_local
from eldercare.tokens import token_required

BEARER = [{"bearerAuth": []}]
NOT_BUREAU = _l("This is for the civil affairs bureau's accounts.")
NO_SUCH_DISTRICT = _l("There is no district with that code.")

meta = Blueprint("meta", __name__, url_prefix="/api/v1", description="Tokens and reference data")


class ApiErrorBodySchema(ma.Schema):
    code = ma.fields.String(required=True)
    message = ma.fields.String(required=True)
    details = ma.fields.Dict()


class ApiErrorSchema(ma.Schema):
    error = ma.fields.Nested(ApiErrorBodySchema, required=True)


class _Api(Api):
    """flask-smorest's Api, documenting the blueprints when the document is first read.

    flask-smorest builds each blueprint's part of the OpenAPI document when the blueprint is
    registered: a few tenths of a second at every start-up of every `flask` command, job and
    worker, for a document that only /api/v1/openapi.json (and `flask openapi`) reads. Here
    registering only routes the blueprint; reading ``spec`` documents what is still waiting,
    in registration order, once."""

    # Error responses in the document show the body eldercare.errors really sends.
    ERROR_SCHEMA = ApiErrorSchema

    def __init__(self, *args, **kwargs):
        self._undocumented: list[tuple[Blueprint, str, list | None]] = []
        self._documenting = threading.Lock()
        super().__init__(*args, **kwargs)

    def init_app(self, app, **kwargs):
        self._undocumented = []  # a new app, a new document
        super().init_app(app, **kwargs)

    @property
    def spec(self):
        if self._undocumented:
            with self._documenting:
                while self._undocumented:
                    blp, name, parameters = self._undocumented[0]
                    blp.register_views_in_doc(
                        self, self._app, self._spec, name=name, parameters=parameters
                    )
                    self._spec.tag({"name": name, "description": blp.description})
                    self._undocumented.pop(0)
        return self._spec

    @spec.setter
    def spec(self, value):
        self._spec = value

    def register_blueprint(self, blp, *, parameters=None, **options):
        name = options.get("name", blp.name)
        self._app.extensions["flask-smorest"]["blp_name_to_api"][name] = self
        self._app.register_blueprint(blp, **options)
        self._undocumented.append((blp, name, parameters))

    def pending_documentation(self) -> list[str]:
        """The blueprints registered but not yet in the document."""
        return [name for _blp, name, _parameters in self._undocumented]


api = _Api()


# Error answers name the standard body by reference: flask-smorest deep-copies an endpoint's
# documentation at every decorator, and a copied reference costs nothing where a copied
# schema instance costs start-up time. The document is the same: flask-smorest registers
# ApiErrorSchema as the "ApiError" component itself (it is _Api.ERROR_SCHEMA).
API_ERROR_REF = {"$ref": "#/components/schemas/ApiError"}


def error_responses(blueprint: Blueprint, *statuses: int):
    """Document the error answers an endpoint can give, all with the standard body."""

    def decorator(view):
        for status in statuses:
            view = blueprint.alt_response(status, schema=API_ERROR_REF)(view)
        return view

    return decorator


# --- what the domains' endpoints share --------------------------------------------------


def local_time(value: datetime | None) -> datetime | None:
    """A time as the API answers it: in Asia/Shanghai (None stays None)."""
    return to_local(value) if value is not None else None


def page_of(statement, order, query: dict) -> dict:
    """One page of ``statement``'s rows in ``order``, as ``query``'s ``limit`` and ``offset``
    ask, with how many rows there are on all pages; ``items`` holds the rows themselves."""
    total = db.session.scalar(sa.select(sa.func.count()).select_from(statement.subquery()))
    rows = db.session.scalars(
        statement.order_by(*order).limit(query["limit"]).offset(query["offset"])
    ).all()
    return {"items": list(rows), "total": total, "limit": query["limit"], "offset": query["offset"]}


def bureau_reader():
    """The token's account when it is a bureau officer's or approver's (the token's scope is
    checked by ``token_required`` first); otherwise PermissionDenied."""
    user = g.api_user
    if not user.has_role(*BUREAU_ROLES):
        raise PermissionDenied(NOT_BUREAU)
    return user


def for_bureau(view):
    """A bureau-only API view (``bureau_reader`` before it runs)."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        bureau_reader()
        return view(*args, **kwargs)

    return wrapper


def district_asked(code: str | None, user) -> District | None:
    """The district a bureau reader's ``district`` parameter (a code) names, in their scope:
    district staff always get their own, and another district's code answers 404 as a missing
    one would; city staff get the one named, or None (the whole city) when none is. A code no
    district has is 404 too."""
    code = (code or "").strip()
    asked = None
    if code and "\x00" not in code:
        asked = db.session.scalar(sa.select(District).where(District.code == code[:20]))
    if user.district_id is not None:
        if code and (asked is None or asked.id != user.district_id):
            # Another district's code and a code no district has answer alike: district staff
            # learn nothing of the others.
            raise NotFound()
        return db.session.get(District, user.district_id)
    if code and asked is None:
        raise NotFound(NO_SUCH_DISTRICT)
    return asked


def rename_details(error: DomainError, names: dict) -> DomainError:
    """Name the problems of ``error`` after the API's fields, where a service function names
    them after its own parameters: ``names`` maps a parameter to the field, or the tuple of
    fields, that carried it. Returns the same error."""
    details = {}
    for key, value in error.details.items():
        new = names.get(key, key)
        for name in (new,) if isinstance(new, str) else new:
            details[name] = value
    error.details = details
    return error


# --- tokens and reference data ----------------------------------------------------------


class WhoAmISchema(ma.Schema):
    username = ma.fields.String(required=True)
    roles = ma.fields.List(ma.fields.String(), required=True)
    token_name = ma.fields.String(required=True)
    scopes = ma.fields.List(ma.fields.String(), required=True)


class DistrictSchema(ma.Schema):
    code = ma.fields.String(required=True)
    name_zh = ma.fields.String(required=True)
    name_en = ma.fields.String(required=True)


@meta.get("/me")
@meta.doc(security=BEARER)
@meta.response(200, WhoAmISchema)
@error_responses(meta, 401)
@token_required()
def whoami():
    """Who the presented token acts for, and what it may do."""
    token = g.api_token
    return {
        "username": token.user.username,
        "roles": sorted(token.user.roles),
        "token_name": token.name,
        "scopes": sorted(token.scope_set),
    }


@meta.get("/districts")
@meta.doc(security=BEARER)
@meta.response(200, DistrictSchema(many=True))
@error_responses(meta, 401, 403)
@token_required("read")
def districts():
    """The city's districts, by administrative code."""
    return db.session.scalars(sa.select(District).order_by(District.code)).all()


def init_api(app) -> None:
    api.init_app(app)
    api.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer"})
    api.register_blueprint(meta)
