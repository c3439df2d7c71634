"""/api/v1/settlement/statements/{id}/pdf and /xlsx: a statement's documents for the
bureau's finance system and a provider's own accounting, on ``api_statements.blp``.

A token with "read" or "vouchers:read" of a city-wide bureau account reads every statement;
of a provider administrator's account, that provider's own. Another provider's statement
answers 404, as a missing one does.
"""

from __future__ import annotations

from flask import g

from eldercare.api import BEARER, error_responses
from eldercare.tokens import token_required
from vouchers.settlement.documents.views_documents import (
    PDF_TYPE,
    XLSX_TYPE,
    pdf_response,
    readable_statement,
    xlsx_response,
)
from vouchers.settlement.statements.api_statements import blp

_READ = ("read", "vouchers:read")


def _binary(media_type: str, what: str) -> dict:
    return {
        "responses": {
            "200": {
                "description": what,
                "content": {media_type: {"schema": {"type": "string", "format": "binary"}}},
            }
        }
    }


@blp.get("/statements/<int:statement_id>/pdf")
@token_required(*_READ, any_of=True)
@blp.doc(
    security=BEARER,
    **_binary(PDF_TYPE, "The statement as PDF (Chinese and English, the font embedded)."),
)
@error_responses(blp, 401, 403, 404)
def statement_pdf(statement_id: int):
    """A statement as PDF: its provider, month, number, status, payee (account masked),
    totals, approval trail, every line, and a QR opening its public verification page."""
    return pdf_response(readable_statement(statement_id, g.api_user))


@blp.get("/statements/<int:statement_id>/xlsx")
@token_required(*_READ, any_of=True)
@blp.doc(
    security=BEARER,
    **_binary(XLSX_TYPE, "The statement as XLSX: its facts and totals, then one row per line."),
)
@error_responses(blp, 401, 403, 404)
def statement_xlsx(statement_id: int):
    """A statement as XLSX (money in yuan, numbers with two decimals), streamed."""
    return xlsx_response(readable_statement(statement_id, g.api_user))
