"""Resident ID numbers and phones encrypted at rest, with a keyed hash for exact look-up.

- ``EncryptedString``: a column type that stores ``<key id>:<base64(nonce | ciphertext | tag)>``
  (AES-256-GCM). The column's name is the associated data, so a ciphertext copied into
  another column does not decrypt. A ciphertext that fails its tag raises ``PiiDecryptError``:
  never a wrong value.
- Keys come from ``PII_KEYS`` = ``"kid1:<base64 32 bytes>,kid0:<base64 32 bytes>"``: the
  first encrypts, every one decrypts, so a key can be added, the rows re-encrypted
  (``flask pii rotate``) and then the old key dropped.
- ``lookup_hash``: HMAC-SHA256 under ``PII_HMAC_KEY`` of the normalised value, the only
  thing a query may compare (an encrypted column refuses ``==``; a fresh nonce per write
  means equal values never have equal ciphertexts).

Development, tests and the demo use the fixed keys below; production refuses them
(eldercare/config.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from functools import lru_cache

import sqlalchemy as sa
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from flask import current_app, has_app_context
from sqlalchemy.orm import mapped_column

# DEMO ONLY, public in the source: refused when ELDERCARE_ENV=production.
DEMO_PII_KEYS = "demo1:" + base64.b64encode(b"DEMO-ONLY eldercare pii key 0001").decode()
DEMO_PII_HMAC_KEY = base64.b64encode(b"DEMO-ONLY eldercare pii hmac 001").decode()

_KID = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
_NONCE = 12
ENCRYPTED_LENGTH = 255  # kid (16) + ":" + base64 of 12 + 40 + 16 bytes, with room to spare


class PiiKeyError(ValueError):
    """PII_KEYS or PII_HMAC_KEY is missing or malformed."""


class PiiDecryptError(ValueError):
    """A stored value failed authentication or names a key that is not configured."""


@dataclass(frozen=True)
class KeyRing:
    current: str
    ciphers: dict[str, AESGCM]
    hmac_key: bytes
    fingerprints: frozenset[str]  # SHA-256 of each AES key: to refuse known (demo) keys

    def encrypt(self, plaintext: str, context: str) -> str:
        nonce = os.urandom(_NONCE)
        sealed = self.ciphers[self.current].encrypt(nonce, plaintext.encode(), context.encode())
        return f"{self.current}:{base64.b64encode(nonce + sealed).decode()}"

    def decrypt(self, stored: str, context: str) -> str:
        kid, _, body = stored.partition(":")
        cipher = self.ciphers.get(kid)
        if cipher is None:
            raise PiiDecryptError(f"{context}: no key {kid!r} in PII_KEYS")
        try:
            raw = base64.b64decode(body, validate=True)
            return cipher.decrypt(raw[:_NONCE], raw[_NONCE:], context.encode()).decode()
        except (InvalidTag, binascii.Error, ValueError):
            raise PiiDecryptError(f"{context}: stored value fails authentication") from None

    def lookup_hash(self, kind: str, value: str) -> str:
        value = normalise(value)
        if kind.endswith("_tail"):
            value = value[-4:]
        message = f"{kind}\0{value}".encode()
        return hmac.new(self.hmac_key, message, hashlib.sha256).hexdigest()


def normalise(value: str) -> str:
    """What is hashed: ID numbers are compared upper-case (a final x is X) and unspaced."""
    return value.strip().upper()


def _key(text: str, name: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except binascii.Error:
        raise PiiKeyError(f"{name}: not base64") from None
    if len(raw) != 32:
        raise PiiKeyError(f"{name}: a key must be 32 bytes (AES-256), got {len(raw)}")
    return raw


@lru_cache(maxsize=8)
def parse_keys(keys_text: str, hmac_text: str) -> KeyRing:
    ciphers: dict[str, AESGCM] = {}
    fingerprints = set()
    for item in filter(None, (part.strip() for part in (keys_text or "").split(","))):
        kid, sep, key = item.partition(":")
        if not sep or not _KID.match(kid):
            raise PiiKeyError("PII_KEYS: each entry is <key id>:<base64 key>, id [A-Za-z0-9_-]")
        if kid in ciphers:
            raise PiiKeyError(f"PII_KEYS: key id {kid!r} given twice")
        raw = _key(key, f"PII_KEYS[{kid}]")
        ciphers[kid] = AESGCM(raw)
        fingerprints.add(hashlib.sha256(raw).hexdigest())
    if not ciphers:
        raise PiiKeyError("PII_KEYS is empty")
    if not (hmac_text or "").strip():
        raise PiiKeyError("PII_HMAC_KEY is empty")
    hmac_key = _key(hmac_text, "PII_HMAC_KEY")
    return KeyRing(next(iter(ciphers)), ciphers, hmac_key, frozenset(fingerprints))


def keys_from_env() -> tuple[str, str]:
    """The key settings as eldercare/config.py reads them (the demo's outside production)."""
    production = os.environ.get("ELDERCARE_ENV") == "production"
    return (
        os.environ.get("PII_KEYS") or ("" if production else DEMO_PII_KEYS),
        os.environ.get("PII_HMAC_KEY") or ("" if production else DEMO_PII_HMAC_KEY),
    )


def keyring() -> KeyRing:
    """The app's keys (its config), or the environment's outside an app (scripts)."""
    if has_app_context():
        config = current_app.config
        return parse_keys(config.get("PII_KEYS", ""), config.get("PII_HMAC_KEY", ""))
    return parse_keys(*keys_from_env())


def lookup_hash(kind: str, value: str | None) -> str | None:
    return None if value is None else keyring().lookup_hash(kind, value)


class EncryptedString(sa.types.TypeDecorator):
    """Text stored encrypted (AES-256-GCM); ``context`` (table.column) is the associated data.

    Comparing the column in SQL is refused: with a fresh nonce per write it would silently
    match nothing. Compare its lookup-hash column instead.
    """

    impl = sa.String(ENCRYPTED_LENGTH)
    cache_ok = True

    def __init__(self, context: str):
        super().__init__()
        self.context = context

    class Comparator(sa.types.TypeDecorator.Comparator):
        _ALLOWED = frozenset({sa.sql.operators.is_, sa.sql.operators.is_not})

        def operate(self, op, *other, **kwargs):
            if op not in self._ALLOWED:
                raise TypeError(
                    "an encrypted column cannot be compared in SQL; use its lookup hash"
                )
            return super().operate(op, *other, **kwargs)

    comparator_factory = Comparator

    def process_bind_param(self, value, dialect):
        return None if value is None else keyring().encrypt(str(value), self.context)

    def process_result_value(self, value, dialect):
        return None if value is None else keyring().decrypt(value, self.context)


def lookup_hash_column(source: str, kind: str, **kwargs):
    """A column holding the lookup hash of column ``source``. Its default computes the hash
    of the value inserted (the ORM and plain ``insert(Model)`` bulk statements alike; ORM
    updates go through ``keep_lookup_hash``); ``info`` tells rotation to recompute it."""

    def _default(context):
        return lookup_hash(kind, context.get_current_parameters().get(source))

    info = {"hash_of": source, "hash_kind": kind}
    return mapped_column(sa.String(64), default=_default, info=info, **kwargs)


def keep_lookup_hash(attribute, hash_name: str, kind: str) -> None:
    """Whenever the ORM attribute is set (constructor included), set its hash beside it."""

    @sa.event.listens_for(attribute, "set", retval=False)
    def _set(target, value, _old, _initiator):
        setattr(target, hash_name, lookup_hash(kind, value))


def encrypted_columns(metadata: sa.MetaData):
    """(table, column, its EncryptedString, {hash column: kind}) for every encrypted column
    of the models: what rotation rewrites."""
    for table in metadata.sorted_tables:
        for column in table.columns:
            if isinstance(column.type, EncryptedString):
                hashes = {
                    c.name: c.info["hash_kind"]
                    for c in table.columns
                    if c.info.get("hash_of") == column.name
                }
                yield table, column, column.type, hashes
