"""Settlement: statements per provider and month, maker-checker approval, the books of what
providers are owed and paid, bank transfer batches and their results, reconciliation.

Imports run one way: settlement uses the pool, issuance, redemption and integrity; none of
them imports settlement (redemption asks it about settled redemptions through the hook it
offers, ``vouchers.redemption.steps.settlement_guard``).

- ``statements.periods``: which months may be settled (cut-off), and the month lock;
- ``statements.run``: a settlement run, set-based: statements and their lines;
- ``statements.approval``: maker-checker, freezing, the hash of the lines (``hashing``);
- ``books``: the ledger entries settlement posts (approval, payment, clawback, netting);
- ``bank.payees``: provider bank-account changes, approved by the bureau;
- ``bank.bank_files`` / ``bank.bank_results``: the transfer batch and the bank's result file;
- ``documents``: PDF and XLSX statements;
- ``reconcile``: the pool identity, the gateway, the bank and the statements' hashes;
- ``exceptions``: the queue of what did not match, each with a resolution.
Each topic's pages (``views_*``, on the blueprint in ``views``) and API (``api_*``) are in
its sub-package.
"""

from __future__ import annotations


def register(app) -> None:
    from eldercare.api import api
    from eldercare.navigation import register_destinations
    from vouchers.settlement import cli, demo, jobs, views
    from vouchers.settlement.bank import api_bank, views_bank, views_payees
    from vouchers.settlement.documents import api_documents, views_documents
    from vouchers.settlement.reconcile import api_reconcile, views_reconcile
    from vouchers.settlement.reconcile import cli as reconcile_cli
    from vouchers.settlement.statements import api_statements, guard, views_statements

    guard.install()  # the reversal's hook (vouchers.redemption.steps.settlement_guard)
    app.register_blueprint(views.bp)
    api.register_blueprint(api_statements.blp)
    _ = (api_bank, api_documents, api_reconcile)  # their endpoints are on api_statements.blp
    register_destinations(
        app,
        *views_statements.DESTINATIONS,
        *views_bank.DESTINATIONS,
        *views_payees.DESTINATIONS,
        *views_reconcile.DESTINATIONS,
        *views_documents.DESTINATIONS,
    )
    app.cli.add_command(cli.cli)
    app.cli.add_command(reconcile_cli.reconcile_command)
    app.extensions.setdefault("scheduled_jobs", []).extend(jobs.JOBS)
    # After the vouchers step (vouchers.register appends it before calling this).
    app.extensions.setdefault("demo_steps", []).append(demo.build_demo)
