"""``flask pii rotate``: re-encrypt every stored ID number and phone under the current key.

Rows are read raw (no ORM) in primary-key batches, re-sealed in Python and written back
with one executemany per batch. Each UPDATE names the ciphertext it read, so a row changed
meanwhile by the application is left as the application wrote it (already under the
current key). ``--rehash`` also recomputes the look-up hashes, for a new PII_HMAC_KEY.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import click
import sqlalchemy as sa
from flask.cli import AppGroup

from eldercare.db import db
from eldercare.pii import ENCRYPTED_COLUMNS, keyring

cli = AppGroup("pii", help="Encryption at rest of resident ID numbers and phones.")


def key_ids_in_use(connection) -> Counter:
    """How many stored values each key id encrypts (all encrypted columns together)."""
    counts: Counter = Counter()
    for table, _pk, column, _context, _hash in ENCRYPTED_COLUMNS:
        col = sa.column(column)
        kid = sa.func.substr(col, 1, sa.func.instr(col, ":") - 1)
        if connection.dialect.name == "postgresql":
            kid = sa.func.split_part(col, ":", 1)
        rows = connection.execute(
            sa.select(kid, sa.func.count()).select_from(sa.table(table, col))
            .where(col.is_not(None)).group_by(kid)
        )  # fmt: skip
        counts.update(dict(rows.all()))
    return counts


def rotate(connection, *, batch: int = 1000, rehash: bool = False) -> Iterator[int]:
    """Re-encrypt (and with ``rehash`` re-hash) what is not under the current key, yielding
    the number of values rewritten after each batch, when the caller may commit."""
    keys = keyring()
    prefix = keys.current + ":"
    for table, pk, column, context, hashed in ENCRYPTED_COLUMNS:
        t = sa.table(table, sa.column(pk), sa.column(column))
        if hashed:
            t.append_column(sa.column(hashed[0]))
        pk_col, col = t.c[pk], t.c[column]
        stale = col.is_not(None)
        if not rehash:
            stale &= sa.not_(col.startswith(prefix, autoescape=True))
        update = (
            t.update()
            .where(pk_col == sa.bindparam("b_pk"), col == sa.bindparam("b_old"))
            .values({column: sa.bindparam("b_new")})
        )
        if hashed:
            update = update.values({hashed[0]: sa.bindparam("b_hash")})
        last = None
        while True:
            page = sa.select(pk_col, col).where(stale).order_by(pk_col).limit(batch)
            if last is not None:
                page = page.where(pk_col > last)
            rows = connection.execute(page).all()
            if not rows:
                break
            params = []
            for row_pk, stored in rows:
                plain = keys.decrypt(stored, context)  # a tampered value stops the run here
                item = {"b_pk": row_pk, "b_old": stored, "b_new": keys.encrypt(plain, context)}
                if hashed:
                    item["b_hash"] = keys.lookup_hash(hashed[1], plain)
                params.append(item)
            connection.execute(update, params)
            yield len(params)
            last = rows[-1][0]


@cli.command("rotate")
@click.option("--batch", default=1000, show_default=True, help="Rows per transaction.")
@click.option("--rehash", is_flag=True, help="Also recompute look-up hashes (new PII_HMAC_KEY).")
def rotate_command(batch: int, rehash: bool):
    """Re-encrypt stored ID numbers and phones under the first key of PII_KEYS."""
    total = 0
    with db.engine.connect() as connection:
        for done in rotate(connection, batch=batch, rehash=rehash):
            connection.commit()  # one transaction per batch: a long run holds no long locks
            total += done
        remaining = key_ids_in_use(connection)
    current = keyring().current
    click.echo(f"re-encrypted {total} values under key {current!r}")
    others = {kid: n for kid, n in remaining.items() if kid != current}
    if others:
        click.echo(f"still under other keys (changed meanwhile? run again): {others}")
    else:
        click.echo("no value is under another key: the old keys can be removed from PII_KEYS")


@cli.command("status")
def status_command():
    """How many stored values each key id encrypts."""
    with db.engine.connect() as connection:
        counts = key_ids_in_use(connection)
    click.echo(", ".join(f"{kid}: {n}" for kid, n in sorted(counts.items())) or "no values")
