"""The exception queue: what a bank result or a reconciliation found that does not match,
with its evidence, until a bureau officer resolves it in writing (audited). A finding found
again while still open is the same row (its fingerprint), so a rerun never piles up copies.
"""

from __future__ import annotations

from datetime import date

import sqlalchemy as sa
from flask_babel import lazy_gettext as _l

from eldercare import audit
from eldercare.accounts import User
from eldercare.db import db
from eldercare.errors import Conflict, InvalidInput
from eldercare.timeutil import now_utc
from vouchers.settlement.models import SettlementException

# What each kind of finding is called, in the reader's language. Add a kind here with the
# code that raises it.
KIND_LABELS = {
    # bank (vouchers.settlement.bank.bank_results): a result line that was not applied
    "bank.unknown_reference": _l("Bank result: a reference that is not a line of the batch"),
    "bank.duplicate_line": _l("Bank result: the same line twice in the file"),
    "bank.amount_mismatch": _l("Bank result: the amount differs from the line sent"),
    "bank.account_mismatch": _l("Bank result: the payee account differs from the line sent"),
    "bank.conflicting_result": _l("Bank result: a line an earlier file decided the other way"),
    "bank.paid_after_failure": _l(
        "Bank result: paid after it had failed and was sent again — possibly paid twice"
    ),
    "bank.transfer_payee": _l("A bank transfer's payee or amount differs from what was approved"),
}


def kind_label(kind: str) -> str:
    return str(KIND_LABELS.get(kind, kind))


def raise_exception(
    *,
    source: str,
    kind: str,
    fingerprint: str,
    evidence: dict,
    month: date | None = None,
    district_id: int | None = None,
) -> SettlementException:
    """Queue a finding, or return the open one with the same fingerprint (its evidence
    refreshed). In the caller's transaction."""
    open_one = sa.select(SettlementException).where(
        SettlementException.fingerprint == fingerprint, SettlementException.status == "open"
    )
    found = db.session.scalar(open_one)
    if found is not None:
        found.evidence = evidence
        return found
    try:
        with db.session.begin_nested():
            found = SettlementException(
                source=source,
                kind=kind,
                fingerprint=fingerprint[:200],
                evidence=evidence,
                month=month,
                district_id=district_id,
            )
            db.session.add(found)
            db.session.flush()
    except sa.exc.IntegrityError:  # queued at the same moment by another run: use theirs
        found = db.session.scalar(open_one)
    return found


RESOLUTION_MESSAGE = _l("Write what was done about it (at least a few words).")


def resolve(exception: SettlementException, *, resolution: str, actor: User) -> None:
    """Close a finding with a written resolution; audited. Resolving one already resolved
    is refused (somebody else did it first)."""
    text = resolution.strip() if isinstance(resolution, str) else ""
    if len(text) < 5:
        raise InvalidInput(details={"resolution": RESOLUTION_MESSAGE})
    stamp = now_utc()
    done = db.session.execute(
        sa.update(SettlementException)
        .where(SettlementException.id == exception.id, SettlementException.status == "open")
        .values(
            status="resolved",
            resolution=text[:4000],
            resolved_by_user_id=actor.id,
            resolved_at=stamp,
        )
        .execution_options(synchronize_session=False)
    ).rowcount
    if done != 1:
        raise Conflict(_l("This finding was already resolved."))
    db.session.refresh(exception)
    audit.record(
        "settlement.exception_resolve",
        exception,
        before={"status": "open"},
        after={"status": "resolved", "kind": exception.kind, "resolution": text[:500]},
        district_id=exception.district_id,
        actor=actor,
    )


def open_count() -> int:
    return int(
        db.session.scalar(sa.select(sa.func.count()).where(SettlementException.status == "open"))
    )


# ------------------------------------------------------------------ holds on a payment
# A late "paid" for a transfer that had failed (bank_results) holds its statement or fee
# refund while the finding is open: no new batch takes it and no "paid" result for a newer
# transfer of it is booked. The open finding IS the hold; resolving it lifts the hold.


def hold_fingerprint(kind: str, object_id: int) -> str:
    """The open finding that holds a statement ('statement') or fee refund ('fee_refund')."""
    return f"bank:paid_after_failure:{kind}:{object_id}"


def held(kind: str, id_column) -> sa.ColumnElement:
    """SQL: the row of ``id_column`` (a statement's or refund's id) is held."""
    fingerprint = sa.literal(f"bank:paid_after_failure:{kind}:") + sa.cast(id_column, sa.String)
    return (
        sa.select(SettlementException.id)
        .where(
            SettlementException.status == "open",
            SettlementException.fingerprint == fingerprint,
        )
        .exists()
    )
