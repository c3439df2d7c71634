"""Reading the bank's result file for a batch (CSV or XLSX) into lines, or refusing the
whole file with the reason. Applying the lines is ``bank_results``.

Layout (README), one record per row:
    业务参考号,收款账号,金额(元),状态,失败原因          the column titles (or, in English,
        line ref,payee account number,amount yuan,status,reason)
    <line ref>,<payee account number>,<amount yuan>,<成功|失败|SUCCESS|FAILED>,<bank's reason>
    ...
    T,<count of result lines>,<total yuan of result lines>
Blank rows are ignored. CSV in UTF-8 (with or without a byte-order mark) or GB18030, as
Chinese banks' systems write; XLSX: the first sheet.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from decimal import Decimal

from flask import current_app
from flask_babel import lazy_gettext as _l

from eldercare.errors import InvalidInput
from eldercare.forms import fen_from_yuan

TITLES = {
    ("业务参考号", "收款账号", "金额(元)", "状态", "失败原因"),
    ("line ref", "payee account number", "amount yuan", "status", "reason"),
}
PAID = {"成功", "success", "paid"}
FAILED = {"失败", "failed", "failure"}
TITLE_TEXT = "业务参考号,收款账号,金额(元),状态,失败原因"
COUNT = re.compile(r"[0-9]{1,9}")  # ASCII digits only ("²".isdigit() is true), and few
UNREADABLE = _l("The file could not be read: save it as CSV (UTF-8) or XLSX.")


@dataclass(frozen=True)
class ResultLine:
    row: int  # in the file, from 1 (the titles are row 1)
    reference: str
    account_number: str
    amount_fen: int
    paid: bool
    reason: str


def _refuse(message) -> InvalidInput:
    return InvalidInput(message, details={"file": message})


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):  # a number typed into Excel: its exact decimal text
        text = format(Decimal(repr(value)), "f")
        return text[:-2] if text.endswith(".0") else text
    return str(value).strip()


def _csv_rows(data: bytes) -> list[list[str]]:
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise _refuse(UNREADABLE)
    try:
        return [[c.strip() for c in row] for row in csv.reader(io.StringIO(text))]
    except csv.Error:  # a field over csv's size limit, a stray quote in strict dialects…
        raise _refuse(UNREADABLE) from None


def _xlsx_rows(data: bytes) -> list[list[str]]:
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception:  # noqa: BLE001 (any unreadable workbook is the same answer)
        raise _refuse(UNREADABLE) from None
    try:
        # read-only sheets parse their XML while iterated: a broken sheet fails here.
        sheet = workbook.worksheets[0]
        return [[_cell(v) for v in row] for row in sheet.iter_rows(values_only=True)]
    except Exception:  # noqa: BLE001
        raise _refuse(UNREADABLE) from None
    finally:
        workbook.close()


def read_rows(data: bytes) -> list[list[str]]:
    """The file's non-blank rows, trailing empty cells dropped. XLSX is a zip ("PK")."""
    if not data:
        raise _refuse(_l("Choose the bank's result file to import."))
    limit = current_app.config.get("IMPORT_MAX_BYTES", 10 * 1024 * 1024)
    if len(data) > limit:
        raise _refuse(_l("The file is too large to be a result file of one batch."))
    rows = _xlsx_rows(data) if data[:2] == b"PK" else _csv_rows(data)
    clean = []
    for number, row in enumerate(rows, 1):
        if any("\x00" in cell for cell in row):  # the database refuses NUL in text
            raise _refuse(
                _l("Row %(row)s holds a NUL character: this is not a result file.", row=number)
            )
        while row and row[-1] == "":
            row = row[:-1]
        clean.append(row)
    return clean


def parse(rows: list[list[str]]) -> tuple[list[ResultLine], int, int]:
    """The result lines, with the trailer's count and total fen (checked against them)."""
    numbered = [(i, row) for i, row in enumerate(rows, 1) if row]
    if (
        not numbered
        or tuple(c.lower() for c in numbered[0][1][:5]) not in TITLES
        or len(numbered[0][1]) > 5
    ):
        raise _refuse(
            _l(
                "This is not a bank result file: its first row must be the column titles "
                "%(titles)s.",
                titles=TITLE_TEXT,
            )
        )
    last_row, trailer = numbered[-1]
    if len(numbered) < 2 or trailer[0].upper() != "T":
        raise _refuse(_l("The file has no trailer: its last row must be T,<count>,<total yuan>."))
    count_text = trailer[1] if len(trailer) > 1 else ""
    total_fen = fen_from_yuan(trailer[2]) if len(trailer) > 2 else None
    if not COUNT.fullmatch(count_text) or total_fen is None or len(trailer) > 3:
        raise _refuse(_l("Row %(row)s: the trailer must be T,<count>,<total yuan>.", row=last_row))
    lines = []
    for row_no, row in numbered[1:-1]:
        if len(row) < 4 or len(row) > 5:
            raise _refuse(
                _l(
                    "Row %(row)s has %(found)s columns; a result line has 5: %(titles)s.",
                    row=row_no,
                    found=len(row),
                    titles=TITLE_TEXT,
                )
            )
        reference, number, amount, status = row[:4]
        fen = fen_from_yuan(amount)
        if fen is None or not reference:
            raise _refuse(
                _l(
                    "Row %(row)s: the reference or the amount (yuan, at most two decimals) is "
                    "missing or unreadable.",
                    row=row_no,
                )
            )
        outcome = status.strip().lower()
        if outcome not in PAID | FAILED:
            raise _refuse(
                _l("Row %(row)s: the status must be 成功 or 失败 (SUCCESS or FAILED).", row=row_no)
            )
        reason = row[4] if len(row) > 4 else ""
        lines.append(
            ResultLine(row_no, reference, number.replace(" ", ""), fen, outcome in PAID, reason)
        )
    found_total = sum(line.amount_fen for line in lines)
    if int(count_text) != len(lines) or total_fen != found_total:
        raise _refuse(
            _l(
                "The trailer says %(count)s lines and %(total)s yuan, but the file has "
                "%(found)s lines and %(found_total)s yuan.",
                count=count_text,
                total=trailer[2],
                found=len(lines),
                found_total=f"{Decimal(found_total) / 100:.2f}",
            )
        )
    return lines, int(count_text), total_fen
