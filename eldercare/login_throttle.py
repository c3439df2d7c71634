"""The sign-in throttle: every attempt takes one of the allowed guesses before it is judged.

Failures are counted three ways, each with its own allowance per window:

- per name and client (``LOGIN_MAX_FAILURES`` in ``LOGIN_LOCK_MINUTES``): the guesser at one
  account. Reaching it locks that client out of that name only, so anyone can no longer lock
  any account: its owner, from another client, still gets in. A right password clears it.
- per client, across names (``LOGIN_CLIENT_MAX_FAILURES`` in ``LOGIN_LOCK_MINUTES``): one
  client trying many names (password spraying, credential stuffing).
- per name, across clients (``LOGIN_NAME_MAX_FAILURES`` in ``LOGIN_NAME_LOCK_MINUTES``, much
  higher): guessing spread over many addresses. Reaching it locks the name for everyone, the
  price of bounding distributed guessing; the allowance is high enough that typing mistakes
  never reach it.

A right password gives back the guess it took from the last two (only real failures count
there), so an office behind one address is not locked by its own sign-ins. A browser that
has signed in as a name before carries a signed cookie saying so (``mark_device``), bound to
the account's current password hash, so that a password change ends every such mark (someone
who once knew the password and kept the cookie loses it). For that name such a browser is
counted per name and client only: neither a name-wide lock (distributed guessing) nor a lock
on its address (others guessing behind the same office or carrier NAT) keeps the owner out of
their usual browser (OWASP's "device cookies"), and its own guesses are still held to
``LOGIN_MAX_FAILURES``.

The guess is taken BEFORE the password is judged, atomically: the three rows are created if
missing (``INSERT … ON CONFLICT DO NOTHING``), locked in key order (``SELECT … FOR UPDATE``:
one global order, so no deadlock) and updated, all in one transaction committed at once on a
connection of its own (``eldercare.own_connection``), which the request's rollback cannot
undo. However many requests arrive at once, each counter lets at most its allowance of
passwords be judged per window; the rest are refused unjudged. On SQLite (single writer,
development) the same statements run in the request's transaction, whose first write holds
the database's write lock until the request ends.

The client is the remote address (behind ``PROXY_HOPS`` proxies, the address they saw); an
IPv6 client is its /64 network, since one host usually holds a whole /64.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from flask import current_app, has_request_context, request
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.dialects import postgresql, sqlite

from eldercare import own_connection
from eldercare.accounts import LoginThrottle
from eldercare.db import db

log = logging.getLogger(__name__)

ANY = ""  # a key column left empty: the row counts across every name (or every client)
DEVICE_COOKIE = "signin_device"
DEVICE_DAYS = 180
_table = LoginThrottle.__table__
_c = _table.c


@dataclass(frozen=True)
class Attempt:
    """A guess that may be judged: which rows it was counted on, and which it locked."""

    name: str
    client: str
    windows: dict[tuple[str, str], datetime]  # each row's window, to give the guess back
    locked: tuple[str, ...]  # the counters this guess used up ("name_client", ...)


def client_key(remote_addr: str | None) -> str:
    try:
        address = ipaddress.ip_address(remote_addr or "")
    except ValueError:
        return (remote_addr or "unknown")[:64]
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


def _device_serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="sign-in device")


def _device_mark(name: str, password_hash: str) -> str:
    # Keyed, so that the cookie shows nobody which name it is for; the password hash makes a
    # password change end every mark given before it.
    key = current_app.config["SECRET_KEY"].encode()
    said = b"sign-in device:" + name.encode() + b"\0" + password_hash.encode()
    return hmac.new(key, said, hashlib.sha256).hexdigest()[:32]


def mark_device(response, name: str, password_hash: str) -> None:
    """After a right password: this browser is one its owner signs in from."""
    response.set_cookie(
        DEVICE_COOKIE,
        _device_serializer().dumps(_device_mark(name, password_hash)),
        max_age=DEVICE_DAYS * 86400,
        httponly=True,
        secure=current_app.config.get("SESSION_COOKIE_SECURE", False),
        samesite="Lax",
    )


def known_device(name: str, password_hash: str | None) -> bool:
    """Whether this request comes from a browser that signed in as ``name`` before, with the
    password it has now (``password_hash`` None: no such account, so no such browser)."""
    raw = request.cookies.get(DEVICE_COOKIE) if has_request_context() else None
    if not raw or password_hash is None:
        return False
    try:
        mark = _device_serializer().loads(raw, max_age=DEVICE_DAYS * 86400)
    except BadSignature:
        return False
    return hmac.compare_digest(str(mark), _device_mark(name, password_hash))


def _allowances(
    name: str, client: str, known: bool
) -> dict[tuple[str, str], tuple[str, int, timedelta]]:
    config = current_app.config
    lock = timedelta(minutes=config["LOGIN_LOCK_MINUTES"])
    allowances = {(name, client): ("name_client", config["LOGIN_MAX_FAILURES"], lock)}
    if not known:
        allowances[(ANY, client)] = ("client", config["LOGIN_CLIENT_MAX_FAILURES"], lock)
        allowances[(name, ANY)] = (
            "name",
            config["LOGIN_NAME_MAX_FAILURES"],
            timedelta(minutes=config["LOGIN_NAME_LOCK_MINUTES"]),
        )
    return allowances


def _counting_connection():
    if own_connection.available():
        return own_connection.transaction()
    return nullcontext(db.session.connection())


def _insert(conn):
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(_table)


def _where(key: tuple[str, str]):
    return sa.and_(_c.username_key == key[0], _c.client_key == key[1])


def _locked_rows(conn, keys: list[tuple[str, str]]) -> list:
    """The rows of ``keys``, created if missing, locked in key order (one global order)."""
    conn.execute(
        _insert(conn)
        .values([{"username_key": n, "client_key": c, "failures": 0} for n, c in keys])
        .on_conflict_do_nothing()
    )
    return conn.execute(
        sa.select(_table)
        .where(sa.or_(*(_where(key) for key in keys)))
        .order_by(_c.username_key, _c.client_key)
        .with_for_update()
    ).all()


def take_guess(name: str, client: str, now: datetime, *, known: bool = False) -> Attempt | None:
    """Count one failure on each of the rows before the password is judged: the attempt, or
    None when any of them is locked (then nothing is counted and the password must not be
    judged). A failure to get the rows' locks in time also answers None: the throttle fails
    closed. ``known`` (the owner's usual browser, ``known_device``): only the name-and-client
    row counts."""
    allowances = _allowances(name, client, known)
    keys = sorted(allowances)
    try:
        with _counting_connection() as conn:
            rows = _locked_rows(conn, keys)
            if len(rows) < len(keys):
                # The daily purge (``accounts_purge``) deleted a spent row between the INSERT
                # and the SELECT, and has committed (the SELECT saw the delete or waited for
                # it): inserted again, the row counts this guess from a new window.
                rows = _locked_rows(conn, keys)
            if len(rows) < len(keys):
                return None  # fail closed: a guess is never judged uncounted
            changes, locked = {}, []
            for row in rows:
                key = (row.username_key, row.client_key)
                scope, limit, length = allowances[key]
                if row.locked_until is not None and row.locked_until > now:
                    return None  # the block ends: nothing was changed, nothing is counted
                new_window = (
                    row.window_started_at is None
                    or row.locked_until is not None  # an old lock has run out
                    or row.window_started_at <= now - length
                )
                failures = 1 if new_window else row.failures + 1
                started = now if new_window else row.window_started_at
                locked_until = now + length if failures >= limit else None
                if locked_until is not None:
                    locked.append(scope)
                changes[key] = {
                    "failures": failures,
                    "window_started_at": started,
                    "locked_until": locked_until,
                }
            for key, values in changes.items():
                conn.execute(sa.update(_table).where(_where(key)).values(**values))
    except sa.exc.OperationalError:
        return None
    windows = {key: values["window_started_at"] for key, values in changes.items()}
    return Attempt(name, client, windows, tuple(sorted(locked)))


def give_back(attempt: Attempt) -> None:
    """The password was right: the guess was no failure. The name-and-client count starts
    again; the client's and the name's give back this one guess (if their window has not
    started again meanwhile), and with it any lock it set. Should that fail, the guess stays
    counted: the sign-in goes on, the throttle errs on the strict side."""
    try:
        with _counting_connection() as conn:
            conn.execute(sa.delete(_table).where(_where((attempt.name, attempt.client))))
            for key in attempt.windows.keys() - {(attempt.name, attempt.client)}:
                conn.execute(
                    sa.update(_table)
                    .where(
                        _where(key),
                        _c.window_started_at == attempt.windows[key],
                        _c.failures > 0,
                    )
                    .values(failures=_c.failures - 1, locked_until=None)
                )
    except sa.exc.OperationalError:
        log.warning("a right password's guess could not be given back", exc_info=True)
