"""What the journal's memos and references say, as codes rendered in the reader's language.

Every entry the platform writes by itself stores a message code and its numbers
(``memo("ledger.hold", redemption=5)``, see ``eldercare.stored_text``); the pool page says the
words in its reader's language. Memos people type (a top-up's funding document, an
allocation's note) are stored as typed. Entries are never rewritten (the journal is
append-only): older entries keep their English free text, shown as it is, except the one
sentence a migration wrote, mapped below.
"""

from __future__ import annotations

from flask_babel import lazy_gettext as _l

from eldercare import stored_text

MEMO_LENGTH = 200  # journal_entries.memo

_MEMOS = {
    "ledger.issue_one": _l("voucher %(month)s resident %(resident)s"),
    "ledger.issue_batch": _l("vouchers %(month)s district %(district)s: %(count)s"),
    "ledger.expire_batch": _l("expiry %(month)s district %(district)s: %(count)s vouchers"),
    "ledger.revoke": _l("revoked (%(reason)s) voucher %(voucher)s"),
    "ledger.hold": _l("hold for redemption %(redemption)s"),
    "ledger.capture": _l("redemption %(redemption)s"),
    "ledger.release": _l("release redemption %(redemption)s: %(reason)s"),
    "ledger.reverse": _l("reverse redemption %(redemption)s"),
    "ledger.clawback": _l("clawback of redemption %(redemption)s"),
    "ledger.settle": _l("statement %(statement)s approved (%(month)s, provider %(provider)s)"),
    "ledger.statement_paid": _l("statement %(statement)s paid by the bank"),
    "ledger.fee_refund_paid": _l("fee refund %(refund)s paid by the bank"),
    "ledger.fee_refund_batch": _l("fee refund %(refund)s in batch %(batch)s"),
    "ledger.allocation": _l("allocation %(district)s"),
    "ledger.copay_backfill": _l("card co-payments captured before settlement"),
}
# Why a voucher was revoked (vouchers.issuance.monthly.REVOKE_REASONS), inside its memo.
_REVOKE_REASONS = {
    "death": _l("Death"),
    "moved_out": _l("Moved out of the city"),
    "exclusion": _l("Exclusion started"),
    "assessment_below_threshold": _l("assessment below the eligible levels"),
    "bureau_decision": _l("bureau decision"),
}
# The journal's references (cause_type): what kind of row caused the entry.
CAUSE_LABELS = {
    "vouchers": _l("Voucher"),
    "redemptions": _l("Redemption"),
    "statements": _l("Statement"),
    "fee_refunds": _l("fee refund"),
    "issuance": _l("issuance run"),
    "expiry": _l("expiry run"),
    "migration": _l("data migration"),
}

for _code, _text in _MEMOS.items():
    stored_text.message(_code, _text)
for _reason, _text in _REVOKE_REASONS.items():
    stored_text.message(f"revoke.{_reason}", _text)
stored_text.legacy(
    "card co-payments captured before settlement (migration 0017)", "ledger.copay_backfill"
)


def memo(code: str, **params) -> str:
    """The stored memo of ``code`` (one of ``_MEMOS``), fitted to the column."""
    return stored_text.encode(code, limit=MEMO_LENGTH, **params)


def revoke_reason(reason: str) -> str:
    """A revocation's reason inside its memo: its words when known, else as it is."""
    if reason in _REVOKE_REASONS:
        return stored_text.nested(stored_text.encode(f"revoke.{reason}"))
    return reason


def reference(cause_type: str | None, cause_id: str | None) -> str:
    """The journal's "cause" column in the reader's language: "核销 5", "voucher 12"."""
    if not cause_type:
        return "—"
    label = CAUSE_LABELS.get(cause_type)
    return f"{label} {cause_id}" if label is not None else f"{cause_type} {cause_id}"
