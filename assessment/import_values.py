"""The columns of each kind of sheet, and a cell's text read as the value of its column.

Parsers take the cell's text (see ``import_reading.cell_text``) and raise ``Invalid`` with
the reason, in the operator's language, when it cannot be read.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import NamedTuple

from flask_babel import lazy_gettext as _l

from assessment.import_reading import Unreadable
from assessment.instrument import instrument

# --- columns ----------------------------------------------------------------------------


class Column(NamedTuple):
    code: str
    required: bool
    aliases: tuple[str, ...] = ()


ID_ALIASES = ("身份证号", "身份证号码", "公民身份号码")
RESIDENT_COLUMNS = (
    Column("id_number", True, ID_ALIASES),
    Column("name", True, ("姓名",)),
    Column("district", True, ("区", "所在区", "区县", "区(县)")),
    Column("street", True, ("街道", "街道(乡镇)")),
    Column("address", True, ("地址", "住址", "家庭住址")),
    Column("phone", False, ("电话", "联系电话", "手机", "手机号")),
    Column("latitude", False, ("纬度",)),
    Column("longitude", False, ("经度",)),
)


def assessment_columns() -> tuple[Column, ...]:
    items = tuple(Column(i.code, True, (i.zh, i.en)) for i in instrument().items.values())
    return (
        Column("id_number", True, ID_ALIASES),
        Column("agency_licence", True, ("机构许可证号", "评估机构许可证号", "许可证号")),
        Column("external_ref", True, ("案卷号", "机构案卷号", "评估编号")),
        Column("type", True, ("评估类型",)),
        Column("assessed_on", True, ("评估日期",)),
        *items,
        Column("coma", False, ("昏迷",)),
        Column("diagnoses", False, ("诊断", "疾病诊断")),
        Column("care_risk_events_30d", False, ("照护风险事件", "近30天照护风险事件")),
        Column("recorder_certificate", True, ("评估员证书号", "记录评估员证书号")),
        Column("cosigner_certificate", True, ("复核评估员证书号", "第二评估员证书号")),
        Column("fee_yuan", False, ("评估费", "评估费(元)")),
    )


def code_text(text: str) -> str:
    """Codes, numbers and dates typed with full-width characters (１２３，－) read as ASCII."""
    return unicodedata.normalize("NFKC", text).strip()


def name_key(text: str) -> str:
    """A header or a district's name as compared: ignoring width, case, spaces, - and _."""
    return re.sub(r"[\s_\-]", "", code_text(text)).casefold()


# --- parsing values ---------------------------------------------------------------------

_DATE = re.compile(r"^(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})$")
_NUMBER = re.compile(r"^[+-]?\d+(\.\d+)?$")
_WHOLE = re.compile(r"^[+-]?\d+$")
_SCIENTIFIC = re.compile(r"^\d(\.\d+)?e\+?\d+$", re.IGNORECASE)
_TRUE = {"1", "yes", "y", "true", "是"}
_FALSE = {"", "0", "no", "n", "false", "否"}
_TYPES = {
    **{code: code for code in ("first", "routine", "immediate", "reassessment", "other")},
    "首次评估": "first",
    "首次": "first",
    "常规评估": "routine",
    "常规": "routine",
    "即时评估": "immediate",
    "即时": "immediate",
    "复评": "reassessment",
    "复核评估": "reassessment",
    "其他": "other",
}


class Invalid(Unreadable, ValueError):
    """A cell that cannot be read; carries the reason."""


def parse_date(text: str) -> date:
    match = _DATE.match(code_text(text))
    try:
        return date(*(int(part) for part in match.groups()))
    except (AttributeError, ValueError):
        raise Invalid(_l("Enter a real date as YYYY-MM-DD.")) from None


def parse_type(text: str) -> str:
    """The kind of assessment, by its code or its Chinese name."""
    kind = _TYPES.get(code_text(text).casefold())
    if kind is None:
        raise Invalid(_l("Use one of: first, routine, immediate, reassessment, other."))
    return kind


def parse_score(text: str) -> int | str | None:
    """An item's score: a whole number as such, None when blank, anything else as typed
    (``scoring.validate_items`` refuses it with its own reason)."""
    text = code_text(text)
    if not text:
        return None
    return int(text) if _WHOLE.match(text) else text


def parse_care_risk_events(text: str) -> int:
    text = code_text(text)
    if not text:
        return 0
    if not _WHOLE.match(text) or int(text) < 0:
        raise Invalid(_l("The number of care-risk events must be a whole number, 0 or more."))
    return int(text)


def parse_bool(text: str) -> bool:
    text = code_text(text).casefold()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise Invalid(_l("Enter 1 or 0 (yes or no)."))


def parse_fee_fen(text: str) -> int:
    """Yuan with at most two decimals, to integer fen; Decimal, so 0.1 + 0.2 is exact."""
    text = code_text(text)
    if not text:
        return 0
    try:
        fen = Decimal(text) * 100
    except InvalidOperation:
        fen = None
    if fen is None or not fen.is_finite() or fen != fen.to_integral_value() or fen < 0:
        raise Invalid(_l("Enter the fee in yuan with at most two decimals, such as 80 or 80.50."))
    return int(fen)


def parse_coordinate(text: str) -> float | None:
    text = code_text(text)
    if not text:
        return None
    if not _NUMBER.match(text):
        raise Invalid(_l("Enter a decimal number such as 41.7741."))
    return float(text)


def scientific_id_problem(text: str) -> str | None:
    """Excel shows an 18-digit number as 2.10102E+17 and keeps only 15 digits of it."""
    if _SCIENTIFIC.match(code_text(text)):
        return str(
            _l(
                "Excel turned this ID number into a number and lost digits; "
                "format the column as text and type it again."
            )
        )
    return None
