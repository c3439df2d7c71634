"""Marshmallow schemas of the dashboard's API (``vouchers.insight.api``); their names start
with ``Vouchers`` like the rest of the domain's, to stay clear of other domains' in the
OpenAPI document."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields, validate

from eldercare.api_fields import district_code
from eldercare.api_fields import month as month_field


class VouchersInsightQuerySchema(ma.Schema):
    month = month_field(metadata={"description": "YYYY-MM (Asia/Shanghai); default this month"})
    district = district_code()


class VouchersInsightColumnSchema(ma.Schema):
    key = fields.String(required=True)
    heading = fields.String(required=True, metadata={"description": "in the reader's language"})
    kind = fields.String(
        required=True,
        validate=validate.OneOf(("text", "count", "fen", "bp")),
        metadata={"description": "fen: money in fen; bp: a share in basis points"},
    )


class VouchersInsightTableSchema(ma.Schema):
    table = fields.String(required=True)
    title = fields.String(required=True)
    month = fields.String(required=True, metadata={"description": "YYYY-MM"})
    district = fields.String(
        required=True, allow_none=True, metadata={"description": "district code; null: city"}
    )
    columns = fields.List(fields.Nested(VouchersInsightColumnSchema), required=True)
    rows = fields.List(
        fields.Dict(keys=fields.String()),
        required=True,
        metadata={"description": "one object per row, keyed by the columns' keys"},
    )
