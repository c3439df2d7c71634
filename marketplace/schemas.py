"""Marshmallow schemas of the marketplace API; they also write its part of the OpenAPI document.

Component names come from the class names, so every class here starts with ``Marketplace``
to stay clear of the other domains' schemas in the same document.

Input schemas check shapes: a number is a JSON number (never ``"5"`` or ``true``), a time
carries its offset, a list is a list; and they state every rule a JSON Schema can (ranges,
patterns, choices), so that the published document admits nothing the code refuses. The
rules that depend on stored data or on the clock (who may book what and when, which
districts a provider serves) belong to the service modules, which name the offending field
themselves. Money is integer fen throughout, never a float.
"""

from __future__ import annotations

import marshmallow as ma
from flask_babel import lazy_gettext as _l
from marshmallow import fields, validate

from eldercare.api_fields import (
    AwareDateTime,
    StrictBoolean,
    StrictInteger,
    district_code,
    page_limit,
    page_offset,
    row_id,
    said,
)
from marketplace.catalogue import MAX_BEDS, MAX_CAPACITY
from marketplace.models import (
    BOOKING_STATUSES,
    COMPLAINT_STATUSES,
    DELIVERY_PLACES,
    MAX_PRICE_FEN,
    PROVIDER_TYPES,
    UNITS,
)
from marketplace.search import MAX_RADIUS_M, SORTS

_OFF_THE_MAP = _l(
    "The place to search from is not on the map (latitude -90 to 90, longitude -180 to 180)."
)

_DISTRICT = {"description": "district code (GB/T 2260)"}
_LOCAL_TIME = {"description": "ISO 8601, in Asia/Shanghai (+08:00)"}
_DELIVERY_PLACE = {
    "description": "where it is delivered: home (a home visit; check-in needs the phone's "
    "location near the elder's home), provider (at the provider's premises) or institution "
    "(inside a care institution)"
}
_PLACE_ERROR = _l(
    "Choose where the service is delivered: in the elder's home, at your premises "
    "or in a care institution."
)


# --- reference data -------------------------------------------------------------------


class MarketplaceCategorySchema(ma.Schema):
    code = fields.String(required=True)
    name_zh = fields.String(required=True)
    name_en = fields.String(required=True)
    programme = fields.Boolean(
        required=True, metadata={"description": "one of the subsidy programme's categories"}
    )
    accepts_vouchers = fields.Boolean(
        required=True, metadata={"description": "a voucher can pay part of it today"}
    )
    voucher_kinds = fields.List(
        fields.String(),
        required=True,
        metadata={"description": "the voucher kinds whose policy in force today pays part of it"},
    )
    requires_caregiver_certificate = fields.Boolean(required=True)
    provider_types = fields.List(
        fields.String(validate=validate.OneOf(PROVIDER_TYPES)),
        required=True,
        metadata={"description": "the kinds of provider that may offer it"},
    )


class MarketplaceRatingSchema(ma.Schema):
    average = fields.Float(allow_none=True, metadata={"description": "1-5; null: no reviews"})
    count = fields.Integer(required=True)


class MarketplaceProviderSummarySchema(ma.Schema):
    """What the public may know of a certified provider: no bank account, no phone."""

    id = fields.Integer(required=True)
    name = fields.String(required=True)
    type = fields.String(required=True, validate=validate.OneOf(PROVIDER_TYPES))
    district = fields.String(required=True, metadata=_DISTRICT)
    address = fields.String(required=True)
    latitude = fields.Float(required=True, metadata={"description": "WGS-84"})
    longitude = fields.Float(required=True, metadata={"description": "WGS-84"})
    star_level = fields.Integer(
        allow_none=True, metadata={"description": "the bureau's evaluation, 1-5; null: not yet"}
    )


class MarketplaceServiceSummarySchema(ma.Schema):
    id = fields.Integer(required=True)
    title = fields.String(required=True)
    category = fields.String(required=True, metadata={"description": "category code"})
    unit = fields.String(required=True, validate=validate.OneOf(UNITS))
    price_fen = fields.Integer(required=True, metadata={"description": "per unit, in fen"})
    accepts_vouchers = fields.Boolean(required=True)
    voucher_kinds = fields.List(
        fields.String(),
        required=True,
        metadata={"description": "the voucher kinds whose policy in force today pays part of it"},
    )
    delivery_place = fields.String(
        required=True, validate=validate.OneOf(DELIVERY_PLACES), metadata=_DELIVERY_PLACE
    )


class MarketplaceServiceSchema(MarketplaceServiceSummarySchema):
    description = fields.String(required=True)
    capacity_per_slot = fields.Integer(required=True)
    districts = fields.List(
        fields.String(),
        required=True,
        metadata={"description": "codes of the districts whose elders it serves"},
    )


class MarketplacePublicServiceSchema(MarketplaceServiceSchema):
    provider = fields.Nested(MarketplaceProviderSummarySchema, required=True)
    rating = fields.Nested(MarketplaceRatingSchema, required=True)
    open_now = fields.Boolean(allow_none=True, metadata={"description": "null: no hours given"})


class MarketplaceReviewSchema(ma.Schema):
    rating = fields.Integer(required=True)
    text = fields.String(required=True)
    created_at = fields.AwareDateTime(required=True, metadata=_LOCAL_TIME)


class MarketplaceProviderSchema(MarketplaceProviderSummarySchema):
    certified_until = fields.Date(required=True)
    opening_hours = fields.Dict(
        keys=fields.String(),
        values=fields.List(fields.List(fields.String())),
        required=True,
        metadata={
            "description": 'Shanghai time: {"mon": [["08:00", "18:00"]], ...}; a day not '
            "listed is closed; empty: no hours published"
        },
    )
    open_now = fields.Boolean(allow_none=True, metadata={"description": "null: no hours given"})
    beds_total = fields.Integer(allow_none=True, metadata={"description": "care institutions"})
    beds_free = fields.Integer(allow_none=True)
    service_districts = fields.List(fields.String(), required=True, metadata=_DISTRICT)
    rating = fields.Nested(MarketplaceRatingSchema, required=True)
    services = fields.List(fields.Nested(MarketplaceServiceSchema), required=True)
    reviews = fields.List(
        fields.Nested(MarketplaceReviewSchema),
        required=True,
        metadata={"description": "the latest, newest first"},
    )


# --- search ---------------------------------------------------------------------------


class MarketplaceSearchQuerySchema(ma.Schema):
    lat = fields.Float(
        required=True,
        validate=validate.Range(-90, 90, error=_OFF_THE_MAP),
        metadata={"description": "WGS-84 latitude to search from"},
    )
    lng = fields.Float(
        required=True,
        validate=validate.Range(-180, 180, error=_OFF_THE_MAP),
        metadata={"description": "WGS-84 longitude"},
    )
    radius_m = fields.Float(
        validate=validate.Range(
            1,  # the service takes any positive distance; the document says a metre
            MAX_RADIUS_M,
            error=_l("Choose a distance between 1 metre and 50 km."),
        ),
        metadata={"description": "metres, up to 50,000 (default: the 15-minute walk, 1,000)"},
    )
    category = fields.String(metadata={"description": "category code; 404 when none has it"})
    district = district_code(
        metadata={
            "description": "district code (GB/T 2260): only services offered to its elders; "
            "404 when no district has it"
        }
    )
    provider_type = fields.String(validate=validate.OneOf(PROVIDER_TYPES))
    max_price_fen = fields.Integer(validate=validate.Range(min=1))
    min_rating = fields.Float(
        validate=validate.Range(1, 5, error=_l("Choose a rating from 1 to 5.")),
        metadata={"description": "1-5"},
    )
    min_stars = fields.Integer(
        validate=validate.Range(1, 5, error=_l("Choose 1 to 5 stars.")),
        metadata={"description": "1-5"},
    )
    accepts_vouchers = fields.Boolean(
        metadata={"description": "true: only services a voucher can pay part of; false: others"}
    )
    open_now = fields.Boolean(metadata={"description": "true: only providers open now"})
    sort = fields.String(load_default="distance", validate=validate.OneOf(SORTS))
    limit = page_limit()
    offset = page_offset()


class MarketplaceSearchResultSchema(ma.Schema):
    service = fields.Nested(MarketplaceServiceSummarySchema, required=True)
    provider = fields.Nested(MarketplaceProviderSummarySchema, required=True)
    distance_m = fields.Float(
        required=True, metadata={"description": "great-circle distance, metres"}
    )
    rating = fields.Nested(MarketplaceRatingSchema, required=True)
    accepts_vouchers = fields.Boolean(required=True)
    open_now = fields.Boolean(allow_none=True, metadata={"description": "null: no hours given"})


class MarketplaceSearchPageSchema(ma.Schema):
    items = fields.List(fields.Nested(MarketplaceSearchResultSchema), required=True)
    limit = fields.Integer(required=True)
    offset = fields.Integer(required=True)
    has_more = fields.Boolean(required=True, metadata={"description": "another page follows"})


# --- bookings, as the elder's side sees them ------------------------------------------


class MarketplaceBookingServiceSchema(ma.Schema):
    id = fields.Integer(required=True)
    title = fields.String(required=True)
    category = fields.String(required=True)
    unit = fields.String(required=True, validate=validate.OneOf(UNITS))


class MarketplaceBookingProviderSchema(ma.Schema):
    id = fields.Integer(required=True)
    name = fields.String(required=True)


class MarketplaceBookingElderSchema(ma.Schema):
    id = fields.Integer(required=True, metadata={"description": "resident id"})
    name = fields.String(required=True)


class _BookingBase(ma.Schema):
    id = fields.Integer(required=True)
    status = fields.String(required=True, validate=validate.OneOf(BOOKING_STATUSES))
    slot_start = fields.AwareDateTime(required=True, metadata=_LOCAL_TIME)
    slot_end = fields.AwareDateTime(required=True, metadata=_LOCAL_TIME)
    price_fen = fields.Integer(
        required=True, metadata={"description": "the price when booked, in fen"}
    )
    note = fields.String(allow_none=True)
    reason = fields.String(
        allow_none=True, metadata={"description": "why it was declined or cancelled"}
    )
    created_at = fields.AwareDateTime(required=True, metadata=_LOCAL_TIME)
    decided_at = fields.AwareDateTime(allow_none=True, metadata=_LOCAL_TIME)
    completed_at = fields.AwareDateTime(allow_none=True, metadata=_LOCAL_TIME)
    service = fields.Nested(MarketplaceBookingServiceSchema, required=True)


class MarketplaceBookingSchema(_BookingBase):
    provider = fields.Nested(MarketplaceBookingProviderSchema, required=True)
    resident = fields.Nested(MarketplaceBookingElderSchema, required=True)
    can_cancel = fields.Boolean(
        required=True,
        metadata={"description": "the elder's side may still cancel (until 2 hours before)"},
    )
    review = fields.Nested(MarketplaceReviewSchema, allow_none=True)


class MarketplaceBookingPageSchema(ma.Schema):
    items = fields.List(fields.Nested(MarketplaceBookingSchema), required=True)
    total = fields.Integer(required=True, metadata={"description": "matching bookings, all pages"})
    limit = fields.Integer(required=True)
    offset = fields.Integer(required=True)


class MarketplaceBookingListQuerySchema(ma.Schema):
    status = fields.String(validate=validate.OneOf(BOOKING_STATUSES))
    resident_id = row_id(strict=False, metadata={"description": "only this elder's bookings"})
    limit = page_limit()
    offset = page_offset()


class MarketplaceBookingRequestSchema(ma.Schema):
    service_id = row_id(required=True)
    resident_id = row_id(
        required=True, metadata={"description": "the elder: the caller, or one they act for"}
    )
    slot_start = AwareDateTime(
        required=True,
        metadata={"description": "ISO 8601 with an offset, e.g. 2026-12-01T09:30:00+08:00"},
    )
    slot_end = AwareDateTime(
        load_default=None,
        metadata={
            "description": "only for services priced per hour booked for several whole hours; "
            "otherwise the service's unit sets the end"
        },
    )
    note = fields.String(load_default=None, allow_none=True)


class MarketplaceReasonSchema(ma.Schema):
    reason = fields.String(load_default=None, allow_none=True)


class MarketplaceReviewRequestSchema(ma.Schema):
    rating = StrictInteger(
        required=True,
        validate=validate.Range(1, 5, error=_l("Choose 1 to 5 stars.")),
        metadata={"description": "whole stars, 1 to 5"},
    )
    text = fields.String(load_default=None, allow_none=True)


class MarketplaceReviewCreatedSchema(MarketplaceReviewSchema):
    id = fields.Integer(required=True)
    booking_id = fields.Integer(required=True)


# --- complaints -----------------------------------------------------------------------


class MarketplaceComplaintRequestSchema(ma.Schema):
    provider_id = row_id(required=True)
    booking_id = row_id(
        load_default=None, allow_none=True, metadata={"description": "one of the elder's bookings"}
    )
    text = fields.String(required=True)


class MarketplaceComplaintSchema(ma.Schema):
    id = fields.Integer(required=True)
    provider = fields.Nested(MarketplaceBookingProviderSchema, required=True)
    booking_id = fields.Integer(allow_none=True)
    text = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(COMPLAINT_STATUSES))
    resolution = fields.String(allow_none=True)
    created_at = fields.AwareDateTime(required=True, metadata=_LOCAL_TIME)
    closed_at = fields.AwareDateTime(allow_none=True, metadata=_LOCAL_TIME)


# --- the provider's own software ------------------------------------------------------


class MarketplaceProviderBookingElderSchema(ma.Schema):
    """The elder as the provider's staff see them on the booking list: a masked name."""

    masked_name = fields.String(required=True)
    district = fields.String(required=True, metadata=_DISTRICT)


class MarketplaceProviderBookingSchema(_BookingBase):
    resident = fields.Nested(MarketplaceProviderBookingElderSchema, required=True)


class MarketplaceProviderBookingPageSchema(ma.Schema):
    items = fields.List(fields.Nested(MarketplaceProviderBookingSchema), required=True)
    total = fields.Integer(required=True)
    limit = fields.Integer(required=True)
    offset = fields.Integer(required=True)


class MarketplaceProviderBookingQuerySchema(ma.Schema):
    status = fields.String(validate=validate.OneOf(BOOKING_STATUSES))
    limit = page_limit()
    offset = page_offset()


class MarketplacePriceSchema(ma.Schema):
    price_fen = fields.Integer(required=True)
    effective_from = fields.AwareDateTime(required=True, metadata=_LOCAL_TIME)


class MarketplaceOwnServiceSchema(MarketplaceServiceSchema):
    active = fields.Boolean(required=True)
    created_at = fields.AwareDateTime(required=True, metadata=_LOCAL_TIME)
    prices = fields.List(
        fields.Nested(MarketplacePriceSchema),
        required=True,
        metadata={"description": "price history, newest first"},
    )


_PRICE_RANGE = validate.Range(
    1, MAX_PRICE_FEN, error=_l("The price must be more than 0 and at most 50,000 yuan.")
)


class MarketplaceNewServiceSchema(ma.Schema):
    category = fields.String(
        required=True,
        metadata={
            "description": "category code (GET /service-categories), one your kind of "
            "provider may offer: 422 naming category_code otherwise"
        },
    )
    title = fields.String(required=True, validate=said(120))
    description = fields.String(load_default="")
    unit = fields.String(
        required=True, validate=validate.OneOf(UNITS, error=_l("Choose the unit the price is for."))
    )
    price_fen = StrictInteger(
        required=True, validate=_PRICE_RANGE, metadata={"description": "per unit, in fen"}
    )
    capacity_per_slot = StrictInteger(
        load_default=1,
        validate=validate.Range(
            1, MAX_CAPACITY, error=_l("Capacity is 1 to 500 bookings per time slot.")
        ),
        metadata={"description": "bookings one time slot can take"},
    )
    districts = fields.List(
        district_code(),
        required=True,
        validate=validate.Length(min=1),
        metadata={
            "description": "codes of districts your provider serves: 422 naming districts "
            "for any other"
        },
    )
    delivery_place = fields.String(
        required=True,
        validate=validate.OneOf(DELIVERY_PLACES, error=_PLACE_ERROR),
        metadata=_DELIVERY_PLACE,
    )


class MarketplaceDeliveryPlaceSchema(ma.Schema):
    delivery_place = fields.String(
        required=True,
        validate=validate.OneOf(DELIVERY_PLACES, error=_PLACE_ERROR),
        metadata=_DELIVERY_PLACE,
    )


class MarketplacePriceChangeSchema(ma.Schema):
    price_fen = StrictInteger(
        required=True,
        validate=_PRICE_RANGE,
        metadata={"description": "the new price, in fen; holds from now"},
    )


class MarketplaceServiceActiveSchema(ma.Schema):
    active = StrictBoolean(required=True)


class MarketplaceBedsSchema(ma.Schema):
    beds_total = StrictInteger(required=True, validate=validate.Range(1, MAX_BEDS))
    beds_free = StrictInteger(
        required=True,
        validate=validate.Range(0, MAX_BEDS),
        metadata={"description": "at most beds_total"},
    )
