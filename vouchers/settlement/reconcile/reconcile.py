"""Reconciliation of a month: the pool identity in total and per district with the
sub-ledgers (``pool``), the card gateway (``gateway``), the bank and the approved
statements (``bank``). One run is stored (``ReconciliationRun.findings``, what the page
shows) and every mismatch goes to the exception queue (``exceptions.raise_exception``): the
same finding found again while open is the same row; found again after it was resolved, a
new one.

The pool identity and the ledger are the books as they stand now, not one month's: a
finding there (no ``month`` on its queue row) makes every month's reconciliation red until
it is resolved. The gateway, the bank and the statements are the month's.

Run by ``flask reconcile``, the daily job ``settlement-reconcile`` (last month and this
month) and the reconciliation page's button. Set-based: aggregate queries whatever the size
of the month; only the statements' hashes read their lines, streamed.
"""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from eldercare.accounts import User
from eldercare.db import db
from eldercare.scheduler import JobFailed, ScheduledJob
from eldercare.timeutil import local_today, now_utc
from vouchers.settlement.exceptions import KIND_LABELS, raise_exception
from vouchers.settlement.models import ReconciliationRun, SettlementException
from vouchers.settlement.reconcile import bank as recon_bank
from vouchers.settlement.reconcile import gateway as recon_gateway
from vouchers.settlement.reconcile import pool as recon_pool

SOURCE = "reconciliation"

KIND_LABELS.update(
    {
        "identity.total": _l("The pool identity does not hold"),
        "identity.district": _l("A district's identity does not hold"),
        "ledger.unbalanced": _l("A journal entry does not sum to zero"),
        "ledger.drift": _l("An account's balance differs from its entries"),
        "ledger.negative": _l("An account is below zero that may not be"),
        "ledger.subledger": _l("An account differs from the rows it stands for"),
        "ledger.closed_voucher": _l("A closed voucher still holds a balance"),
        "ledger.capture": _l("A redemption was not captured exactly once"),
        "gateway.missing_intent": _l("A card payment is not at the gateway"),
        "gateway.amount": _l("A card payment differs at the gateway"),
        "gateway.refund_unrecorded": _l("The gateway refunded a payment the platform has as paid"),
        "gateway.missing_refund": _l("A refund is not at the gateway"),
        "gateway.refund_amount": _l("A refund differs at the gateway"),
        "gateway.unknown_intent": _l("The gateway holds a payment the platform does not know"),
        "gateway.unapplied_intent": _l("The gateway took a payment no redemption stands on"),
        "gateway.unknown_refund": _l("The gateway holds a refund the platform does not know"),
        "bank.paid_not_booked": _l("The bank paid a statement the books have as unpaid"),
        "bank.paid_without_transfer": _l("A statement is marked paid without a paid transfer"),
        "bank.paid_twice": _l("A statement was paid more than once"),
        "bank.amount": _l("A statement was paid another amount than it owes"),
        "bank.paid_without_import": _l("A transfer is marked paid without a bank result"),
        "bank.refund_not_marked_paid": _l("The bank paid a fee refund not marked paid"),
        "statement.hash": _l("An approved statement no longer hashes to what was approved"),
        "statement.totals": _l("An approved statement's totals differ from its lines"),
        "statement.entries": _l("An approved statement's entries are missing or doubled"),
    }
)


def _ledger_findings(check: dict) -> list[dict]:
    """``verify_ledger``'s findings, one per entry or account, so each is resolved alone."""
    out = []

    def add(kind, key, evidence):
        out.append({"kind": kind, "fingerprint": f"{kind}:{key}", "evidence": evidence})

    for entry in check["unbalanced_entries"]:
        add("ledger.unbalanced", entry, {"entry": entry})
    for code in check["drifted_accounts"]:
        add("ledger.drift", code, {"account": code})
    for code in check["negative_accounts"]:
        add("ledger.negative", code, {"account": code})
    for m in check["subledger_mismatches"]:
        add("ledger.subledger", m["account"], m)
    for voucher in check["closed_vouchers_with_balance"]:
        add("ledger.closed_voucher", voucher, {"voucher": voucher})
    for redemption in check["capture_mismatches"]:
        add("ledger.capture", redemption, {"redemption": redemption})
    return out


def reconcile_month(month: date, *, actor: User | None = None) -> ReconciliationRun:
    """Reconcile ``month`` (its first day) now; the run and the queue rows are written in the
    caller's unit of work (flushed, not committed)."""
    month = month.replace(day=1)
    started = now_utc()
    total = recon_pool.total_identity()
    districts = recon_pool.district_identity()
    ledger_check = recon_pool.ledger_check()
    subledgers = recon_pool.subledger_mismatches()
    gateway, gateway_findings = recon_gateway.gateway_check(month)
    bank = recon_bank.bank_findings(month)
    statements = recon_bank.statement_findings(month)

    books = []  # the books as they stand: no month on their queue rows
    if not total["ok"]:
        evidence = {k: total[k] for k in ("funded", "right", "difference", "terms")}
        evidence |= {k: total[k] for k in ("clawback_pair", "copay_group", "other_accounts")}
        books.append(
            {"kind": "identity.total", "fingerprint": "identity.total", "evidence": evidence}
        )
    for row in districts:
        if not row["ok"]:
            books.append(
                {
                    "kind": "identity.district",
                    "fingerprint": f"identity.district:{row['code']}",
                    "evidence": row,
                    "district_id": row["district_id"],
                }
            )
    books += _ledger_findings(ledger_check)
    for m in subledgers:
        books.append(
            {
                "kind": "ledger.subledger",
                "fingerprint": f"ledger.subledger:{m['account']}",
                "evidence": m,
            }
        )
    monthly = gateway_findings + bank + statements

    mismatches = []
    for finding, of_month in [(f, None) for f in books] + [(f, month) for f in monthly]:
        row = raise_exception(
            source=SOURCE,
            kind=finding["kind"],
            fingerprint=finding["fingerprint"],
            evidence=finding["evidence"],
            month=of_month,
            district_id=finding.get("district_id"),
        )
        mismatches.append(
            finding | {"exception_id": row.id, "check": finding["kind"].split(".")[0]}
        )

    ok = not mismatches and gateway["status"] in ("ok", "not_checked")
    run = ReconciliationRun(
        month=month,
        started_at=started,
        finished_at=now_utc(),
        ok=ok,
        findings={
            "identity": total,
            "districts": districts,
            "ledger": ledger_check,
            "subledgers": subledgers,
            "gateway": gateway,
            "bank": {"ok": not bank},
            "statements": {"ok": not statements},
            "mismatches": mismatches,
        },
        requested_by_user_id=actor.id if actor is not None else None,
    )
    db.session.add(run)
    db.session.flush()
    return run


def last_run(month: date) -> ReconciliationRun | None:
    return db.session.scalar(
        sa.select(ReconciliationRun)
        .where(ReconciliationRun.month == month.replace(day=1))
        .order_by(ReconciliationRun.finished_at.desc(), ReconciliationRun.id.desc())
        .limit(1)
    )


def of_month(month: date):
    """The queue rows that count for a month: the month's own and the books' (no month)."""
    return sa.or_(SettlementException.month == month, SettlementException.month.is_(None))


def open_exceptions(month: date, district_id: int | None = None) -> int:
    query = sa.select(sa.func.count()).where(
        SettlementException.status == "open", of_month(month.replace(day=1))
    )
    if district_id is not None:
        query = query.where(SettlementException.district_id == district_id)
    return int(db.session.scalar(query))


def previous_month(today: date | None = None) -> date:
    first = (today or local_today()).replace(day=1)
    return date(first.year - (first.month == 1), (first.month - 2) % 12 + 1, 1)


def reconcile_job() -> dict:
    """The daily job: last month and this month (a missed day is made up by the next; each
    run stands alone). Anything red fails the run too, so ``flask scheduler list`` shows it;
    the runs and the queue rows are kept."""
    this = local_today().replace(day=1)
    result = {}
    for month in (previous_month(), this):
        run = reconcile_month(month)
        result[f"{month:%Y-%m}"] = {
            "ok": run.ok,
            "run": run.id,
            "open_exceptions": open_exceptions(month),
        }
    if not all(r["ok"] and not r["open_exceptions"] for r in result.values()):
        db.session.commit()
        raise JobFailed("reconciliation found mismatches; see the reconciliation page", result)
    return result


RECONCILE_JOB = ScheduledJob(
    id="settlement-reconcile",
    func=reconcile_job,
    trigger="interval",
    trigger_args={"hours": 24},
    description="Reconcile last month and this month (pool identity, gateway, bank, statements)",
    run_at_start=True,
)
