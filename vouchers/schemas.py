"""Marshmallow schemas of the vouchers API; they also write its part of the OpenAPI document.

Component names come from the class names, so every class here starts with ``Vouchers`` to
stay clear of the other domains' schemas in the same document.

Input schemas check shapes only (a number is a JSON number, never ``"5"`` or ``true``); the
rules (what a price may be, how far a home visit may be checked in) stay with the service
modules, which name the offending field themselves. Money is integer fen; times are ISO 8601
in Asia/Shanghai.
"""

from __future__ import annotations

import marshmallow as ma
from flask_babel import lazy_gettext as _l
from marshmallow import fields, validate

from eldercare.api_fields import (
    StrictInteger,
    district_code,
    page_limit,
    page_offset,
    resident_id_number,
    said,
)
from eldercare.api_fields import month as month_field
from eldercare.db import ROW_ID_MAX
from marketplace.models import DELIVERY_PLACES
from vouchers.models import PAYMENT_METHODS, REDEMPTION_STATUSES, VOUCHER_KINDS, VOUCHER_STATUSES
from vouchers.redemption.pricing import MAX_QUANTITY

_LOCAL_TIME = {"description": "ISO 8601, in Asia/Shanghai (+08:00)"}
_FEN = {"description": "in fen"}
_DISTRICT = {"description": "district code (GB/T 2260)"}
OUTCOMES = ("succeeded", "requires_action", "processing", "failed", "canceled")


# --- vouchers, as the elder's side sees them -----------------------------------------------


class VouchersElderSchema(ma.Schema):
    id = fields.Integer(required=True, metadata={"description": "resident id"})
    name = fields.String(required=True)


class VouchersVoucherSchema(ma.Schema):
    id = fields.Integer(required=True)
    resident = fields.Nested(VouchersElderSchema, required=True)
    month = fields.String(required=True, metadata={"description": "YYYY-MM (Asia/Shanghai)"})
    kind = fields.String(required=True, validate=validate.OneOf(VOUCHER_KINDS))
    status = fields.String(required=True, validate=validate.OneOf(VOUCHER_STATUSES))
    face_value_fen = fields.Integer(required=True, metadata=_FEN)
    balance_fen = fields.Integer(required=True, metadata={"description": "spendable now, fen"})
    held_fen = fields.Integer(
        required=True, metadata={"description": "held while a card co-payment runs, fen"}
    )
    used_fen = fields.Integer(required=True, metadata={"description": "redeemed so far, fen"})
    ratio_bp = fields.Integer(
        required=True,
        metadata={"description": "share of the out-of-pocket price it pays, basis points"},
    )
    in_scope_categories = fields.List(
        fields.String(), required=True, metadata={"description": "category codes it pays for"}
    )
    usable = fields.Boolean(required=True, metadata={"description": "a provider can use it now"})
    problem = fields.String(
        allow_none=True, metadata={"description": "why it cannot be used now; null: it can"}
    )
    issued_at = fields.AwareDateTime(required=True, metadata=_LOCAL_TIME)


class VouchersNamedSchema(ma.Schema):
    id = fields.Integer(required=True)
    name = fields.String(required=True)


class VouchersServiceSchema(ma.Schema):
    id = fields.Integer(required=True)
    title = fields.String(required=True)
    category = fields.String(required=True, metadata={"description": "category code"})
    unit = fields.String(required=True)
    delivery_place = fields.String(
        required=True,
        validate=validate.OneOf(DELIVERY_PLACES),
        metadata={
            "description": "where it is delivered, as the provider set it: home (a home "
            "visit: check-in needs the phone's location near the elder's home), provider "
            "(at the provider's premises) or institution"
        },
    )


class _RedemptionBase(ma.Schema):
    id = fields.Integer(required=True)
    voucher_id = fields.Integer(required=True)
    status = fields.String(required=True, validate=validate.OneOf(REDEMPTION_STATUSES))
    service = fields.Nested(VouchersServiceSchema, required=True)
    booking_id = fields.Integer(allow_none=True)
    checked_in_at = fields.AwareDateTime(required=True, metadata=_LOCAL_TIME)
    checked_out_at = fields.AwareDateTime(allow_none=True, metadata=_LOCAL_TIME)
    quantity = fields.Integer(
        allow_none=True, metadata={"description": "units of the service; null: not priced yet"}
    )
    price_fen = fields.Integer(allow_none=True, metadata={"description": "null: not priced yet"})
    insurance_fen = fields.Integer(
        allow_none=True, metadata={"description": "paid by long-term-care insurance, fen"}
    )
    subsidy_fen = fields.Integer(allow_none=True, metadata={"description": "paid by the voucher"})
    copay_fen = fields.Integer(allow_none=True, metadata={"description": "paid by the elder"})
    payment_method = fields.String(
        allow_none=True,
        validate=validate.OneOf(PAYMENT_METHODS),
        metadata={"description": "none: nothing to pay"},
    )
    redeemed_at = fields.AwareDateTime(allow_none=True, metadata=_LOCAL_TIME)
    reversed_at = fields.AwareDateTime(allow_none=True, metadata=_LOCAL_TIME)
    reversal_reason = fields.String(allow_none=True)


class VouchersElderRedemptionSchema(_RedemptionBase):
    provider = fields.Nested(VouchersNamedSchema, required=True)


class VouchersVoucherDetailSchema(VouchersVoucherSchema):
    redemptions = fields.List(
        fields.Nested(VouchersElderRedemptionSchema),
        required=True,
        metadata={"description": "newest first"},
    )


class VouchersQrTokenSchema(ma.Schema):
    token = fields.String(
        required=True, metadata={"description": "23 characters; single use; show it as a QR"}
    )
    token_grouped = fields.String(
        required=True, metadata={"description": "the same in groups of 4, for reading aloud"}
    )
    url = fields.String(required=True, metadata={"description": "what the QR code encodes"})
    expires_at = fields.AwareDateTime(
        required=True, metadata={"description": "scanners refuse it from then on (Asia/Shanghai)"}
    )
    refresh_at = fields.AwareDateTime(
        required=True, metadata={"description": "ask for a fresh token from then on"}
    )
    already_used = fields.Boolean(
        required=True,
        metadata={
            "description": "this minute's token was scanned already: the next one comes at "
            "refresh_at (a token stays the same for its whole minute)"
        },
    )


# --- the scanner (a provider's staff) -----------------------------------------------------


class VouchersScanRequestSchema(ma.Schema):
    code = fields.String(
        required=True,
        validate=validate.Length(min=1, max=500),
        metadata={
            "description": "what was scanned or typed: a rotating token, a printed card's "
            "code, or the https://.../r/... link either QR encodes"
        },
    )
    pin = fields.String(
        load_default=None,
        allow_none=True,
        metadata={"description": "the elder's 6-digit PIN; needed for a printed card only"},
    )


class VouchersScanElderSchema(ma.Schema):
    masked_name = fields.String(required=True)
    district = fields.String(required=True, metadata=_DISTRICT)


class VouchersScanServiceSchema(VouchersServiceSchema):
    price_fen = fields.Integer(required=True, metadata={"description": "the listed price now"})
    home_service = fields.Boolean(
        required=True,
        metadata={
            "description": "delivery_place is home: check-in needs the phone's location "
            "(kept for older scanner apps)"
        },
    )
    you_may_deliver = fields.Boolean(
        required=True,
        metadata={"description": "false: it needs a caregiver certificate you do not hold"},
    )


class VouchersScanBookingSchema(ma.Schema):
    id = fields.Integer(required=True)
    service = fields.Nested(VouchersServiceSchema, required=True)
    slot_start = fields.AwareDateTime(required=True, metadata=_LOCAL_TIME)
    slot_end = fields.AwareDateTime(required=True, metadata=_LOCAL_TIME)
    price_fen = fields.Integer(required=True, metadata={"description": "the price when booked"})


class VouchersScanSchema(ma.Schema):
    scan_id = fields.Integer(required=True, metadata={"description": "check in with this"})
    repeated = fields.Boolean(
        required=True,
        metadata={"description": "true: this scanner had already sent this code; same scan"},
    )
    scanned_at = fields.AwareDateTime(required=True, metadata=_LOCAL_TIME)
    voucher_id = fields.Integer(required=True)
    month = fields.String(required=True, metadata={"description": "YYYY-MM"})
    kind = fields.String(required=True, validate=validate.OneOf(VOUCHER_KINDS))
    elder = fields.Nested(VouchersScanElderSchema, required=True)
    remaining_fen = fields.Integer(required=True, metadata={"description": "the balance, fen"})
    ratio_bp = fields.Integer(required=True)
    services = fields.List(
        fields.Nested(VouchersScanServiceSchema),
        required=True,
        metadata={"description": "the provider's offered services the voucher pays for"},
    )
    bookings_today = fields.List(
        fields.Nested(VouchersScanBookingSchema),
        required=True,
        metadata={"description": "the elder's accepted bookings with the provider today"},
    )


class VouchersCheckInRequestSchema(ma.Schema):
    service_id = StrictInteger(
        load_default=None,
        allow_none=True,
        validate=validate.Range(min=1, max=ROW_ID_MAX),
        metadata={"description": "or booking_id"},
    )
    booking_id = StrictInteger(
        load_default=None,
        allow_none=True,
        validate=validate.Range(min=1, max=ROW_ID_MAX),
        metadata={"description": "an accepted booking of the elder today; sets the service"},
    )
    latitude = fields.Float(
        load_default=None,
        allow_none=True,
        metadata={"description": "WGS-84; required for a home service"},
    )
    longitude = fields.Float(load_default=None, allow_none=True, metadata={"description": "WGS-84"})


class VouchersProviderRedemptionSchema(_RedemptionBase):
    elder = fields.Nested(VouchersScanElderSchema, required=True)
    staff_user_id = fields.Integer(required=True)
    check_in_distance_m = fields.Integer(
        allow_none=True, metadata={"description": "from the elder's home, home services only"}
    )
    ratio_bp = fields.Integer(allow_none=True)
    remaining_fen = fields.Integer(
        required=True, metadata={"description": "what the voucher has left now, fen"}
    )
    failure_reason = fields.String(allow_none=True)
    reversal_deadline = fields.Date(
        allow_none=True, metadata={"description": "last day (Asia/Shanghai) it may be reversed"}
    )
    next_action_url = fields.String(
        allow_none=True,
        metadata={"description": "a card payment waiting for 3-D Secure: send the payer here"},
    )


class VouchersPriceRequestSchema(ma.Schema):
    price_fen = StrictInteger(
        required=True,
        metadata={"description": "the total, at most quantity x the listed (or booked) price"},
    )
    insurance_fen = StrictInteger(
        load_default=0, metadata={"description": "the long-term-care insurance part, fen"}
    )
    quantity = StrictInteger(
        load_default=1,
        metadata={"description": f"units of the service bought (1 to {MAX_QUANTITY}), e.g. meals"},
    )


# http(s), a host name or address of ASCII letters, digits, dots and hyphens, an optional
# port, then any printable ASCII without spaces.
RETURN_URL_PATTERN = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[!-~]*)?$"


class VouchersCardRequestSchema(ma.Schema):
    payment_method_id = fields.String(
        required=True,
        validate=validate.Regexp(r"^[A-Za-z0-9_]{1,80}$"),
        metadata={"description": "the gateway's id of the card the terminal tokenized (pm_...)"},
    )
    # A pattern rather than fields.Url: the document states exactly what is accepted (Url's
    # own rules, a top-level domain for one, cannot be read from the document).
    return_url = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.Regexp(
            RETURN_URL_PATTERN, error=_l("Give an http or https address, e.g. https://a.cn/x.")
        ),
        metadata={
            "description": "an http(s) URL: where the bank's 3-D Secure page sends the payer "
            "back to; default: the platform's home page",
            "example": "https://pay.example.cn/back",
        },
    )


class VouchersCardResultSchema(ma.Schema):
    outcome = fields.String(
        required=True,
        validate=validate.OneOf(OUTCOMES),
        metadata={
            "description": "succeeded: redeemed; requires_action: send the payer to "
            "next_action_url, then GET the redemption; processing: GET it again later"
        },
    )
    next_action_url = fields.String(allow_none=True)
    redemption = fields.Nested(VouchersProviderRedemptionSchema, required=True)


class VouchersReverseRequestSchema(ma.Schema):
    reason = fields.String(
        required=True, validate=said(), metadata={"description": "why; the family is told"}
    )


class VouchersRedemptionQuerySchema(ma.Schema):
    status = fields.String(validate=validate.OneOf(REDEMPTION_STATUSES))
    limit = page_limit()
    offset = page_offset()


class VouchersRedemptionPageSchema(ma.Schema):
    items = fields.List(fields.Nested(VouchersProviderRedemptionSchema), required=True)
    total = fields.Integer(required=True, metadata={"description": "matching rows, all pages"})
    limit = fields.Integer(required=True)
    offset = fields.Integer(required=True)


# --- the bureau ---------------------------------------------------------------------------


class VouchersAccountSchema(ma.Schema):
    code = fields.String(required=True)
    name = fields.String(required=True)
    balance_fen = fields.Integer(required=True)


class VouchersDistrictPoolSchema(ma.Schema):
    code = fields.String(required=True, metadata=_DISTRICT)
    name_zh = fields.String(required=True)
    name_en = fields.String(required=True)
    allocated_fen = fields.Integer(
        required=True, metadata={"description": "allocated to it, net of what was taken back"}
    )
    available_fen = fields.Integer(
        required=True, metadata={"description": "not yet reserved by issued vouchers"}
    )
    outstanding_fen = fields.Integer(
        required=True, metadata={"description": "on its active vouchers: balances and holds"}
    )
    active_vouchers = fields.Integer(required=True)


class VouchersSubledgerMismatchSchema(ma.Schema):
    account = fields.String(
        required=True,
        metadata={
            "description": "vouchers:outstanding (balances of active vouchers), vouchers:held "
            "(held on vouchers) or redeemed:unsettled (subsidy of redeemed redemptions)"
        },
    )
    ledger_fen = fields.Integer(required=True, metadata={"description": "the account's balance"})
    subledger_fen = fields.Integer(required=True, metadata={"description": "the rows' sum"})


class VouchersLedgerCheckSchema(ma.Schema):
    ok = fields.Boolean(required=True)
    unbalanced_entries = fields.List(fields.Integer(), required=True)
    drifted_accounts = fields.List(fields.String(), required=True)
    total_fen = fields.Integer(required=True, metadata={"description": "zero when balanced"})
    subledger_mismatches = fields.List(
        fields.Nested(VouchersSubledgerMismatchSchema),
        required=True,
        metadata={"description": "accounts that differ from the rows they stand for"},
    )
    closed_vouchers_with_balance = fields.List(
        fields.Integer(),
        required=True,
        metadata={"description": "expired or revoked vouchers whose balance is not zero"},
    )
    capture_mismatches = fields.List(
        fields.Integer(),
        required=True,
        metadata={
            "description": "redemptions captured other than once (redeemed or reversed) or "
            "captured although never redeemed"
        },
    )
    negative_accounts = fields.List(
        fields.String(),
        required=True,
        metadata={"description": "accounts that may not go negative whose balance is below 0"},
    )
    checked_at = fields.AwareDateTime(
        required=True,
        metadata={"description": "when the check ran (ISO 8601, Asia/Shanghai)"},
    )
    stale = fields.Boolean(
        required=True,
        metadata={"description": "older than two hours: the hourly check is not running"},
    )


class VouchersPoolSchema(ma.Schema):
    accounts = fields.List(fields.Nested(VouchersAccountSchema), required=True)
    districts = fields.List(fields.Nested(VouchersDistrictPoolSchema), required=True)
    ledger = fields.Nested(
        VouchersLedgerCheckSchema,
        required=True,
        allow_none=True,
        metadata={
            "description": "the last stored ledger check (hourly job, `flask vouchers "
            "verify-ledger` or the pool page's button); null before the first"
        },
    )


_MONTH = {"description": "YYYY-MM (Asia/Shanghai)"}

# --- issue 10: the elder's kind set by the bureau or an institution; the bureau's data -----


class VouchersKindRequestSchema(ma.Schema):
    id_number = resident_id_number(required=True)
    in_institution = fields.Boolean(
        required=True,
        truthy={True},
        falsy={False},
        metadata={"description": "the elder lives in a care institution"},
    )
    kind = fields.String(
        load_default=None,
        allow_none=True,
        validate=validate.OneOf(VOUCHER_KINDS),
        metadata={
            "description": "home_community or institutional; institutional when left out "
            "and in_institution is true"
        },
    )


class VouchersKindAnswerSchema(ma.Schema):
    masked_id_number = fields.String(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(VOUCHER_KINDS))
    in_institution = fields.Boolean(required=True)
    institution_provider_id = fields.Integer(
        allow_none=True, metadata={"description": "the institution that recorded it; null: bureau"}
    )
    applies_from = fields.String(
        required=True,
        metadata={
            "description": "YYYY-MM: the first month whose voucher has this kind (this "
            "month's voucher, once issued, keeps its kind)"
        },
    )


class _BureauFilterSchema(ma.Schema):
    month = month_field()
    district = district_code()


class VouchersBureauVoucherQuerySchema(_BureauFilterSchema):
    status = fields.String(validate=validate.OneOf(VOUCHER_STATUSES))
    kind = fields.String(validate=validate.OneOf(VOUCHER_KINDS))
    limit = page_limit()
    offset = page_offset()


class VouchersBureauRedemptionQuerySchema(_BureauFilterSchema):
    status = fields.String(validate=validate.OneOf(REDEMPTION_STATUSES))
    provider = fields.Integer(
        validate=validate.Range(min=1, max=ROW_ID_MAX), metadata={"description": "provider id"}
    )
    limit = page_limit()
    offset = page_offset()


_FORMAT = fields.String(load_default="csv", validate=validate.OneOf(("csv", "xlsx")))


class VouchersBureauVoucherExportSchema(VouchersBureauVoucherQuerySchema):
    class Meta:
        exclude = ("limit", "offset")

    month = month_field(required=True)
    format = _FORMAT


class VouchersBureauRedemptionExportSchema(VouchersBureauRedemptionQuerySchema):
    class Meta:
        exclude = ("limit", "offset")

    month = month_field(required=True)
    format = _FORMAT


class VouchersBureauVoucherRowSchema(ma.Schema):
    id = fields.Integer(required=True)
    month = fields.String(required=True, metadata=_MONTH)
    district = fields.String(required=True, metadata=_DISTRICT)
    masked_id_number = fields.String(required=True, metadata={"description": "resident ID, masked"})
    kind = fields.String(required=True, validate=validate.OneOf(VOUCHER_KINDS))
    status = fields.String(required=True, validate=validate.OneOf(VOUCHER_STATUSES))
    face_value_fen = fields.Integer(required=True, metadata=_FEN)
    balance_fen = fields.Integer(required=True, metadata=_FEN)
    held_fen = fields.Integer(required=True, metadata=_FEN)
    revoked_reason = fields.String(allow_none=True)
    issued_at = fields.AwareDateTime(required=True, metadata=_LOCAL_TIME)
    closed_at = fields.AwareDateTime(allow_none=True, metadata=_LOCAL_TIME)


class VouchersBureauRedemptionRowSchema(ma.Schema):
    id = fields.Integer(required=True)
    voucher_id = fields.Integer(required=True)
    month = fields.String(required=True, metadata=_MONTH)
    district = fields.String(required=True, metadata=_DISTRICT)
    masked_id_number = fields.String(required=True, metadata={"description": "resident ID, masked"})
    provider_id = fields.Integer(required=True)
    provider_name = fields.String(required=True)
    service_id = fields.Integer(allow_none=True)
    category = fields.String(allow_none=True, metadata={"description": "category code"})
    status = fields.String(required=True, validate=validate.OneOf(REDEMPTION_STATUSES))
    quantity = fields.Integer(allow_none=True)
    price_fen = fields.Integer(allow_none=True, metadata=_FEN)
    insurance_fen = fields.Integer(allow_none=True, metadata=_FEN)
    subsidy_fen = fields.Integer(allow_none=True, metadata=_FEN)
    copay_fen = fields.Integer(allow_none=True, metadata=_FEN)
    payment_method = fields.String(allow_none=True)
    checked_in_at = fields.AwareDateTime(required=True, metadata=_LOCAL_TIME)
    redeemed_at = fields.AwareDateTime(allow_none=True, metadata=_LOCAL_TIME)
    reversed_at = fields.AwareDateTime(allow_none=True, metadata=_LOCAL_TIME)


class VouchersBureauVoucherPageSchema(ma.Schema):
    items = fields.List(fields.Nested(VouchersBureauVoucherRowSchema), required=True)
    total = fields.Integer(required=True, metadata={"description": "matching rows, all pages"})
    limit = fields.Integer(required=True)
    offset = fields.Integer(required=True)


class VouchersBureauRedemptionPageSchema(ma.Schema):
    items = fields.List(fields.Nested(VouchersBureauRedemptionRowSchema), required=True)
    total = fields.Integer(required=True, metadata={"description": "matching rows, all pages"})
    limit = fields.Integer(required=True)
    offset = fields.Integer(required=True)
