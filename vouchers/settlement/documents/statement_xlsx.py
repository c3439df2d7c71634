"""A statement as XLSX: ``statement_xlsx(statement)`` yields the file in pieces.

The same content as the PDF (``documents``): at the top the statement's facts and totals
(label, value), then a header row and one row per line. Money is in yuan as numbers with two
decimals (exact: written from Decimal, shown as 0.00), so an accountant can sum the columns;
dates are dates, times are local (Asia/Shanghai) text.

openpyxl's write-only workbook writes rows to a temporary file as they come, and the lines
are read in one streamed query (``facts.line_rows``): a month of any size never sits
in memory as a sheet.
"""

from __future__ import annotations

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font

from eldercare.timeutil import to_local
from vouchers.settlement.documents import facts
from vouchers.settlement.documents.documents import printed_hash
from vouchers.settlement.models import Statement
from vouchers.spreadsheets import text_cell, workbook_chunks

MONEY_FORMAT = "#,##0.00"
# Column widths (characters), in the order of facts.LINE_HEADERS.
WIDTHS = (14, 12, 10, 32, 9, 9, 12, 12, 12, 12, 12, 16)


def _safe(sheet, row: list) -> list:
    # Text as string cells: a name like "=HYPERLINK(…)" is never a formula Excel evaluates.
    return [text_cell(sheet, value) if isinstance(value, str) else value for value in row]


def _money(sheet, fen: int) -> WriteOnlyCell:
    cell = WriteOnlyCell(sheet, value=facts.yuan_number(fen))
    cell.number_format = MONEY_FORMAT
    return cell


def _bold(sheet, value) -> WriteOnlyCell:
    cell = text_cell(sheet, value) if isinstance(value, str) else WriteOnlyCell(sheet, value=value)
    cell.font = Font(bold=True)
    return cell


def _head_rows(sheet, statement: Statement) -> list[list]:
    head = facts.summary(statement)
    digest, approved = printed_hash(statement)
    status = head["status_label"]
    label = facts.bilingual
    rows = [
        [_bold(sheet, facts.bilingual(facts.TITLE))],
        [label(("服务商", "Provider")), head["provider_name"]],
        [label(("统一社会信用代码", "Credit code")), head["credit_code"]],
        [label(("结算月份", "Month")), head["month"]],
        [label(("结算单号", "Statement no.")), head["number"]],
        [label(("序号", "Seq")), head["seq"]],
        [label(("状态", "Status")), f"{status[0]} {status[1]}"],
        [label(("收款户名", "Payee")), head["payee_account_name"]],
        [label(("开户银行", "Bank")), head["payee_bank_name"]],
        [label(("银行账号", "Account")), head["payee_account_masked"]],
        [label(("明细笔数", "Lines")), head["line_count"]],
        [label(("应付补贴", "Subsidy owed")), _money(sheet, head["subsidy_fen"])],
        [
            label(("代收银行卡自付", "Card co-payments collected on the provider's behalf")),
            _money(sheet, head["card_copay_fen"]),
        ],
        [label(("冲抵追回款", "Clawback netted")), _money(sheet, head["clawback_fen"])],
        [_bold(sheet, label(("应支付金额", "To be paid"))), _money(sheet, head["payable_fen"])],
        [
            label(("支付日期", "Paid on")),
            facts.local_time_text(head["paid_at"], "%Y-%m-%d") if head["paid_at"] else "",
        ],
        [
            label(("明细哈希", "Hash of the lines"))
            + ("" if approved else " (尚未审批 not approved yet)"),
            digest,
        ],
        [label(("核验网址", "Verification page")), facts.verify_url(statement)],
    ]
    for step in head["trail"]:
        rows.append(
            [
                label(("审批记录", "Trail")) + f": {label(step.what)}",
                step.who,
                facts.local_time_text(step.when),
                step.note or "",
            ]
        )
    return rows


def _line(sheet, row: facts.LineRow) -> list:
    return [
        row.redemption_id,
        to_local(row.checked_in_at).date(),
        row.elder,
        row.service,
        row.check_in_text,
        row.check_out_text,
        row.distance_m,
        _money(sheet, row.price_fen),
        _money(sheet, row.insurance_fen),
        _money(sheet, row.subsidy_fen),
        _money(sheet, row.copay_fen),
        row.method_text,
    ]


def statement_xlsx(statement: Statement):
    """The workbook's bytes, in pieces (for a streamed response; ``b"".join`` for all)."""
    from openpyxl.utils import get_column_letter

    workbook = Workbook(write_only=True)
    sheet = workbook.create_sheet(f"{statement.month:%Y-%m}")
    for index, width in enumerate(WIDTHS, 1):
        sheet.column_dimensions[get_column_letter(index)].width = width
    for row in _head_rows(sheet, statement):
        sheet.append(_safe(sheet, row))
    sheet.append([])
    sheet.append([_bold(sheet, facts.bilingual(pair)) for pair in facts.LINE_HEADERS])
    for line in facts.line_rows(statement):
        sheet.append(_safe(sheet, _line(sheet, line)))
    yield from workbook_chunks(workbook)
