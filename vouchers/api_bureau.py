"""/api/v1 for the bureau: the subsidy pool as the ledger has it.

A token of a bureau officer's or approver's account ("read", or "vouchers:read"). Staff of
one district see that district's allocation and the city-wide accounts, not the other
districts'. Writing (top-ups, allocations, policy) stays on the bureau's pages, where a
person signs in to decide it.
"""

from __future__ import annotations

import sqlalchemy as sa
from flask import g

from eldercare.api import BEARER, error_responses, for_bureau
from eldercare.db import db
from eldercare.residents import District
from eldercare.timeutil import SHANGHAI
from eldercare.tokens import token_required
from vouchers.api import blp
from vouchers.models import JournalEntry, JournalLine, LedgerAccount, Voucher
from vouchers.pool import ledger, ledger_checks
from vouchers.schemas import VouchersPoolSchema

_DISTRICT_PREFIX = "district:"


def _district_pool(districts: list[District], balances: dict[str, int]) -> list[dict]:
    codes = {ledger.district_account_code(d.code): d for d in districts}
    allocated = dict(
        db.session.execute(
            sa.select(LedgerAccount.code, sa.func.sum(JournalLine.amount_fen))
            .join(JournalLine, JournalLine.account_id == LedgerAccount.id)
            .join(JournalEntry, JournalEntry.id == JournalLine.entry_id)
            .where(LedgerAccount.code.in_(codes), JournalEntry.kind == "allocation")
            .group_by(LedgerAccount.code)
        ).all()
    )
    outstanding = {
        district_id: (total, count)
        for district_id, total, count in db.session.execute(
            sa.select(
                Voucher.district_id,
                sa.func.sum(Voucher.balance_fen + Voucher.held_fen),
                sa.func.count(),
            )
            .where(Voucher.status == "active", Voucher.district_id.in_([d.id for d in districts]))
            .group_by(Voucher.district_id)
        ).all()
    }
    rows = []
    for code, district in codes.items():
        if code not in balances:
            continue  # never given an allocation
        total, count = outstanding.get(district.id, (0, 0))
        rows.append(
            {
                "code": district.code,
                "name_zh": district.name_zh,
                "name_en": district.name_en,
                "allocated_fen": int(allocated.get(code) or 0),
                "available_fen": balances[code],
                "outstanding_fen": int(total or 0),
                "active_vouchers": count,
            }
        )
    return rows


@blp.get("/pool")
@token_required("read", "vouchers:read", any_of=True)
@for_bureau
@blp.doc(security=BEARER)
@blp.response(200, VouchersPoolSchema)
@error_responses(blp, 401, 403)
def pool():
    """The ledger's accounts and balances, each district's allocation (allocated, not yet
    reserved, on active vouchers) and the last reconciliation check (every entry balanced,
    every balance equal to its lines, the voucher and redemption sub-ledgers equal to their
    accounts, closed vouchers empty, each redemption captured once), with when it ran.

    The check is the stored one (hourly, or asked for on the pool page or the command
    line), not run for the request: it reads the whole journal, and a read token should not
    be able to make the server do that at will."""
    user = g.api_user
    districts = sa.select(District).order_by(District.code)
    if user.district_id is not None:
        districts = districts.where(District.id == user.district_id)
    districts = list(db.session.scalars(districts))
    own = {ledger.district_account_code(d.code) for d in districts}
    balances = ledger.balances()
    accounts = [
        {"code": a.code, "name": a.name, "balance_fen": balances.get(a.code, 0)}
        for a in db.session.scalars(sa.select(LedgerAccount).order_by(LedgerAccount.code))
        if not a.code.startswith(_DISTRICT_PREFIX) or a.code in own
    ]
    return {
        "accounts": accounts,
        "districts": _district_pool(districts, balances),
        "ledger": _last_check(),
    }


def _last_check() -> dict | None:
    run = ledger_checks.last_check()
    if run is None:
        return None
    return dict(run.findings) | {
        "ok": run.ok,
        "checked_at": run.started_at.astimezone(SHANGHAI),
        "stale": ledger_checks.is_stale(run),
    }
