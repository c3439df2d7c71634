"""Generated stand-ins for a provider's certification documents, for the demo and the tests.

Each is a real one-page PDF (it opens in a viewer and passes the upload checks), stored
through ``documents.store_document`` exactly as an upload is, so it has its row, its file
under ``DOCUMENT_STORE`` and its audit row. The page says plainly that it is a sample.
"""

from __future__ import annotations

from eldercare.accounts import User
from marketplace import documents
from marketplace.models import Provider, ProviderDocument


def _pdf_text(line: str) -> str:
    # The standard Helvetica font has no CJK glyphs: keep the page ASCII, escape what PDF
    # string syntax reserves.
    ascii_line = line.encode("ascii", "replace").decode("ascii")
    return ascii_line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def sample_pdf(*lines: str) -> bytes:
    """A valid single-page A4 PDF showing ``lines`` (ASCII), with a correct xref table."""
    text = "\n".join(
        f"BT /F1 14 Tf 60 {780 - 24 * n} Td ({_pdf_text(line)}) Tj ET"
        for n, line in enumerate(lines)
    ).encode("ascii")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d >>\nstream\n" % len(text) + text + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def give_required_documents(provider: Provider, *, uploader: User) -> list[ProviderDocument]:
    """Store a sample of each document the provider's type requires and it lacks."""
    return [
        documents.store_document(
            provider,
            kind=kind,
            filename=f"{kind}.pdf",
            data=sample_pdf(
                "SAMPLE - demonstration document, not a real certificate",
                f"Kind: {kind}",
                f"Unified social credit code: {provider.credit_code}",
            ),
            actor=uploader,
        )
        for kind in documents.missing_kinds(provider)
    ]
