"""What a statement's documents say, in one place: the PDF (``documents``), the XLSX
(``statement_xlsx``) and the verification page (``views_documents``) show the same facts.

- ``summary(statement)``: the head of the document (provider, month, number, status, payee
  with the account number masked, totals, the approval trail) as plain values;
- ``line_rows(statement)``: its lines as plain tuples, streamed from one query
  (``yield_per``), never one ORM object per line, so a statement of any size reads in flat
  memory;
- ``verify_token`` / ``statement_id_from_token`` / ``verify_url``: the public link a
  document's QR opens. The token is the statement id signed with the app's SECRET_KEY, so
  the link cannot be guessed from a statement number, and a forged one is refused.

Documents are bilingual (Chinese first, then English), whatever the reader's language: a
printed statement goes to a provider's accountant and the bureau's auditor alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

import sqlalchemy as sa
from flask import current_app
from itsdangerous import BadSignature, URLSafeSerializer

from eldercare.accounts import User
from eldercare.db import db
from eldercare.residents import Resident, mask_name
from eldercare.timeutil import to_local
from marketplace.models import Provider, Service
from vouchers.models import Redemption
from vouchers.redemption.qr_tokens import public_base_url
from vouchers.settlement.models import Statement, StatementLine

STREAM_ROWS = 2_000  # lines read per round trip
VERIFY_SALT = "settlement.statement-verify"

TITLE = ("养老服务补贴结算单", "Settlement statement")
STATUS_LABELS = {
    "prepared": ("待审批", "Prepared, awaiting approval"),
    "awaiting_second": ("待复核", "Awaiting a second approval"),
    "approved": ("已审批，待支付", "Approved, awaiting payment"),
    "paid": ("已支付", "Paid"),
    "rejected": ("已驳回", "Rejected"),
}
METHOD_LABELS = {
    "cash": ("现金", "cash"),
    "card": ("银行卡", "card"),
    "none": ("无需支付", "none"),
}
# The lines' columns, as the PDF and the XLSX head them.
LINE_HEADERS = (
    ("兑付编号", "Redemption"),
    ("日期", "Date"),
    ("老人", "Elder"),
    ("服务", "Service"),
    ("签到", "Check-in"),
    ("签退", "Check-out"),
    ("距离(米)", "Distance (m)"),
    ("价格", "Price"),
    ("长护险", "Insurance"),
    ("补贴", "Subsidy"),
    ("自付", "Co-payment"),
    ("支付方式", "Method"),
)


def bilingual(pair: tuple[str, str]) -> str:
    return f"{pair[0]} {pair[1]}"


def yuan_text(fen: int) -> str:
    """Fen as yuan with two decimals and thousands separators: 123456 -> 1,234.56."""
    return f"{Decimal(fen) / 100:,.2f}"


def yuan_number(fen: int) -> Decimal:
    """Fen as an exact yuan amount: 1500 -> Decimal('15.00')."""
    return (Decimal(fen) / 100).quantize(Decimal("0.01"))


def mask_account(number: str) -> str:
    """All but the last four digits starred: 6222000011112222 -> ************2222."""
    digits = "".join(number.split())
    if len(digits) <= 4:
        return digits
    return "*" * (len(digits) - 4) + digits[-4:]


def statement_number(statement: Statement) -> str:
    """The number printed on the statement and quoted on the page: month, provider, id and
    sequence (2, 3, ... are the supplementary statements of a month)."""
    return f"{statement.month:%Y%m}-{statement.provider_id:05d}-{statement.id}-{statement.seq}"


def month_text(month: date) -> str:
    return f"{month:%Y-%m}"


# -- the head of the document ----------------------------------------------------------------


@dataclass(frozen=True)
class TrailStep:
    what: tuple[str, str]
    who: str
    when: datetime | None
    note: str | None = None


def _name(user_id: int | None) -> str:
    if user_id is None:
        return ""
    user = db.session.get(User, user_id)
    return user.display_name if user is not None else f"#{user_id}"


def approval_trail(statement: Statement) -> list[TrailStep]:
    """Who did what to the statement, in order."""
    steps = [
        TrailStep(("编制", "Prepared"), _name(statement.prepared_by_user_id), statement.prepared_at)
    ]
    if statement.approved_by_user_id is not None:
        steps.append(
            TrailStep(
                ("审批", "Approved"), _name(statement.approved_by_user_id), statement.approved_at
            )
        )
    if statement.second_approved_by_user_id is not None:
        steps.append(
            TrailStep(
                ("复核", "Second approval"),
                _name(statement.second_approved_by_user_id),
                statement.second_approved_at,
            )
        )
    if statement.rejected_by_user_id is not None:
        steps.append(
            TrailStep(
                ("驳回", "Rejected"),
                _name(statement.rejected_by_user_id),
                statement.rejected_at,
                statement.rejection_reason,
            )
        )
    if statement.paid_at is not None:
        steps.append(TrailStep(("银行支付", "Paid by the bank"), "", statement.paid_at))
    return steps


def local_time_text(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    return to_local(value).strftime(fmt) if value is not None else ""


def summary(statement: Statement) -> dict:
    """The document's head as plain values (money in fen)."""
    provider = db.session.get(Provider, statement.provider_id)
    return {
        "id": statement.id,
        "number": statement_number(statement),
        "seq": statement.seq,
        "month": month_text(statement.month),
        "status": statement.status,
        "status_label": STATUS_LABELS.get(statement.status, (statement.status, statement.status)),
        "provider_name": provider.name,
        "credit_code": provider.credit_code,
        "payee_account_name": statement.payee_account_name,
        "payee_bank_name": statement.payee_bank_name,
        "payee_account_masked": mask_account(statement.payee_account_number),
        "line_count": statement.line_count,
        "subsidy_fen": statement.subsidy_fen,
        "card_copay_fen": statement.card_copay_fen,
        "clawback_fen": statement.clawback_fen,
        "payable_fen": statement.payable_fen,
        "lines_hash": statement.lines_hash,
        "paid_at": statement.paid_at,
        "trail": approval_trail(statement),
    }


# -- the lines, streamed ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LineRow:
    redemption_id: int
    checked_in_at: datetime
    checked_out_at: datetime | None
    distance_m: int | None
    elder: str  # masked
    service: str
    price_fen: int
    insurance_fen: int
    subsidy_fen: int
    copay_fen: int
    method: str

    @property
    def date_text(self) -> str:
        return local_time_text(self.checked_in_at, "%Y-%m-%d")

    @property
    def check_in_text(self) -> str:
        return local_time_text(self.checked_in_at, "%H:%M")

    @property
    def check_out_text(self) -> str:
        return local_time_text(self.checked_out_at, "%H:%M")

    @property
    def method_text(self) -> str:
        return bilingual(METHOD_LABELS.get(self.method, (self.method, self.method)))


def line_rows(statement: Statement):
    """The statement's lines by redemption id, as ``LineRow``s made from plain result rows
    (one query, ``yield_per``; a server-side cursor on PostgreSQL)."""
    query = (
        sa.select(
            StatementLine.redemption_id,
            Redemption.checked_in_at,
            Redemption.checked_out_at,
            Redemption.check_in_distance_m,
            Resident.name,
            Service.title,
            StatementLine.price_fen,
            StatementLine.insurance_fen,
            StatementLine.subsidy_fen,
            StatementLine.copay_fen,
            StatementLine.payment_method,
        )
        .join(Redemption, Redemption.id == StatementLine.redemption_id)
        .join(Resident, Resident.id == Redemption.resident_id)
        .outerjoin(Service, Service.id == Redemption.service_id)
        .where(StatementLine.statement_id == statement.id)
        .order_by(StatementLine.redemption_id)
        .execution_options(yield_per=STREAM_ROWS, stream_results=True)
    )
    result = db.session.execute(query)
    try:
        for row in result:
            yield LineRow(
                redemption_id=row[0],
                checked_in_at=row[1],
                checked_out_at=row[2],
                distance_m=row[3],
                elder=mask_name(row[4] or ""),
                service=row[5] or "",
                price_fen=row[6],
                insurance_fen=row[7],
                subsidy_fen=row[8],
                copay_fen=row[9],
                method=row[10],
            )
    finally:
        result.close()


# -- the verification link -------------------------------------------------------------------


def _serializer() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt=VERIFY_SALT)


def verify_token(statement_id: int) -> str:
    return _serializer().dumps(statement_id)


def statement_id_from_token(token: str) -> int | None:
    """The statement id a token was signed for; None for anything forged or mangled."""
    try:
        value = _serializer().loads(token)
    except BadSignature:
        return None
    except Exception:  # noqa: BLE001  (a token that decodes to garbage is simply not valid)
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def verify_url(statement: Statement) -> str:
    """The absolute link the document's QR encodes: PUBLIC_BASE_URL, else the request's host."""
    from vouchers.settlement.views import bp  # the route is views_documents.verify

    return f"{public_base_url()}{bp.url_prefix}/verify/{verify_token(statement.id)}"
