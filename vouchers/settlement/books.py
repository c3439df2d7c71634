"""The ledger entries settlement posts (see the BRIEF's books): approval (a statement moves
from ``redeemed:unsettled`` to what the provider is owed, net of its clawbacks) and clawback
(a redemption reversed after its statement was approved: the provider owes it back). The
payment entries (the bank confirmed a transfer) are the bank part's.

Per-provider accounts are opened on first use: ``provider:<id>:payable`` (subsidy owed),
``provider:<id>:copay`` (card co-payments owed), ``provider:<id>:receivable`` (clawbacks the
provider owes)."""

from __future__ import annotations

from vouchers.pool import ledger, memos
from vouchers.settlement.models import Statement


def payable_code(provider_id: int) -> str:
    return f"provider:{provider_id}:payable"


def copay_code(provider_id: int) -> str:
    return f"provider:{provider_id}:copay"


def receivable_code(provider_id: int) -> str:
    return f"provider:{provider_id}:receivable"


def open_provider_accounts(provider_id: int) -> None:
    """The provider's three accounts, opened if new (names in both languages' form)."""
    ledger.account(payable_code(provider_id), create_name=f"Provider {provider_id}: subsidy owed")
    ledger.account(copay_code(provider_id), create_name=f"Provider {provider_id}: co-payments owed")
    ledger.account(
        receivable_code(provider_id), create_name=f"Provider {provider_id}: clawbacks owed by it"
    )


def receivable_fen(provider_id: int) -> int:
    """What the provider owes back now, locked to the end of the transaction (its one row),
    so two approvals for one provider cannot net the same clawback twice."""
    open_provider_accounts(provider_id)
    return ledger.locked_balance(receivable_code(provider_id))


def post_settle(statement: Statement, *, actor_id: int | None):
    """Approval (books §3): S = subsidy, N = clawback netted, Cc = card co-payments."""
    p, s, n, cc = (
        statement.provider_id,
        statement.subsidy_fen,
        statement.clawback_fen,
        statement.card_copay_fen,
    )
    open_provider_accounts(p)
    lines = [("redeemed:unsettled", -s), (payable_code(p), s - n)]
    if n:
        lines += [(receivable_code(p), -n), ("returns:clawback", n), ("pool:available", n)]
    if cc:
        lines += [("gateway:clearing", -cc), (copay_code(p), cc)]
    if not any(amount for _, amount in lines):
        return None  # an empty statement moves nothing
    return ledger.post(
        "settle",
        memos.memo(
            "ledger.settle",
            statement=statement.id,
            month=f"{statement.month:%Y-%m}",
            provider=p,
        ),
        lines,
        cause=("statements", statement.id),
        actor_id=actor_id,
    )


def post_clawback(redemption, *, provider_id: int, actor_id: int | None):
    """A settled redemption reversed (books §6): the provider owes its subsidy back."""
    open_provider_accounts(provider_id)
    amount = redemption.subsidy_fen
    return ledger.post(
        "reverse",
        memos.memo("ledger.clawback", redemption=redemption.id),
        [(receivable_code(provider_id), amount), ("returns:clawback", -amount)],
        cause=("redemptions", redemption.id),
        actor_id=actor_id,
    )
