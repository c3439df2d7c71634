"""Importing the bank's result file for a batch: each line paid or failed.

The whole file is refused, with the reason and nothing changed, when it is not a result
file (columns, trailer: ``result_files``), when it belongs to another batch, or when the
same file (its SHA-256) was imported before. Otherwise each line is applied on its own:

- paid: the transfer becomes 'paid'; its statement becomes 'paid' (``paid_at``) and the
  books post "pay" (``provider:p:payable -(S-N)``, ``settled +(S-N)``,
  ``provider:p:copay -Cc``, ``copay:paid_out +Cc``), or its fee refund becomes 'paid' and
  the books post "fee_refund" (``fee_refunds:payable -F``, ``fee_refunds:paid +F``);
- failed: the transfer becomes 'failed' with the bank's reason and nothing moves; the
  statement (still approved and payable) or the refund goes into the next batch;
- an unknown reference, a reference twice in the file (none of its rows is applied), an
  amount or account that differs from the line, or a line an earlier file decided the
  other way: the exception queue, with the evidence; the other lines still apply.
- "paid" for a transfer an earlier file marked failed (a late or corrected result): the
  statement or refund was by then put into a later batch, so the bank may pay it twice.
  Queued as ``bank.paid_after_failure`` naming every newer transfer of the same statement
  or refund (reference, batch, status), and the statement or refund is HELD while that
  finding is open: it goes into no new batch (``bank_files.waiting_*``), and a "paid"
  result for its newer transfer still 'sent' is queued (same kind) instead of being paid
  in the books. A "failed" result for it applies (nothing moves). The bureau asks the bank
  which transfer paid, recovers any second payment from the payee, and resolves the
  finding (audited); the hold then lifts and later results apply as usual.

Idempotent and safe when two imports run at once: a transfer changes only by a conditional
UPDATE from 'sent' (``… WHERE status = 'sent' RETURNING id``), and only the transaction
whose UPDATE changed it posts to the books. A line found already decided the same way is
counted as "already", not applied again.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from assessment.models import FeeRefund
from eldercare import audit
from eldercare.accounts import User
from eldercare.db import db
from eldercare.errors import Conflict, InvalidInput
from eldercare.timeutil import format_local, now_utc
from vouchers.pool import ledger, memos
from vouchers.settlement.bank import result_files
from vouchers.settlement.bank.bank_files import require_city_bureau
from vouchers.settlement.exceptions import hold_fingerprint, raise_exception
from vouchers.settlement.models import (
    BankBatch,
    BankResultImport,
    BankTransfer,
    SettlementException,
    Statement,
)

_LINE_REF = re.compile(r"^(EC\d{11})-\d+$")


@dataclass
class ImportOutcome:
    record: BankResultImport
    paid: list[str] = field(default_factory=list)  # line references
    failed: list[tuple[str, str]] = field(default_factory=list)  # (reference, bank's reason)
    already: list[str] = field(default_factory=list)  # decided the same way before
    exceptions: list[dict] = field(default_factory=list)  # {"kind", "reference", "id"}


def _already_imported(earlier: BankResultImport) -> Conflict:
    return Conflict(
        _l(
            "This file was already imported on %(when)s; nothing was changed.",
            when=format_local(earlier.imported_at),
        ),
        details={"file": "already_imported"},
    )


def _check_batch(batch: BankBatch, lines: list[result_files.ResultLine]) -> None:
    """References of another existing batch mean the wrong file was chosen."""
    others = set()
    for line in lines:
        match = _LINE_REF.match(line.reference)
        if match and match.group(1) != batch.reference:
            others.add(match.group(1))
    if not others:
        return
    known = sorted(
        db.session.scalars(sa.select(BankBatch.reference).where(BankBatch.reference.in_(others)))
    )
    if known:
        message = _l(
            "This file is the result of batch %(other)s, not of batch %(batch)s; nothing was "
            "changed.",
            other=", ".join(known),
            batch=batch.reference,
        )
        raise InvalidInput(message, details={"file": message})


def import_result(
    batch: BankBatch, file_bytes: bytes, file_name: str, *, actor: User
) -> ImportOutcome:
    """Apply the bank's result file to ``batch`` (flushed, not committed)."""
    require_city_bureau(actor)
    if "\x00" in (file_name or ""):  # the database refuses NUL in text
        message = _l("The file's name holds a NUL character; rename the file and try again.")
        raise InvalidInput(message, details={"file": message})
    digest = hashlib.sha256(file_bytes or b"").hexdigest()
    earlier = db.session.scalar(
        sa.select(BankResultImport).where(BankResultImport.file_sha256 == digest)
    )
    if earlier is not None:
        raise _already_imported(earlier)
    lines, _count, _total = result_files.parse(result_files.read_rows(file_bytes))
    _check_batch(batch, lines)
    now = now_utc()
    record = BankResultImport(
        batch_id=batch.id,
        file_sha256=digest,
        file_name=(file_name or "result")[:200],
        imported_by_user_id=actor.id,
        imported_at=now,
    )
    try:
        with db.session.begin_nested():
            db.session.add(record)
            db.session.flush()  # a concurrent import of the same file waits here, then fails
    except sa.exc.IntegrityError:
        earlier = db.session.scalar(
            sa.select(BankResultImport).where(BankResultImport.file_sha256 == digest)
        )
        raise _already_imported(earlier) from None
    outcome = ImportOutcome(record)
    _apply(batch, record, lines, outcome, now, actor)
    record.paid_count = len(outcome.paid)
    record.failed_count = len(outcome.failed)
    record.exception_count = len(outcome.exceptions)
    audit.record(
        "settlement.bank_result_import",
        record,
        after={
            "batch": batch.reference,
            "file_name": record.file_name,
            "sha256": digest,
            "paid": len(outcome.paid),
            "failed": len(outcome.failed),
            "already": len(outcome.already),
            "exceptions": len(outcome.exceptions),
        },
        actor=actor,
    )
    db.session.flush()
    return outcome


def _transfers(batch: BankBatch) -> dict[str, sa.Row]:
    return {
        row.reference: row
        for row in db.session.execute(
            sa.select(
                BankTransfer.id,
                BankTransfer.reference,
                BankTransfer.kind,
                BankTransfer.statement_id,
                BankTransfer.fee_refund_id,
                BankTransfer.payee_account_number,
                BankTransfer.amount_fen,
                BankTransfer.status,
                BankTransfer.bank_reason,
            ).where(BankTransfer.batch_id == batch.id)
        )
    }


def _queue(outcome, batch, record, kind, line, extra: dict | None = None) -> None:
    evidence = {
        "batch": batch.reference,
        "file_name": record.file_name,
        "file_sha256": record.file_sha256,
        "row": line.row,
        "reference": line.reference,
        "account_number": line.account_number,
        "amount_fen": line.amount_fen,
        "status": "paid" if line.paid else "failed",
        "reason": line.reason,
    } | (extra or {})
    found = raise_exception(
        source="bank_import",
        kind=kind,
        fingerprint=f"bank:{batch.reference}:{kind}:{line.reference}",
        evidence=evidence,
    )
    outcome.exceptions.append({"kind": kind, "reference": line.reference, "id": found.id})


def _held(transfers) -> dict[int, int]:
    """transfer id -> the open hold finding's id, for transfers whose statement or refund
    is held."""
    keys = {hold_fingerprint(t.kind, t.statement_id or t.fee_refund_id): t.id for t in transfers}
    if not keys:
        return {}
    found = db.session.execute(
        sa.select(SettlementException.fingerprint, SettlementException.id).where(
            SettlementException.fingerprint.in_(list(keys)),
            SettlementException.status == "open",
        )
    ).all()
    return {keys[fingerprint]: exc_id for fingerprint, exc_id in found}


def _apply(batch, record, lines, outcome: ImportOutcome, now, actor) -> None:
    transfers = _transfers(batch)
    held = _held(transfers.values())
    seen = Counter(line.reference for line in lines)
    queued_twice = set()
    to_pay, to_fail = {}, {}  # transfer id -> line
    for line in lines:
        sent = transfers.get(line.reference)
        if seen[line.reference] > 1:
            if line.reference not in queued_twice:
                queued_twice.add(line.reference)
                rows = [x.row for x in lines if x.reference == line.reference]
                _queue(outcome, batch, record, "bank.duplicate_line", line, {"rows": rows})
        elif sent is None:
            _queue(outcome, batch, record, "bank.unknown_reference", line)
        elif line.amount_fen != sent.amount_fen:
            _queue(outcome, batch, record, "bank.amount_mismatch", line,
                   {"sent_amount_fen": sent.amount_fen})  # fmt: skip
        elif line.account_number != sent.payee_account_number:
            _queue(outcome, batch, record, "bank.account_mismatch", line,
                   {"sent_account_number": sent.payee_account_number})  # fmt: skip
        elif sent.status != "sent":
            _already_decided(outcome, batch, record, line, sent, sent.status, sent.bank_reason)
        elif line.paid and sent.id in held:
            _queue(outcome, batch, record, "bank.paid_after_failure", line,
                   {"held_by_exception": held[sent.id], "transfer": sent.id,
                    "statement": sent.statement_id, "fee_refund": sent.fee_refund_id,
                    "note": "held: an earlier transfer of the same payment was reported "
                            "paid after it had failed"})  # fmt: skip
        else:
            (to_pay if line.paid else to_fail)[sent.id] = line
    paid_ids = _mark(to_pay, "paid", record, now)
    failed_ids = _mark(to_fail, "failed", record, now)
    # Lines another import decided between our read and our UPDATE: compare with theirs.
    lost = [tid for tid in to_pay if tid not in paid_ids] + [
        tid for tid in to_fail if tid not in failed_ids
    ]
    if lost:
        now_status = dict(
            db.session.execute(
                sa.select(BankTransfer.id, BankTransfer.status).where(BankTransfer.id.in_(lost))
            ).all()
        )
        for tid in lost:
            line = to_pay.get(tid) or to_fail[tid]
            sent = next(t for t in transfers.values() if t.id == tid)
            _already_decided(outcome, batch, record, line, sent, now_status[tid], None)
    by_id = {row.id: row for row in transfers.values()}
    _settle_paid([by_id[tid] for tid in paid_ids], now, actor)
    outcome.paid = [by_id[tid].reference for tid in sorted(paid_ids)]
    outcome.failed = [(by_id[tid].reference, to_fail[tid].reason) for tid in sorted(failed_ids)]
    audit.record_many(
        {
            "action": f"settlement.bank_transfer_{status}",
            "object_type": "bank_transfers",
            "object_id": tid,
            "before": {"status": "sent"},
            "after": {
                "status": status,
                "reference": by_id[tid].reference,
                "amount_fen": by_id[tid].amount_fen,
                "statement_id": by_id[tid].statement_id,
                "fee_refund_id": by_id[tid].fee_refund_id,
                "reason": line.reason or None,
                "import_id": record.id,
            },
            "actor": actor,
        }
        for status, ids, source in (("paid", paid_ids, to_pay), ("failed", failed_ids, to_fail))
        for tid in sorted(ids)
        for line in (source[tid],)
    )


def _already_decided(outcome, batch, record, line, sent, status: str, reason) -> None:
    if status == ("paid" if line.paid else "failed"):
        outcome.already.append(line.reference)
    elif line.paid and status == "failed":
        _paid_after_failure(outcome, batch, record, line, sent, reason)
    else:
        _queue(outcome, batch, record, "bank.conflicting_result", line,
               {"decided_status": status, "decided_reason": reason})  # fmt: skip


def _paid_after_failure(outcome, batch, record, line, sent, reason) -> None:
    """The bank now says paid a transfer it said failed: find the newer transfers of the same
    statement or refund, and hold it (see the module's note)."""
    of_same = (
        BankTransfer.statement_id == sent.statement_id
        if sent.kind == "statement"
        else BankTransfer.fee_refund_id == sent.fee_refund_id
    )
    newer = [
        {"transfer": tid, "reference": ref, "batch": batch_ref, "status": status}
        for tid, ref, batch_ref, status in db.session.execute(
            sa.select(
                BankTransfer.id, BankTransfer.reference, BankBatch.reference, BankTransfer.status
            )  # fmt: skip
            .join(BankBatch, BankBatch.id == BankTransfer.batch_id)
            .where(of_same, BankTransfer.id > sent.id)
            .order_by(BankTransfer.id)
        )
    ]
    object_id = sent.statement_id or sent.fee_refund_id
    evidence = {
        "batch": batch.reference,
        "file_name": record.file_name,
        "file_sha256": record.file_sha256,
        "row": line.row,
        "reference": line.reference,
        "amount_fen": line.amount_fen,
        "status": "paid",
        "decided_status": "failed",
        "decided_reason": reason,
        "kind": sent.kind,
        "statement": sent.statement_id,
        "fee_refund": sent.fee_refund_id,
        "newer_transfers": newer,
        "held": True,
    }
    found = raise_exception(
        source="bank_import",
        kind="bank.paid_after_failure",
        fingerprint=hold_fingerprint(sent.kind, object_id),
        evidence=evidence,
    )
    outcome.exceptions.append(
        {"kind": "bank.paid_after_failure", "reference": line.reference, "id": found.id}
    )


def _mark(chosen: dict, status: str, record, now) -> set[int]:
    """sent -> status for the chosen transfers, one UPDATE; the ids it changed."""
    if not chosen:
        return set()
    values = {"status": status, "decided_at": now, "result_import_id": record.id}
    if status == "failed":
        reasons = {tid: (line.reason or "—")[:200] for tid, line in chosen.items()}
        values["bank_reason"] = sa.case(reasons, value=BankTransfer.id)
    return set(
        db.session.scalars(
            sa.update(BankTransfer)
            .where(BankTransfer.id.in_(list(chosen)), BankTransfer.status == "sent")
            .values(**values)
            .returning(BankTransfer.id)
            .execution_options(synchronize_session=False)
        )
    )


def _settle_paid(paid: list, now, actor) -> None:
    """What the bank paid leaves the books' payables: statements (BRIEF books §4) and fee
    refunds (§5). Only lines this import moved from 'sent' get here, so each posts once."""
    statement_ids = [t.statement_id for t in paid if t.kind == "statement"]
    refund_ids = [t.fee_refund_id for t in paid if t.kind == "fee_refund"]
    if statement_ids:
        moved = db.session.execute(
            sa.update(Statement)
            .where(Statement.id.in_(statement_ids), Statement.status == "approved")
            .values(status="paid", paid_at=now)
            .returning(
                Statement.id,
                Statement.provider_id,
                Statement.subsidy_fen,
                Statement.clawback_fen,
                Statement.card_copay_fen,
            )
            .execution_options(synchronize_session=False)
        ).all()
        for sid, provider_id, subsidy, clawback, copay in sorted(moved):
            ledger.post(
                "pay",
                memos.memo("ledger.statement_paid", statement=sid),
                [
                    (f"provider:{provider_id}:payable", -(subsidy - clawback)),
                    ("settled", subsidy - clawback),
                    (f"provider:{provider_id}:copay", -copay),
                    ("copay:paid_out", copay),
                ],
                cause=("statements", sid),
                actor_id=actor.id,
            )
    if refund_ids:
        moved = db.session.execute(
            sa.update(FeeRefund)
            .where(FeeRefund.id.in_(refund_ids), FeeRefund.status == "owed")
            .values(status="paid", paid_at=now)
            .returning(FeeRefund.id, FeeRefund.amount_fen)
            .execution_options(synchronize_session=False)
        ).all()
        for refund_id, fen in sorted(moved):
            ledger.post(
                "fee_refund",
                memos.memo("ledger.fee_refund_paid", refund=refund_id),
                [("fee_refunds:payable", -fen), ("fee_refunds:paid", fen)],
                cause=("fee_refunds", refund_id),
                actor_id=actor.id,
            )
