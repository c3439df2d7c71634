"""Certification documents a provider uploads: checked, stored outside the web root, audited.

A file is accepted only when its first bytes say it is a PDF, JPEG or PNG and its name's
extension agrees (a renamed program is refused whatever its name or the browser's content
type claims), and when it is at most ``PROVIDER_DOCUMENT_MAX_BYTES``. It is stored under
``DOCUMENT_STORE`` (default ``<instance>/documents``) with a random name; the name the
uploader gave is kept only as the download name.

Order of work: everything is checked first; then the row is flushed (so a database refusal
leaves no file behind), then the file is written, then the audit row. If anything fails
after the file is written, or the request's transaction later rolls back, the file is
deleted again, so a file on disk always has its row.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets

import sqlalchemy as sa
from flask import current_app
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel.speaklater import LazyString
from sqlalchemy.orm import Session

from eldercare import audit
from eldercare.accounts import User
from eldercare.db import db
from eldercare.errors import InvalidInput, NotFound, PermissionDenied
from marketplace.models import DOCUMENT_KINDS, Provider, ProviderDocument

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 5 * 1024 * 1024  # config PROVIDER_DOCUMENT_MAX_BYTES
MAX_FILENAME = 200  # the column's length
MAX_WAIVER_REASON = 500  # a paragraph; the audit row keeps it whole
_STORED_NAME = re.compile(r"^[0-9a-f]{32}$")
_PENDING = "marketplace_documents_written"  # session.info key: files to remove on rollback

# content type -> (leading bytes, extensions a file of that type may have)
ALLOWED_TYPES = {
    "application/pdf": (b"%PDF-", (".pdf",)),
    "image/jpeg": (b"\xff\xd8\xff", (".jpg", ".jpeg")),
    "image/png": (b"\x89PNG\r\n\x1a\n", (".png",)),
}

# Which documents the bureau expects from each kind of provider before approving.
REQUIRED_KINDS = {
    "care_institution": ("business_licence", "institution_registration", "fire_safety"),
    "community_station": ("business_licence", "fire_safety"),
    "home_service": ("business_licence",),
}
DOCUMENT_KIND_LABELS = {
    "business_licence": _l("Business licence or registration certificate"),
    "institution_registration": _l("Care institution filing certificate"),
    "fire_safety": _l("Fire safety inspection"),
    "other": _l("Other document"),
}


def max_bytes() -> int:
    return int(current_app.config.get("PROVIDER_DOCUMENT_MAX_BYTES", DEFAULT_MAX_BYTES))


def document_store() -> str:
    configured = current_app.config.get("DOCUMENT_STORE")
    return configured or os.path.join(current_app.instance_path, "documents")


def sniff_content_type(data: bytes) -> str | None:
    """The allowed type the bytes themselves show, or None."""
    for content_type, (magic, _extensions) in ALLOWED_TYPES.items():
        if data.startswith(magic):
            return content_type
    return None


def clean_filename(filename: str | None) -> str:
    """The last part of what the browser sent (some send a whole Windows path), as text to
    show and offer as the download name; it is never used as a path."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    if len(name) > MAX_FILENAME:
        stem, extension = os.path.splitext(name)
        extension = extension[:10]
        name = stem[: MAX_FILENAME - len(extension)] + extension
    return name


def _path_of(stored_name: str) -> str:
    if not _STORED_NAME.match(stored_name or ""):
        raise NotFound()  # never a path: only names this module made
    return os.path.join(document_store(), stored_name)


def _check(kind: str, filename: str, data: bytes) -> str:
    """The content type of an acceptable upload; otherwise InvalidInput naming the field."""
    if kind not in DOCUMENT_KINDS:
        raise InvalidInput(details={"kind": _l("Choose what kind of document this is.")})
    if not filename or not data:
        raise InvalidInput(details={"file": _l("Choose a file to upload; this one is empty.")})
    limit = max_bytes()
    if len(data) > limit:
        raise InvalidInput(
            _l("The file is too large."),
            details={
                "file": _l(
                    "The file is larger than %(size)s MB. Scan at a lower resolution or "
                    "upload the pages as separate files.",
                    size=f"{limit / 2**20:g}",
                )
            },
        )
    content_type = sniff_content_type(data)
    extension = os.path.splitext(filename)[1].lower()
    if content_type is None or extension not in ALLOWED_TYPES[content_type][1]:
        raise InvalidInput(
            _l("This file cannot be accepted."),
            details={
                "file": _l(
                    "Upload a PDF, JPEG or PNG file. This file's contents are not one of "
                    "these, or do not match its name."
                )
            },
        )
    return content_type


def _remember_for_rollback(session: Session, path: str) -> None:
    session.info.setdefault(_PENDING, []).append(path)


@sa.event.listens_for(Session, "after_commit")
def _keep_written(session: Session) -> None:
    session.info.pop(_PENDING, None)


@sa.event.listens_for(Session, "after_soft_rollback")
def _remove_written(session: Session, previous_transaction) -> None:
    if previous_transaction.nested or previous_transaction.parent is not None:
        return  # a savepoint: the unit of work may still commit what was written before it
    for path in session.info.pop(_PENDING, []):
        _unlink_quietly(path)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError:  # logged, not raised: the rollback that brought us here matters more
        log.exception("could not remove %s", path)


def store_document(
    provider: Provider, *, kind: str, filename: str | None, data: bytes, actor: User
) -> ProviderDocument:
    """Check, record and store one uploaded document of ``provider``."""
    name = clean_filename(filename)
    content_type = _check(kind, name, data)
    document = ProviderDocument(
        provider_id=provider.id,
        kind=kind,
        original_filename=name,
        stored_name=secrets.token_hex(16),
        content_type=content_type,
        size_bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        uploaded_by_user_id=actor.id,
    )
    db.session.add(document)
    db.session.flush()  # a refusal here happens before any file exists

    os.makedirs(document_store(), mode=0o700, exist_ok=True)
    path = _path_of(document.stored_name)
    # O_EXCL: never overwrite (nor, below, remove) a file this upload did not create.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    _remember_for_rollback(db.session, path)
    try:
        with os.fdopen(descriptor, "wb") as out:
            out.write(data)
        audit.record(
            "provider.document",
            document,
            district_id=provider.district_id,
            after={
                "provider_id": provider.id,
                "kind": kind,
                "filename": name,
                "size_bytes": len(data),
                "sha256": document.sha256,
            },
        )
    except BaseException:
        _unlink_quietly(path)
        raise
    return document


def documents_of(provider: Provider) -> list[ProviderDocument]:
    return list(
        db.session.scalars(
            sa.select(ProviderDocument)
            .where(ProviderDocument.provider_id == provider.id)
            .order_by(ProviderDocument.uploaded_at.desc(), ProviderDocument.id.desc())
        )
    )


def missing_kinds(provider: Provider, documents: list[ProviderDocument] | None = None) -> list[str]:
    """The expected kinds of document the provider has not uploaded yet."""
    documents = documents_of(provider) if documents is None else documents
    have = {d.kind for d in documents}
    return [kind for kind in REQUIRED_KINDS.get(provider.type, ()) if kind not in have]


def read_document(document: ProviderDocument) -> bytes:
    """The stored bytes, checked against the SHA-256 recorded at upload."""
    try:
        with open(_path_of(document.stored_name), "rb") as stored:
            data = stored.read()
    except FileNotFoundError:
        log.error("document %s is missing from the store", document.id)
        raise NotFound(_l("The file of this document is missing.")) from None
    if hashlib.sha256(data).hexdigest() != document.sha256:
        log.error("document %s does not match its recorded SHA-256", document.id)
        raise NotFound(_l("The file of this document is damaged."))
    return data


def waiver_field(kind: str) -> str:
    """The form field (and error key) of the reason for waiving a document of ``kind``."""
    return f"waiver_reason_{kind}"


def _missing_message(missing: list[str]) -> LazyString:
    # Lazy, so the page and the API each say it in their reader's language.
    return LazyString(
        lambda: _(
            "Certification needs every document the rules require. Missing: %(missing)s. "
            "Wait for the provider to upload them, or waive each one with a written reason.",
            missing=_("; ").join(str(DOCUMENT_KIND_LABELS[kind]) for kind in missing),
        )
    )


def certification_waivers(
    provider: Provider, waivers: dict[str, str | None] | None, approver: User | None
) -> dict[str, str]:
    """The waived documents and their reasons, when each document the provider's type
    requires is uploaded or waived; otherwise InvalidInput naming each one missing.

    ``waivers`` maps a kind to the approver's written reason for certifying without it;
    a waiver of a document that is there (or not required) is moot and dropped. A reason
    must be written (not blank) and at most ``MAX_WAIVER_REASON`` characters, and only a
    bureau approver may waive: the audit row of the decision names them and keeps the
    reasons. Callers hold the provider row's lock (``providers._locked``), so the answer
    still holds when they commit.
    """
    missing = missing_kinds(provider)
    waivers = {kind: waivers[kind] for kind in missing if kind in (waivers or {})}
    if waivers and (approver is None or not approver.has_role("bureau_approver")):
        raise PermissionDenied(_l("Only a bureau approver may waive a required document."))
    problems = {}
    waived = {}
    for kind in missing:
        if kind not in waivers:
            problems[waiver_field(kind)] = _l(
                "Not uploaded: wait for the upload, or waive it and give the reason."
            )
            continue
        reason = (waivers[kind] or "").strip()
        if not reason:
            problems[waiver_field(kind)] = _l("Give the reason for waiving this document.")
        elif len(reason) > MAX_WAIVER_REASON:
            problems[waiver_field(kind)] = _l(
                "Keep the reason within %(limit)s characters.", limit=MAX_WAIVER_REASON
            )
        else:
            waived[kind] = reason
    if problems:
        unresolved = [kind for kind in missing if waiver_field(kind) in problems]
        raise InvalidInput(_missing_message(unresolved), details=problems)
    return waived
