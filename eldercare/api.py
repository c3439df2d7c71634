"""The /api/v1 base: flask-smorest builds the OpenAPI document from the schemas."""

from __future__ import annotations

import marshmallow as ma
import sqlalchemy as sa
from flask import g
from flask_smorest import Api, Blueprint

from eldercare.db import db
from eldercare.residents import District
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
