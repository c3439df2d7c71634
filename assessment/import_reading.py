"""Reading an uploaded spreadsheet: the size limits, CSV or XLSX, and the table of rows in it.

Nothing here knows what the columns mean; ``import_values`` does.
"""

from __future__ import annotations

import csv
import io
import warnings
import zipfile
from datetime import date, datetime

from flask import current_app
from flask_babel import lazy_gettext as _l

DEFAULT_MAX_ROWS = 20_000  # config IMPORT_MAX_ROWS; about a district's yearly assessments
DEFAULT_MAX_BYTES = 10 * 1024 * 1024  # config IMPORT_MAX_BYTES
MAX_COLUMNS = 100  # cells beyond this are never read: a sheet can claim 16,384 columns
UNPACKED_FACTOR = 20  # an .xlsx may unpack to this many times the size limit, no more


class Unreadable(Exception):
    """Something in the file cannot be read; ``reason`` says why, in the operator's language."""

    def __init__(self, reason):
        super().__init__(str(reason))
        self.reason = reason


class FileRejected(Unreadable):
    """The file as a whole cannot be read."""


def _limit(name: str, default: int) -> int:
    return int(current_app.config.get(name, default))


def _csv_rows(data: bytes) -> list[tuple[int, list]]:
    if data.startswith(b"PK\x03\x04"):
        raise FileRejected(_l("This file is an Excel workbook; give it the .xlsx extension."))
    # Excel in Chinese Windows saves "CSV" as GB18030 (GBK); UTF-8 is tried first because
    # GB18030 would also decode most UTF-8 bytes, into nonsense.
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise FileRejected(_l("The file is not text in UTF-8 or GB18030."))
    try:
        return list(enumerate(csv.reader(io.StringIO(text, newline="")), start=1))
    except csv.Error:
        raise FileRejected(_l("The file could not be read as CSV.")) from None


def _xlsx_rows(data: bytes, max_bytes: int, max_rows: int) -> list[tuple[int, list]]:
    not_xlsx = _l("This is not a valid Excel (.xlsx) file.")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile:
        raise FileRejected(not_xlsx) from None
    if unpacked > max_bytes * UNPACKED_FACTOR:  # zipfile never inflates past declared sizes
        raise FileRejected(_l("The workbook is too large when unpacked; split it into parts."))
    import openpyxl  # here, not at the top: every start-up would pay for it (tests/test_startup.py)

    rows, filled = [], 0
    try:
        # openpyxl warns about styles, data validation and extensions we never read.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
            try:
                sheet = book.worksheets[0]
                sheet.reset_dimensions()  # the stored dimensions are often wrong; read to the end
                for number, values in enumerate(sheet.iter_rows(values_only=True), start=1):
                    rows.append((number, list(values[:MAX_COLUMNS])))
                    filled += any(v is not None for v in values)
                    if filled > max_rows + 1:
                        break  # the header and one row too many: enough to refuse it
            finally:
                book.close()
    except Exception:  # a damaged workbook fails in many ways inside openpyxl
        raise FileRejected(not_xlsx) from None
    return rows


def read_table(data: bytes, filename: str) -> tuple[int, list, list[tuple[int, list]]]:
    """The header row's number and cells, then the non-blank data rows with their numbers."""
    max_bytes = _limit("IMPORT_MAX_BYTES", DEFAULT_MAX_BYTES)
    max_rows = _limit("IMPORT_MAX_ROWS", DEFAULT_MAX_ROWS)
    if len(data) > max_bytes:
        raise FileRejected(
            _l(
                "The file is larger than %(size)s MB; split it into parts.",
                size=f"{max_bytes / 2**20:g}",
            )
        )
    if not data.strip():
        raise FileRejected(_l("The file is empty."))
    extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if extension == "csv":
        rows = _csv_rows(data)
    elif extension == "xlsx":
        rows = _xlsx_rows(data, max_bytes, max_rows)
    else:
        raise FileRejected(_l("Upload a .csv or .xlsx file."))
    rows = [(n, cells[:MAX_COLUMNS]) for n, cells in rows if any(cell_text(c) for c in cells)]
    if not rows:
        raise FileRejected(_l("The file is empty."))
    (header_number, header), body = rows[0], rows[1:]
    if not body:
        raise FileRejected(_l("The file has a header row but no data rows."))
    if len(body) > max_rows:
        raise FileRejected(
            _l("The file has more than %(limit)s rows; split it into parts.", limit=max_rows)
        )
    return header_number, header, body


def cell_text(value) -> str:
    """A cell as text: spreadsheets give numbers, dates and booleans as well as strings."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))  # a score of 3 typed into Excel comes back as 3.0
    return str(value).strip()
