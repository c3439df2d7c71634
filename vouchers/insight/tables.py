"""Every table the bureau sees, downloadable as CSV or XLSX: ``download(name, headers, rows,
fmt)`` answers a streamed response.

``rows`` is a list of figures (answered whole, in the request) or any other iterable of
lists (a generator reading the database with ``yield_per`` for a large month), consumed while
the body is sent, so a table of a whole city never sits in
memory: CSV a batch of lines at a time, XLSX through openpyxl's write-only workbook (rows go to
a temporary file). The generator must open what it reads itself (the request's session has
ended by the time a streamed body runs: see ``eldercare.streaming``); a list of figures
computed in the view is fine as it is.

CSV is UTF-8 with a byte-order mark and CRLF, so spreadsheet programs read the Chinese right.
A provider named "=HYPERLINK(…)" is never evaluated as a formula (as in every download:
``vouchers.spreadsheets``): in CSV such text gets a leading quote, in XLSX text is a string
cell. Money columns are given by the caller as yuan numbers.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from urllib.parse import quote

from flask import Response, stream_with_context
from flask_babel import lazy_gettext as _l

from eldercare.errors import InvalidInput
from vouchers.spreadsheets import csv_chunks, workbook_chunks, xlsx_cell

FORMATS = ("csv", "xlsx")
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
CSV_TYPE = "text/csv; charset=utf-8"
UNKNOWN_FORMAT = _l("Choose CSV or XLSX.")


def check_format(fmt: str | None) -> str:
    fmt = (fmt or "csv").strip().lower()
    if fmt not in FORMATS:
        raise InvalidInput(details={"format": UNKNOWN_FORMAT})
    return fmt


def xlsx_chunks(headers: Sequence[str], rows: Iterable[Sequence], sheet: str) -> Iterator[bytes]:
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    worksheet = workbook.create_sheet(sheet[:31] or "Sheet1")
    worksheet.append([xlsx_cell(worksheet, str(h)) for h in headers])
    for row in rows:
        worksheet.append([xlsx_cell(worksheet, value) for value in row])
    yield from workbook_chunks(workbook)


def download(
    name: str, headers: Sequence[str], rows: Iterable[Sequence], fmt: str | None
) -> Response:
    """The table as an attachment ``<name>.<fmt>``, streamed. ``fmt`` is checked (a wrong
    one is ``InvalidInput`` before anything is sent)."""
    fmt = check_format(fmt)
    headers = [str(h) for h in headers]  # lazy strings rendered now, in the reader's language
    if fmt == "csv":
        body, mimetype = csv_chunks(headers, rows), CSV_TYPE
    else:
        body, mimetype = xlsx_chunks(headers, rows, name), XLSX_TYPE
    if isinstance(rows, list | tuple):
        # Figures already computed (a dashboard's table): the whole file in the request, so
        # nothing is left to run after it (a client that never reads a streamed body leaves
        # a generator to be closed outside the request).
        response = Response(b"".join(body), mimetype=mimetype)
    else:
        response = Response(stream_with_context(body), mimetype=mimetype)
    filename = f"{name}.{fmt}"
    response.headers["Content-Disposition"] = (
        f'attachment; filename="{filename.encode("ascii", "replace").decode()}"; '
        f"filename*=UTF-8''{quote(filename)}"
    )
    response.headers["Cache-Control"] = "no-store"
    return response
