"""``flask pii rotate``: re-encrypt every stored ID number and phone under the current key.

Rows are read raw (no ORM) in primary-key batches, re-sealed in Python and written back
with one statement per batch: on PostgreSQL an ``UPDATE … FROM unnest(arrays)`` joining the
batch by primary key (one executemany, a statement per row, took twice as long at
a million residents: bench/pii.py), elsewhere an executemany. Each row's update names the
ciphertext it read, so a row changed meanwhile by the application is left as the
application wrote it (already under the current key). ``--rehash`` also recomputes the
look-up hashes, for a new PII_HMAC_KEY.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import click
import sqlalchemy as sa
from flask.cli import AppGroup
from sqlalchemy.dialects import postgresql

from eldercare.db import db
from eldercare.pii import encrypted_columns, keyring

cli = AppGroup("pii", help="Encryption at rest of resident ID numbers and phones.")


def key_ids_in_use(connection) -> Counter:
    """How many stored values each key id encrypts (all encrypted columns together)."""
    counts: Counter = Counter()
    for table, column, _type, _hashes in encrypted_columns(db.metadata):
        col = sa.column(column.name)
        kid = sa.func.substr(col, 1, sa.func.instr(col, ":") - 1)
        if connection.dialect.name == "postgresql":
            kid = sa.func.split_part(col, ":", 1)
        rows = connection.execute(
            sa.select(kid, sa.func.count()).select_from(sa.table(table.name, col))
            .where(col.is_not(None)).group_by(kid)
        )  # fmt: skip
        counts.update(dict(rows.all()))
    return counts


def _row_update(t, pk_col, col, hashes: dict):
    """One row's UPDATE, run as an executemany over the batch."""
    values = {col.name: sa.bindparam("b_new")} | {h: sa.bindparam(f"b_{h}") for h in hashes}
    return (
        t.update()
        .where(pk_col == sa.bindparam("b_pk"), col == sa.bindparam("b_old"))
        .values(values)
    )


def _batch_update(t, pk_col, col, hashes: dict):
    """PostgreSQL: the whole batch's UPDATE, its rows given as arrays (the same parameter
    names, one array each) unnested and joined by primary key; the same guard per row.
    The batch's own key range bounds the table's side of the join: without it the planner
    may hash the whole table for each batch."""
    names = ["b_pk", "b_old", "b_new", *(f"b_{h}" for h in hashes)]
    arrays = [sa.bindparam(name, type_=postgresql.ARRAY(sa.Text)) for name in names]
    arrays[0] = sa.bindparam("b_pk", type_=postgresql.ARRAY(sa.BigInteger))
    v = sa.func.unnest(*arrays).table_valued(*names).render_derived(name="v")
    values = {col.name: v.c.b_new} | {h: v.c[f"b_{h}"] for h in hashes}
    in_batch = pk_col.between(sa.bindparam("b_first"), sa.bindparam("b_last"))
    return t.update().where(in_batch, pk_col == v.c.b_pk, col == v.c.b_old).values(values)


def rotate(connection, *, batch: int = 1000, rehash: bool = False) -> Iterator[int]:
    """Re-encrypt (and with ``rehash`` re-hash) what is not under the current key, yielding
    the number of values rewritten after each batch, when the caller may commit."""
    keys = keyring()
    prefix = keys.current + ":"
    for table, column, encrypted, hashes in encrypted_columns(db.metadata):
        # Plain columns: the raw stored text, not the type's decryption.
        (pk,) = (c.name for c in table.primary_key.columns)
        t = sa.table(table.name, *map(sa.column, (pk, column.name, *hashes)))
        pk_col, col, context = t.c[pk], t.c[column.name], encrypted.context
        stale = col.is_not(None)
        if not rehash:
            stale &= sa.not_(col.startswith(prefix, autoescape=True))
        postgres = connection.dialect.name == "postgresql"
        update = (
            _batch_update(t, pk_col, col, hashes)
            if postgres
            else _row_update(t, pk_col, col, hashes)
        )
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
                for h, kind in hashes.items():
                    item[f"b_{h}"] = keys.lookup_hash(kind, plain)
                params.append(item)
            if postgres:  # the batch as one array per parameter, and its key range
                arrays = {name: [p[name] for p in params] for name in params[0]}
                bounds = {"b_first": rows[0][0], "b_last": rows[-1][0]}
                connection.execute(update, arrays | bounds)
            else:
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
