"""/api/v1 for partner systems (issue 10): the elder's voucher kind set by the bureau or by
the care institution the elder lives in, and the bureau's lists and exports of vouchers and
redemptions.

- ``POST /voucher-kinds``: a bureau account ("bureau:write"; district staff for their
  district's elders) or a care institution's administrator ("providers:write", for an elder
  it houses) sets the kind for the coming months (``vouchers.pool.kinds.set_kind``).
- ``GET /bureau/vouchers``, ``GET /bureau/redemptions``: paged lists ("read" or
  "vouchers:read", a bureau account), filtered by month, district, status (and provider for
  redemptions); ``.../export`` streams one month as CSV or XLSX (``vouchers.exports``).
District staff see their district only.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import Response, g, stream_with_context
from flask_babel import lazy_gettext as _l

from eldercare.api import BEARER, bureau_reader, error_responses
from eldercare.auth import ensure_in_district
from eldercare.db import db
from eldercare.errors import InvalidInput, NotFound, PermissionDenied
from eldercare.register import resident_id_error
from eldercare.residents import Resident
from eldercare.tokens import token_required
from marketplace.providers import provider_of
from vouchers import exports
from vouchers.api import blp
from vouchers.pool import kinds
from vouchers.schemas import (
    VouchersBureauRedemptionExportSchema,
    VouchersBureauRedemptionPageSchema,
    VouchersBureauRedemptionQuerySchema,
    VouchersBureauVoucherExportSchema,
    VouchersBureauVoucherPageSchema,
    VouchersBureauVoucherQuerySchema,
    VouchersKindAnswerSchema,
    VouchersKindRequestSchema,
)

_READ = ("read", "vouchers:read")


# --- the elder's kind -----------------------------------------------------------------------


def _resident_by_number(id_number: str) -> Resident:
    problem = resident_id_error(id_number)
    if problem:
        raise InvalidInput(details={"id_number": problem})
    resident = db.session.scalar(sa.select(Resident).where(Resident.id_number_is(id_number)))
    if resident is None:
        raise NotFound()
    return resident


@blp.post("/voucher-kinds")
@token_required("bureau:write", "providers:write", any_of=True)
@blp.doc(security=BEARER)
@blp.arguments(
    VouchersKindRequestSchema,
    example={"id_number": "210102194403121225", "in_institution": True, "kind": None},
)
@blp.response(
    200,
    VouchersKindAnswerSchema,
    example={
        "masked_id_number": "2101**********0021",
        "kind": "institutional",
        "in_institution": True,
        "institution_provider_id": 3,
        "applies_from": "2026-04",
    },
)
@error_responses(blp, 401, 403, 404, 422)
def set_voucher_kind(body):
    """Set an elder's voucher kind, and whether the elder lives in a care institution, for
    the coming months: from the first month whose voucher is not yet issued (normally the
    next; this month's voucher keeps its kind). Living in an institution means the
    institutional kind. Audited.

    Who: a bureau officer or approver ("bureau:write"; district staff only for their
    district's elders), or a care institution's administrator ("providers:write") for an
    elder it houses (a stay delivered in the last 31 days or accepted for today); an
    institution ends only what it recorded itself. Anything else: 403, or 404 for an elder
    out of reach."""
    user = g.api_user
    resident = _resident_by_number(body["id_number"])
    if user.has_role("bureau_officer", "bureau_approver"):
        ensure_in_district(resident.district_id, user=user)
        institution = None
    elif user.has_role("provider_admin"):
        institution = provider_of(user, admin=True)
    else:
        raise PermissionDenied(_l("This is for the bureau and care institutions."))
    answer = kinds.set_kind(
        resident,
        kind=body["kind"],
        in_institution=body["in_institution"],
        actor=user,
        institution=institution,
    )
    return {
        "masked_id_number": resident.masked_id_number,
        "kind": answer["kind"],
        "in_institution": answer["in_institution"],
        "institution_provider_id": answer["institution"],
        "applies_from": answer["applies_from"].strftime("%Y-%m"),
    }


# --- the bureau's lists and exports ------------------------------------------------------

_VOUCHER_ROW = {
    "id": 4021,
    "month": "2026-03",
    "district": "210102",
    "masked_id_number": "2101**********0021",
    "kind": "home_community",
    "status": "active",
    "face_value_fen": 50000,
    "balance_fen": 44000,
    "held_fen": 0,
    "revoked_reason": None,
    "issued_at": "2026-03-01T00:05:12+08:00",
    "closed_at": None,
}
_REDEMPTION_ROW = {
    "id": 812,
    "voucher_id": 4021,
    "month": "2026-03",
    "district": "210102",
    "masked_id_number": "2101**********0021",
    "provider_id": 1,
    "provider_name": "南湖社区养老服务站",
    "service_id": 31,
    "category": "meal_help",
    "status": "redeemed",
    "quantity": 10,
    "price_fen": 15000,
    "insurance_fen": 0,
    "subsidy_fen": 6000,
    "copay_fen": 9000,
    "payment_method": "cash",
    "checked_in_at": "2026-03-09T11:42:05+08:00",
    "redeemed_at": "2026-03-09T11:44:30+08:00",
    "reversed_at": None,
}


def _export_doc(columns, row, what: str) -> dict:
    header = ",".join(columns)
    line = ",".join("" if row[c] is None else str(row[c]) for c in columns)
    return {
        "responses": {
            "200": {
                "description": f"The month's {what}: CSV (UTF-8 with BOM) or XLSX, streamed.",
                "content": {
                    "text/csv": {
                        "schema": {"type": "string"},
                        "example": f"{header}\r\n{line}\r\n",
                    },
                    exports.XLSX_TYPE: {"schema": {"type": "string", "format": "binary"}},
                },
            }
        }
    }


def _download(chunks, name: str, fmt: str) -> Response:
    mimetype = "text/csv; charset=utf-8" if fmt == "csv" else exports.XLSX_TYPE
    response = Response(stream_with_context(chunks), mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{name}.{fmt}"'
    response.headers["Cache-Control"] = "no-store"
    return response


def _chunks(statement, order, columns, fmt: str, sheet: str):
    if fmt == "xlsx":
        return exports.xlsx_chunks(statement, order, columns, sheet)
    return exports.csv_chunks(statement, order, columns)


@blp.get("/bureau/vouchers")
@token_required(*_READ, any_of=True)
@blp.doc(security=BEARER)
@blp.arguments(VouchersBureauVoucherQuerySchema, location="query")
@blp.response(
    200,
    VouchersBureauVoucherPageSchema,
    example={"items": [_VOUCHER_ROW], "total": 1, "limit": 50, "offset": 0},
)
@error_responses(blp, 401, 403, 404, 422)
def bureau_vouchers(query):
    """Vouchers, by month then id, filtered by ``month`` (YYYY-MM), ``district`` (code),
    ``status`` and ``kind``, paged (``limit``, ``offset``). District staff see their own
    district only (another district's code answers 404). The elder is the masked ID."""
    user = bureau_reader()
    statement, order = exports.voucher_query(query, user)
    return exports.page(statement, order, query, exports.VOUCHER_COLUMNS)


@blp.get("/bureau/vouchers/export")
@token_required(*_READ, any_of=True)
@blp.doc(security=BEARER, **_export_doc(exports.VOUCHER_COLUMNS, _VOUCHER_ROW, "vouchers"))
@blp.arguments(VouchersBureauVoucherExportSchema, location="query")
@error_responses(blp, 401, 403, 404, 422)
def bureau_vouchers_export(query):
    """One month's vouchers (``month`` required) as ``format`` csv (default) or xlsx, with
    the same filters and scope as the list; streamed, so a whole city's month is fine."""
    user = bureau_reader()
    statement, order = exports.voucher_query(query, user)
    chunks = _chunks(statement, order, exports.VOUCHER_COLUMNS, query["format"], "vouchers")
    return _download(chunks, f"vouchers-{query['month']}", query["format"])


@blp.get("/bureau/redemptions")
@token_required(*_READ, any_of=True)
@blp.doc(security=BEARER)
@blp.arguments(VouchersBureauRedemptionQuerySchema, location="query")
@blp.response(
    200,
    VouchersBureauRedemptionPageSchema,
    example={"items": [_REDEMPTION_ROW], "total": 1, "limit": 50, "offset": 0},
)
@error_responses(blp, 401, 403, 404, 422)
def bureau_redemptions(query):
    """Redemptions, by check-in time, filtered by ``month`` (the voucher's), ``district``,
    ``provider`` (id) and ``status``, paged. District staff see their own district only."""
    user = bureau_reader()
    statement, order = exports.redemption_query(query, user)
    return exports.page(statement, order, query, exports.REDEMPTION_COLUMNS)


@blp.get("/bureau/redemptions/export")
@token_required(*_READ, any_of=True)
@blp.doc(security=BEARER, **_export_doc(exports.REDEMPTION_COLUMNS, _REDEMPTION_ROW, "redemptions"))
@blp.arguments(VouchersBureauRedemptionExportSchema, location="query")
@error_responses(blp, 401, 403, 404, 422)
def bureau_redemptions_export(query):
    """One month's redemptions (``month`` required) as ``format`` csv (default) or xlsx, with
    the same filters and scope as the list; streamed."""
    user = bureau_reader()
    statement, order = exports.redemption_query(query, user)
    chunks = _chunks(statement, order, exports.REDEMPTION_COLUMNS, query["format"], "redemptions")
    return _download(chunks, f"redemptions-{query['month']}", query["format"])
