"""`flask reconcile` (being written)."""

import click


@click.command("reconcile")
def reconcile_command():
    """(being written)"""
