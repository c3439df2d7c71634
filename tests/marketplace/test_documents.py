"""Certification documents: what is accepted (by content, not by name), where it is kept,
who may download it, and that a refused or rolled-back upload leaves nothing behind."""

import hashlib
import os
import struct
import zlib

import pytest
import sqlalchemy as sa

from eldercare.audit import AuditLog
from marketplace import documents
from marketplace.models import ProviderDocument, ProviderStaff

EN = {"Accept-Language": "en"}
PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
)
EXE = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 200


def png_bytes() -> bytes:
    """A real 1 x 1 white PNG."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00\xff\xff\xff")
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


@pytest.fixture
def store(app, tmp_path, monkeypatch):
    """Documents go to a directory of this test, not the instance folder."""
    directory = tmp_path / "documents"
    monkeypatch.setitem(app.config, "DOCUMENT_STORE", str(directory))
    return directory


def stored_files(store) -> list[str]:
    return sorted(os.listdir(store)) if store.exists() else []


def multipart(kind: str, filename: str, data: bytes, content_type: str) -> tuple[bytes, str]:
    """The body a browser sends. Built here because the test client spools a large body to
    a temporary file it never closes (a ResourceWarning, an error under this suite)."""
    boundary = "----eldercare-test-boundary-7MA5"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="kind"\r\n\r\n{kind}\r\n'
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


def upload(client, data: bytes, filename: str, kind="business_licence", content_type=None):
    body, content_type = multipart(kind, filename, data, content_type or "application/octet-stream")
    return client.post(
        "/marketplace/provider/documents", data=body, content_type=content_type, headers=EN
    )


# The market's certified providers come with their required documents; these tests look
# only at what they upload themselves.
_fixture_documents = {"last_id": 0}


@pytest.fixture(autouse=True)
def _skip_fixture_documents(market, db_session):
    last = db_session.scalar(sa.select(sa.func.max(ProviderDocument.id)))
    _fixture_documents["last_id"] = last or 0


def uploaded():
    return sa.select(ProviderDocument).where(ProviderDocument.id > _fixture_documents["last_id"])


def count(db_session) -> int:
    return db_session.scalar(sa.select(sa.func.count()).select_from(uploaded().subquery()))


def test_a_pdf_is_stored_outside_the_web_root_with_a_random_name(
    client, login, market, store, db_session
):
    login(market.home_admin)
    response = upload(client, PDF, "营业执照.pdf", content_type="application/pdf")
    assert response.status_code == 302
    document = db_session.scalar(uploaded())
    assert document.provider_id == market.home.id and document.kind == "business_licence"
    assert document.content_type == "application/pdf" and document.size_bytes == len(PDF)
    assert document.sha256 == hashlib.sha256(PDF).hexdigest()
    assert document.original_filename == "营业执照.pdf"
    assert stored_files(store) == [document.stored_name]
    assert len(document.stored_name) == 32 and "pdf" not in document.stored_name
    assert (store / document.stored_name).read_bytes() == PDF
    assert os.stat(store / document.stored_name).st_mode & 0o777 == 0o600
    row = db_session.scalar(
        sa.select(AuditLog).where(
            AuditLog.action == "provider.document", AuditLog.object_id == str(document.id)
        )
    )
    assert row.after["sha256"] == document.sha256
    page = client.get("/marketplace/provider", headers=EN).get_data(as_text=True)
    assert "营业执照.pdf" in page
    assert "The bureau still needs these documents" not in page  # a home service needs one


def test_a_png_is_accepted_and_a_path_in_the_name_is_dropped(
    client, login, market, store, db_session
):
    login(market.station_admin)
    response = upload(client, png_bytes(), "../../etc/消防检查.PNG", kind="fire_safety")
    assert response.status_code == 302
    document = db_session.scalar(uploaded())
    assert document.content_type == "image/png" and document.original_filename == "消防检查.PNG"
    assert len(stored_files(store)) == 1


@pytest.mark.parametrize(
    ("data", "filename"),
    [
        (EXE, "licence.pdf"),  # a program renamed .pdf, sent as application/pdf
        (png_bytes(), "licence.pdf"),  # contents and name disagree
        (PDF, "licence.exe"),
        (b"", "licence.pdf"),
    ],
)
def test_other_contents_are_refused_and_nothing_is_kept(
    client, login, market, store, db_session, data, filename
):
    login(market.home_admin)
    response = upload(client, data, filename, content_type="application/pdf")
    page = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "Nothing has been saved." in page
    assert "Upload a PDF, JPEG or PNG file." in page or "this one is empty" in page
    assert count(db_session) == 0 and stored_files(store) == []


def test_a_file_over_5_mb_is_refused_and_nothing_is_kept(client, login, market, store, db_session):
    login(market.home_admin)
    big = b"%PDF-1.7\n" + b"0" * (6 * 1024 * 1024)
    response = upload(client, big, "scan.pdf")
    assert response.status_code in (413, 422)
    assert "larger than 5 MB" in response.get_data(as_text=True)
    assert count(db_session) == 0 and stored_files(store) == []


def test_far_larger_uploads_are_cut_off_before_the_view(client, login, market, store, db_session):
    login(market.home_admin)
    response = upload(client, b"%PDF-1.7\n" + b"0" * (11 * 1024 * 1024), "huge.pdf")
    assert response.status_code == 413
    assert count(db_session) == 0 and stored_files(store) == []


def test_the_limit_is_configurable(app, client, login, market, store, db_session, monkeypatch):
    monkeypatch.setitem(app.config, "PROVIDER_DOCUMENT_MAX_BYTES", 100)
    login(market.home_admin)
    assert upload(client, PDF, "small-but-not-small-enough.pdf").status_code == 422
    assert stored_files(store) == []


def test_an_unknown_kind_is_refused(client, login, market, store, db_session):
    login(market.home_admin)
    response = upload(client, PDF, "a.pdf", kind="passport")
    assert response.status_code == 422
    assert "Choose what kind of document this is." in response.get_data(as_text=True)
    assert stored_files(store) == []


def _uploaded(client, login, market, db_session):
    login(market.home_admin)
    assert upload(client, PDF, "营业执照 2025.pdf").status_code == 302
    client.post("/logout")
    return db_session.scalar(uploaded())


def test_the_bureau_downloads_as_an_attachment(client, login, market, store, db_session):
    document = _uploaded(client, login, market, db_session)
    login(market.officer)
    response = client.get(f"/marketplace/documents/{document.id}")
    assert response.status_code == 200
    assert response.data == PDF
    assert response.mimetype == "application/pdf"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert "filename*=UTF-8''%E8%90%A5%E4%B8%9A%E6%89%A7%E7%85%A7%202025.pdf" in disposition
    queue = client.get("/marketplace/bureau/providers?show=active").get_data(as_text=True)
    assert f"/marketplace/documents/{document.id}" in queue


def test_only_the_providers_admins_and_the_bureau_may_download(
    client, login, market, store, db_session
):
    document = _uploaded(client, login, market, db_session)
    url = f"/marketplace/documents/{document.id}"
    login(market.home_admin)
    assert client.get(url).status_code == 200
    client.post("/logout")
    login(market.elder_user)
    assert client.get(url).status_code == 403
    client.post("/logout")
    login(market.station_admin)  # another provider's administrator: as if it did not exist
    assert client.get(url).status_code == 404
    assert client.get(f"/marketplace/documents/{document.id + 1000}").status_code == 404
    client.post("/logout")
    worker = market.factory.user("home.worker", roles=["provider_staff"])
    db_session.add(ProviderStaff(provider_id=market.home.id, user_id=worker.id))
    db_session.flush()
    login(worker)
    assert client.get(url).status_code == 403
    client.post("/logout")
    shenhe = market.factory.user("shenhe.officer", roles=["bureau_officer"], district=market.shenhe)
    login(shenhe)  # the home-service company is in 和平区
    assert client.get(url).status_code == 404
    client.post("/logout")
    auditor = market.factory.user("auditor.gao", roles=["auditor"])
    login(auditor)
    assert client.get(url).status_code == 200


def test_a_tampered_file_is_not_served(client, login, market, store, db_session):
    document = _uploaded(client, login, market, db_session)
    (store / document.stored_name).write_bytes(PDF.replace(b"Catalog", b"Katalog"))
    login(market.officer)
    assert client.get(f"/marketplace/documents/{document.id}").status_code == 404


def test_a_database_refusal_leaves_no_file(app_ctx, market, store, db_session, monkeypatch):
    taken = "ab" * 16
    db_session.add(
        ProviderDocument(
            provider_id=market.home.id,
            kind="other",
            original_filename="x.pdf",
            stored_name=taken,
            content_type="application/pdf",
            size_bytes=1,
            sha256="0" * 64,
        )
    )
    db_session.flush()
    # The random name clashes (as unlikely as that is): the row's flush fails first.
    monkeypatch.setattr(documents.secrets, "token_hex", lambda n: taken)
    with pytest.raises(sa.exc.IntegrityError):
        documents.store_document(
            market.home, kind="fire_safety", filename="a.pdf", data=PDF, actor=market.home_admin
        )
    assert stored_files(store) == []


def test_a_rolled_back_upload_removes_its_file(app_ctx, market, store, db_session):
    document = documents.store_document(
        market.home, kind="other", filename="a.png", data=png_bytes(), actor=market.home_admin
    )
    assert stored_files(store) == [document.stored_name]
    db_session.rollback()
    assert stored_files(store) == []


def test_a_committed_upload_stays(app_ctx, market, store, db_session):
    document = documents.store_document(
        market.home,
        kind="other",
        filename="a.jpg",
        data=b"\xff\xd8\xff\xe0" + b"\x00" * 64,
        actor=market.home_admin,
    )
    db_session.commit()
    db_session.rollback()  # a later unit of work's rollback must not touch it
    assert stored_files(store) == [document.stored_name]
    assert documents.read_document(document)[:3] == b"\xff\xd8\xff"
