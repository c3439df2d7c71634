"""The shell's commands: demo data, audit verification, account creation and purge."""

from __future__ import annotations

import json
import sys

import click
import sqlalchemy as sa
from flask import current_app
from flask.cli import AppGroup, with_appcontext

from eldercare import account_service, audit
from eldercare.accounts import ROLES
from eldercare.db import db, unit_of_work
from eldercare.errors import DomainError
from eldercare.pii_rotation import cli as pii_cli
from eldercare.residents import District

audit_cli = AppGroup("audit", help="Inspect the audit trail.")
accounts_cli = AppGroup("accounts", help="Manage user accounts.")


def _backlog_text(unsealed: int, age_s: float | None) -> str:
    if not unsealed:
        return "no rows wait to be sealed"
    return f"{unsealed} rows wait to be sealed (the oldest appended {age_s:.0f} s ago)"


@audit_cli.command("seal")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")
def seal_command(as_json: bool):
    """Chain the committed unsealed rows (the audit-seal job does it every minute)."""
    with unit_of_work():
        result = audit.seal_job()
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(
            f"sealed {result['sealed']} rows; the chain has {result['last_seq']}; "
            + _backlog_text(result["unsealed"], result["oldest_unsealed_age_s"])
        )


@audit_cli.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")
@click.option(
    "--no-seal", is_flag=True, help="Only check (a read-only database); do not seal first."
)
def verify(as_json: bool, no_seal: bool):
    """Seal what has committed, then check every link of the audit chain; exit 1 at the
    first broken row."""
    if not no_seal:
        with unit_of_work():
            audit.seal()
    report = audit.verify_chain()
    if as_json:
        click.echo(json.dumps(report.__dict__))
    elif report.ok:
        click.echo(
            f"audit chain intact: {report.rows_checked} rows checked; "
            + _backlog_text(report.unsealed, report.oldest_unsealed_age_s)
        )
    else:
        what = "was edited" if report.problem == "content" else "does not link to the row before"
        click.echo(
            f"audit chain BROKEN at row {report.broken_row_id}: it {what} "
            f"({report.rows_checked} rows before it are intact)",
            err=True,
        )
    sys.exit(0 if report.ok else 1)


@accounts_cli.command("create-user")
@click.argument("username")
@click.option("--role", "roles", multiple=True, required=True, type=click.Choice(sorted(ROLES)))
@click.option("--name", "display_name", default=None, help="Name shown on pages.")
@click.option("--district", "district_code", default=None, help="District code for staff.")
@click.password_option()
def create_user_command(username, roles, display_name, district_code, password):
    """Create an account (the password is asked for, never passed on the command line)."""
    with unit_of_work():
        district = None
        if district_code:
            district = db.session.scalar(sa.select(District).where(District.code == district_code))
            if district is None:
                raise click.BadParameter(f"no district {district_code}", param_hint="--district")
        try:
            user = account_service.create_user(
                username,
                display_name=display_name or username,
                password=password,
                roles=list(roles),
                district=district,
            )
        except DomainError as error:
            problems = "; ".join(f"{k}: {v}" for k, v in error.details.items())
            raise click.ClickException(f"{error.message} {problems}".strip()) from None
        key = user.username
    click.echo(f"created {key} with roles {', '.join(sorted(set(roles)))}")


@accounts_cli.command("purge")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")
def purge_command(as_json: bool):
    """Delete spent sign-in throttle rows and sessions over 30 days old (the accounts-purge
    job does it daily)."""
    from eldercare.accounts_purge import SESSION_KEEP_DAYS, purge

    with unit_of_work():
        result = purge()
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(
            f"deleted {result['login_throttles']} sign-in throttle rows (window and lock over) "
            f"and {result['user_sessions']} sessions (unused and ended more than "
            f"{SESSION_KEEP_DAYS} days ago)"
        )


@click.command("demo")
@with_appcontext
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")
def demo(as_json: bool):
    """Build (or top up) the demo city; running it twice changes nothing more."""
    if current_app.config["ENV_NAME"] == "production":
        raise click.ClickException("the demo must not be loaded into a production database")
    from eldercare.demo import build_demo

    with unit_of_work():
        summary = build_demo()
    if as_json:
        click.echo(json.dumps(summary, ensure_ascii=False))
        return
    click.echo("Demo city ready. Accounts (all with the password shown):")
    for account in summary["accounts"]:
        click.echo(f"  {account['username']:<18} {account['password']:<16} {account['roles']}")


def register(app) -> None:
    app.cli.add_command(audit_cli)
    app.cli.add_command(accounts_cli)
    app.cli.add_command(pii_cli)
    app.cli.add_command(demo)
