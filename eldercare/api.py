"""The /api/v1 base: flask-smorest builds the OpenAPI document from the schemas."""

from __future__ import annotations

from datetime import datetime

import marshmallow as ma
import sqlalchemy as sa
from flask import g
from flask_smorest import Api, Blueprint

from eldercare.db import db
from eldercare.errors import DomainError
from eldercare.residents import District
from eldercare.timeutil import to_local
from eldercare.tokens import token_required

BEARER = [{"bearerAuth": []}]

meta = Blueprint("meta", __name__, url_prefix="/api/v1", description="Tokens and reference data")


class ApiErrorBodySchema(ma.Schema):
    code = ma.fields.String(required=True)
    message = ma.fields.String(required=True)
    details = ma.fields.Dict()


class ApiErrorSchema(ma.Schema):
    error = ma.fields.Nested(ApiErrorBodySchema, required=True)


class _Api(Api):
    # Error responses in the document show the body eldercare.errors really sends.
    ERROR_SCHEMA = ApiErrorSchema


api = _Api()


def error_responses(blueprint: Blueprint, *statuses: int):
    """Document the error answers an endpoint can give, all with the standard body."""

    def decorator(view):
        for status in statuses:
            view = blueprint.alt_response(status, schema=ApiErrorSchema)(view)
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
