"""The bureau's data for its own systems: vouchers and redemptions, filtered and paged, and
a month of either exported as CSV or XLSX.

One query per list, joined to the district, the resident (only to mask the ID number) and,
for redemptions, the provider and service: no query per row. An export streams: the rows are
read from the database in batches (``yield_per``; a server-side cursor on PostgreSQL) and
written out as they come, CSV line by line, XLSX through openpyxl's write-only workbook
(rows go to a temporary file, not a sheet in memory), so a month of a whole city never sits
in memory. District staff see their own district only; a filter naming another district
answers 404, as a missing one would.

Personal data is minimised: a resident is the masked ID number (the first four and last four
characters); no name, address or telephone.
"""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from eldercare.db import db
from eldercare.errors import InvalidInput, NotFound
from eldercare.residents import District, Resident, mask_resident_id
from eldercare.timeutil import to_local
from marketplace.models import Provider, Service
from vouchers import spreadsheets
from vouchers.models import Redemption, Voucher

BATCH = 1000  # rows fetched at a time while exporting
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

VOUCHER_COLUMNS = (
    "id",
    "month",
    "district",
    "masked_id_number",
    "kind",
    "status",
    "face_value_fen",
    "balance_fen",
    "held_fen",
    "revoked_reason",
    "issued_at",
    "closed_at",
)
REDEMPTION_COLUMNS = (
    "id",
    "voucher_id",
    "month",
    "district",
    "masked_id_number",
    "provider_id",
    "provider_name",
    "service_id",
    "category",
    "status",
    "quantity",
    "price_fen",
    "insurance_fen",
    "subsidy_fen",
    "copay_fen",
    "payment_method",
    "checked_in_at",
    "redeemed_at",
    "reversed_at",
)


def parse_month(text: str) -> date:
    try:
        return date.fromisoformat(f"{text}-01")
    except (TypeError, ValueError):
        raise InvalidInput(details={"month": _l("Give the month as YYYY-MM.")}) from None


def _district_filter(filters: dict, user) -> int | None:
    """The district id the rows are limited to: the caller's own for district staff."""
    wanted = None
    if filters.get("district"):
        wanted = db.session.scalar(
            sa.select(District.id).where(District.code == filters["district"])
        )
        if wanted is None:
            raise NotFound(_l("There is no district with that code."))
    if user.district_id is not None:
        if wanted is not None and wanted != user.district_id:
            raise NotFound()  # another district's data looks like none at all
        return user.district_id
    return wanted


def voucher_query(filters: dict, user):
    """(statement, order) of the vouchers matching ``filters``, as rows of VOUCHER_COLUMNS."""
    statement = (
        sa.select(
            Voucher.id,
            Voucher.month,
            District.code.label("district"),
            Resident.id_number,
            Voucher.kind,
            Voucher.status,
            Voucher.face_value_fen,
            Voucher.balance_fen,
            Voucher.held_fen,
            Voucher.revoked_reason,
            Voucher.issued_at,
            Voucher.closed_at,
        )
        .join(District, District.id == Voucher.district_id)
        .join(Resident, Resident.id == Voucher.resident_id)
    )
    district_id = _district_filter(filters, user)
    if district_id is not None:
        statement = statement.where(Voucher.district_id == district_id)
    if filters.get("month"):
        statement = statement.where(Voucher.month == parse_month(filters["month"]))
    for key, column in (("status", Voucher.status), ("kind", Voucher.kind)):
        if filters.get(key):
            statement = statement.where(column == filters[key])
    return statement, (Voucher.month, Voucher.id)


def redemption_query(filters: dict, user):
    """(statement, order) of the redemptions matching ``filters`` (the month is the
    voucher's: a voucher is used only in its own month)."""
    statement = (
        sa.select(
            Redemption.id,
            Redemption.voucher_id,
            Voucher.month,
            District.code.label("district"),
            Resident.id_number,
            Redemption.provider_id,
            Provider.name.label("provider_name"),
            Redemption.service_id,
            Service.category_code.label("category"),
            Redemption.status,
            Redemption.quantity,
            Redemption.price_fen,
            Redemption.insurance_fen,
            Redemption.subsidy_fen,
            Redemption.copay_fen,
            Redemption.payment_method,
            Redemption.checked_in_at,
            Redemption.redeemed_at,
            Redemption.reversed_at,
        )
        .join(Voucher, Voucher.id == Redemption.voucher_id)
        .join(District, District.id == Voucher.district_id)
        .join(Resident, Resident.id == Redemption.resident_id)
        .join(Provider, Provider.id == Redemption.provider_id)
        .outerjoin(Service, Service.id == Redemption.service_id)
    )
    district_id = _district_filter(filters, user)
    if district_id is not None:
        statement = statement.where(Voucher.district_id == district_id)
    if filters.get("month"):
        statement = statement.where(Voucher.month == parse_month(filters["month"]))
    if filters.get("status"):
        statement = statement.where(Redemption.status == filters["status"])
    if filters.get("provider"):
        statement = statement.where(Redemption.provider_id == filters["provider"])
    return statement, (Redemption.checked_in_at, Redemption.id)


def _value(key: str, value):
    if key == "month":
        return value.strftime("%Y-%m")
    if key.endswith("_at") and value is not None:
        return to_local(value)
    return value


def shape(row, columns) -> dict:
    """One result row as the API answers it (times in Asia/Shanghai, the ID masked)."""
    values = row._mapping
    out = {}
    for key in columns:
        if key == "masked_id_number":
            out[key] = mask_resident_id(values["id_number"])
        else:
            out[key] = _value(key, values[key])
    return out


def page(statement, order, query: dict, columns) -> dict:
    total = db.session.scalar(sa.select(sa.func.count()).select_from(statement.subquery()))
    rows = db.session.execute(
        statement.order_by(*order).limit(query["limit"]).offset(query["offset"])
    )
    return {
        "items": [shape(row, columns) for row in rows],
        "total": total,
        "limit": query["limit"],
        "offset": query["offset"],
    }


def _stream_rows(statement, order, columns):
    result = db.session.execute(
        statement.order_by(*order).execution_options(yield_per=BATCH, stream_results=True)
    )
    try:
        for row in result:
            yield shape(row, columns)
    finally:
        result.close()


def csv_chunks(statement, order, columns):
    """The CSV (``spreadsheets.csv_chunks``: UTF-8 with a byte-order mark, so spreadsheet
    programs read the Chinese names right), a batch of lines at a time; text that would
    start a formula is quoted."""
    rows = _stream_rows(statement, order, columns)
    yield from spreadsheets.csv_chunks(columns, ([row[key] for key in columns] for row in rows))


def xlsx_chunks(statement, order, columns, sheet: str):
    """The XLSX workbook, built with openpyxl's write-only mode (rows are written to a
    temporary file as they come), then sent in pieces."""
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    worksheet = workbook.create_sheet(sheet)
    worksheet.append(list(columns))
    for row in _stream_rows(statement, order, columns):
        # Text as string cells (never a formula), a local time as text with its offset.
        worksheet.append([spreadsheets.xlsx_cell(worksheet, row[key]) for key in columns])
    yield from spreadsheets.workbook_chunks(workbook)
