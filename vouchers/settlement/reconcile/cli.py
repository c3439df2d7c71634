"""``flask reconcile --month YYYY-MM [--json]``: reconcile a month now (default: last month),
store the run, print the identity and the findings. Exits 1 on any mismatch or any finding
of the month still open in the exception queue (resolved ones do not count)."""

from __future__ import annotations

import json
import re
from datetime import date

import click

from eldercare.db import unit_of_work
from vouchers.settlement.reconcile import reconcile
from vouchers.settlement.reconcile.pool import BALANCE_TERMS, DISTRICT_TERMS
from vouchers.settlement.statements.run import MONTH_YEARS

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


def _month(text: str | None) -> date:
    if text is None:
        return reconcile.previous_month()
    found = _MONTH.match(text.strip())
    if not found or not 1 <= int(found.group(2)) <= 12 or int(found.group(1)) not in MONTH_YEARS:
        raise click.BadParameter("a month as YYYY-MM, e.g. 2026-11", param_hint="--month")
    return date(int(found.group(1)), int(found.group(2)), 1)


def _text(findings: dict, month: date, open_count: int) -> str:
    identity = findings["identity"]
    out = [f"reconciliation of {month:%Y-%m}"]
    out.append(f"  funded                {identity['funded']:>16} fen")
    for term in BALANCE_TERMS:
        out.append(f"  {term:<21} {identity['terms'][term]:>16}")
    out.append(f"  difference            {identity['difference']:>16}")
    out.append(
        f"  receivables+clawback  {identity['clawback_pair']:>16}  (must be 0)\n"
        f"  card co-payments      {identity['copay_group']:>16}  (must be 0)"
    )
    out.append("  per district: allocated = " + " + ".join(DISTRICT_TERMS))
    for row in findings["districts"]:
        mark = "ok" if row["ok"] else f"BREAKS by {row['difference']} fen"
        values = " + ".join(str(row["terms"][t]) for t in DISTRICT_TERMS)
        out.append(f"    {row['code']}: {row['allocated']} = {values}  {mark}")
    out.append(f"  gateway: {findings['gateway']['status']}")
    for m in findings["mismatches"]:
        out.append(f"  MISMATCH {m['kind']} ({m['fingerprint']}): {json.dumps(m['evidence'])}")
    out.append(f"  open findings of the month in the exception queue: {open_count}")
    return "\n".join(out)


@click.command("reconcile")
@click.option("--month", "month_text", help="The voucher month, YYYY-MM (default: last month).")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report.")
def reconcile_command(month_text: str | None, as_json: bool):
    """Reconcile a month: the pool identity (total and per district) and sub-ledgers, the
    card gateway, the bank and the approved statements' hashes. Exits 1 when anything does
    not match or a finding of the month is still open."""
    month = _month(month_text)
    with unit_of_work():
        run = reconcile.reconcile_month(month)
        findings, ok = run.findings, run.ok
        open_count = reconcile.open_exceptions(month)
    if as_json:
        click.echo(
            json.dumps(
                {"month": f"{month:%Y-%m}", "ok": ok, "open_exceptions": open_count} | findings,
                ensure_ascii=False,
                default=str,
            )
        )
    else:
        click.echo(_text(findings, month, open_count))
        click.echo("RECONCILED" if ok and not open_count else "NOT RECONCILED")
    if not ok or open_count:
        raise SystemExit(1)
