"""/api/v1 operations for linking accounts to residents (eldercare/account_links.py).

The mini-program (an elder's or family member's token, ``read``) asks and follows its own
requests; the bureau's systems (``read`` to list, ``bureau:write`` to decide or create) decide
them and create linked accounts. District staff see and decide only their district's requests.
"""

from __future__ import annotations

import marshmallow as ma
from flask import g
from flask_babel import lazy_gettext as _l
from flask_smorest import Blueprint
from marshmallow import fields, validate

from eldercare import account_links
from eldercare.account_links import MAX_REASON_LENGTH, AccountLinkRequest
from eldercare.account_service import USERNAME_PATTERN
from eldercare.accounts import BUREAU_ROLES, MIN_PASSWORD_LENGTH
from eldercare.api import BEARER, error_responses, local_time, page_of
from eldercare.api_fields import page_limit, page_offset, resident_id_number, said
from eldercare.db import db
from eldercare.errors import NotFound, PermissionDenied
from eldercare.residents import Resident
from eldercare.tokens import ELDERS_WRITE, token_required

blp = Blueprint(
    "account-links",
    __name__,
    url_prefix="/api/v1",
    description="Linking an elder's or family member's account to a registered resident",
)
WRITE = "bureau:write"
_RELATIONSHIPS = list(account_links.LINK_RELATIONSHIPS)


class Strict(ma.Schema):
    class Meta:
        unknown = ma.RAISE


class LinkRequestNewSchema(Strict):
    id_number = resident_id_number(required=True)
    name = fields.String(
        required=True, validate=said(50), metadata={"description": "as on the ID card"}
    )
    # Checked by the service (a message in the reader's language), documented here.
    relationship = fields.String(
        required=True,
        metadata={
            "enum": _RELATIONSHIPS,
            "description": "self: the account holder is the resident; else an agent",
        },
    )


class LinkRequestSchema(ma.Schema):
    id = fields.Integer(required=True)
    masked_id_number = fields.String(required=True)
    name = fields.String(required=True)
    relationship = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(account_links.STATUSES))
    refusal_reason = fields.String(allow_none=True)
    created_at = fields.DateTime(required=True)
    decided_at = fields.DateTime(allow_none=True)


class BureauLinkRequestSchema(LinkRequestSchema):
    username = fields.String(required=True, metadata={"description": "the asking account"})
    registered = fields.Boolean(
        required=True, metadata={"description": "whether a resident has this ID number"}
    )
    name_matches = fields.Boolean(required=True)
    resident_id = fields.Integer(allow_none=True)
    register_name = fields.String(allow_none=True)
    district_code = fields.String(allow_none=True)


class BureauLinkQuerySchema(Strict):
    status = fields.String(load_default="pending", validate=validate.OneOf(account_links.STATUSES))
    limit = page_limit()
    offset = page_offset()


class BureauLinkPageSchema(ma.Schema):
    items = fields.List(fields.Nested(BureauLinkRequestSchema), required=True)
    total = fields.Integer(required=True)
    limit = fields.Integer(required=True)
    offset = fields.Integer(required=True)


class LinkRefusalSchema(Strict):
    reason = fields.String(required=True, validate=said(MAX_REASON_LENGTH))


class LinkedAccountNewSchema(Strict):
    # Upper case is accepted and lowered by the service; the document states the stored form.
    username = fields.String(
        required=True,
        validate=validate.Regexp(
            USERNAME_PATTERN,
            error=_l("3 to 80 characters: lower-case letters, digits, dot, dash or underscore."),
        ),
    )
    display_name = fields.String(required=True, validate=said())
    password = fields.String(
        required=True,
        load_only=True,
        validate=validate.Length(
            min=MIN_PASSWORD_LENGTH,
            error=_l("The password needs at least %(n)s characters.", n=MIN_PASSWORD_LENGTH),
        ),
    )
    relationship = fields.String(required=True, metadata={"enum": _RELATIONSHIPS})


class LinkedAccountSchema(ma.Schema):
    username = fields.String(required=True)
    roles = fields.List(fields.String(), required=True)
    resident_id = fields.Integer(required=True)
    relationship = fields.String(required=True)


def _own(link: AccountLinkRequest) -> dict:
    return {
        "id": link.id,
        "masked_id_number": link.masked_id_number,
        "name": link.name,
        "relationship": link.relationship,
        "status": link.status,
        "refusal_reason": link.refusal_reason,
        "created_at": local_time(link.created_at),
        "decided_at": local_time(link.decided_at),
    }


def _for_bureau(link: AccountLinkRequest) -> dict:
    resident = link.resident
    return _own(link) | {
        "username": link.user.username,
        "registered": resident is not None,
        "name_matches": link.name_matches,
        "resident_id": resident.id if resident else None,
        "register_name": resident.name if resident else None,
        "district_code": resident.district.code if resident else None,
    }


def _bureau_user(*roles: str):
    user = g.api_user
    if not user.has_role(*roles):
        raise PermissionDenied(_l("This operation is for the bureau's accounts."))
    return user


_OWN_EXAMPLE = {
    "id": 17,
    "masked_id_number": "2101**********0021",
    "name": "王秀英",
    "relationship": "child",
    "status": "pending",
    "refusal_reason": None,
    "created_at": "2026-12-03T09:30:00+08:00",
    "decided_at": None,
}
_BUREAU_EXAMPLE = _OWN_EXAMPLE | {
    "username": "zhang.wei",
    "registered": True,
    "name_matches": True,
    "resident_id": 3,
    "register_name": "王秀英",
    "district_code": "210102",
}


@blp.post("/account-links")
@token_required(ELDERS_WRITE)
@blp.doc(security=BEARER)
@blp.arguments(
    LinkRequestNewSchema,
    example={"id_number": "210102194403121225", "name": "王秀英", "relationship": "child"},
)
@blp.response(202, LinkRequestSchema, example=_OWN_EXAMPLE)
@error_responses(blp, 401, 403, 409, 422, 429)
def ask(body):
    """Ask the bureau to link this account to a registered resident: ``self`` for the elder's
    own account, or a family agent's relationship. The answer never tells whether the ID
    number is registered; the bureau confirms or refuses (with a reason) later. An account
    may ask a few times a day (429 beyond that)."""
    return _own(account_links.request_link(g.api_user, **body))


@blp.get("/account-links")
@token_required("read")
@blp.doc(security=BEARER)
@blp.response(200, LinkRequestSchema(many=True), example=[_OWN_EXAMPLE])
@error_responses(blp, 401, 403)
def mine():
    """This account's link requests, newest first, with the bureau's answers."""
    return [_own(link) for link in account_links.requests_of(g.api_user)]


@blp.get("/bureau/account-links")
@token_required("read")
@blp.doc(security=BEARER)
@blp.arguments(BureauLinkQuerySchema, location="query")
@blp.response(
    200,
    BureauLinkPageSchema,
    example={"items": [_BUREAU_EXAMPLE], "total": 1, "limit": 50, "offset": 0},
)
@error_responses(blp, 401, 403, 422)
def bureau_list(query):
    """Link requests of the district's residents (city-wide staff also see those matching
    no one), oldest first."""
    user = _bureau_user(*BUREAU_ROLES)
    page = page_of(
        account_links.requests_for_officer(user, query["status"]),
        (AccountLinkRequest.id,),
        query,
    )
    page["items"] = [_for_bureau(link) for link in page["items"]]
    return page


@blp.post("/bureau/account-links/<int:request_id>/confirm")
@token_required(WRITE)
@blp.doc(security=BEARER)
@blp.response(
    200,
    BureauLinkRequestSchema,
    example=_BUREAU_EXAMPLE | {"status": "confirmed", "decided_at": "2026-12-03T10:05:00+08:00"},
)
@error_responses(blp, 401, 403, 404, 409)
def confirm(request_id: int):
    """Confirm a request: an elder's account becomes the resident's own, a family member's
    account a family agent. Audited. A request matching no resident, or whose name differs
    from the register, cannot be confirmed (409): refuse it with a reason."""
    link = account_links.confirm_link(_bureau_user("bureau_officer"), request_id)
    return _for_bureau(link)


@blp.post("/bureau/account-links/<int:request_id>/refuse")
@token_required(WRITE)
@blp.doc(security=BEARER)
@blp.arguments(LinkRefusalSchema, example={"reason": "请携带身份证到和平区民政局窗口办理。"})
@blp.response(
    200,
    BureauLinkRequestSchema,
    example=_BUREAU_EXAMPLE
    | {
        "status": "refused",
        "refusal_reason": "请携带身份证到和平区民政局窗口办理。",
        "decided_at": "2026-12-03T10:05:00+08:00",
    },
)
@error_responses(blp, 401, 403, 404, 409, 422)
def refuse(body, request_id: int):
    """Refuse a request with the reason the account holder will read. Audited."""
    link = account_links.refuse_link(_bureau_user("bureau_officer"), request_id, body["reason"])
    return _for_bureau(link)


@blp.post("/residents/<int:resident_id>/accounts")
@token_required(WRITE)
@blp.doc(security=BEARER)
@blp.arguments(
    LinkedAccountNewSchema,
    example={
        "username": "wang.xiuying",
        "display_name": "王秀英",
        "password": "a-first-password-2026",
        "relationship": "self",
    },
)
@blp.response(
    201,
    LinkedAccountSchema,
    example={
        "username": "wang.xiuying",
        "roles": ["elder"],
        "resident_id": 3,
        "relationship": "self",
    },
)
@error_responses(blp, 401, 403, 404, 409, 422)
def create_account(body, resident_id: int):
    """Create an account for a resident at the office, linked at once: ``self`` makes the
    resident's own (elder) account, a relationship a family agent's. Audited."""
    officer = _bureau_user("bureau_officer")
    resident = db.session.get(Resident, resident_id)
    if resident is None:
        raise NotFound()
    user = account_links.create_linked_account(officer, resident, **body)
    return {
        "username": user.username,
        "roles": sorted(user.roles),
        "resident_id": resident.id,
        "relationship": body["relationship"],
    }
