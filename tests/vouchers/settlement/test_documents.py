"""The statement as PDF and XLSX: read back with pypdf and openpyxl, the font embedded, the
QR decoded with zxing-cpp and opened."""

from __future__ import annotations

import io
import re
from decimal import Decimal

import pytest
import zxingcpp
from openpyxl import load_workbook
from PIL import Image
from pypdf import PdfReader

from tests.vouchers.settlement.conftest import spend
from tests.vouchers.settlement.doc_builders import bulk_redemptions, make_statement
from vouchers.settlement.documents import documents
from vouchers.settlement.documents import facts as statement_facts
from vouchers.settlement.documents.statement_xlsx import statement_xlsx

# Only QR codes, as the platform reads them (vouchers.redemption.qr_decode): a random module
# pattern can also pass for a 1-D barcode and add a second, false reading.
QR_ONLY = zxingcpp.BarcodeFormat.QRCode

BASE = "https://yanglao.example.gov.cn"


@pytest.fixture
def public_url(app):
    before = app.config.get("PUBLIC_BASE_URL")
    app.config["PUBLIC_BASE_URL"] = BASE
    yield BASE
    app.config["PUBLIC_BASE_URL"] = before


@pytest.fixture
def statement(shop, bureau, public_url):
    redemptions = [spend(shop, 1500), spend(shop, 1200), spend(shop, 800)]
    return make_statement(
        shop.market.station,
        redemptions,
        status="approved",
        preparer=bureau.officer,
        approver=bureau.approver,
    )


def _text(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


def _fonts(pdf: bytes) -> list[dict]:
    """Every font of every page: its base name and its descriptor's embedded file kinds."""
    found = []
    for page in PdfReader(io.BytesIO(pdf)).pages:
        for font in page["/Resources"]["/Font"].values():
            font = font.get_object()
            descendants = font.get("/DescendantFonts")
            target = descendants[0].get_object() if descendants else font
            descriptor = target.get("/FontDescriptor")
            descriptor = descriptor.get_object() if descriptor else {}
            found.append(
                {
                    "base": str(font["/BaseFont"]),
                    "files": [
                        k for k in ("/FontFile", "/FontFile2", "/FontFile3") if k in descriptor
                    ],
                    "bytes": len(descriptor["/FontFile2"].get_object().get_data())
                    if "/FontFile2" in descriptor
                    else 0,
                }
            )
    return found


def test_pdf_names_the_provider_the_month_and_the_total(statement, shop):
    pdf = documents.statement_pdf(statement)
    assert pdf.startswith(b"%PDF")
    text = _text(pdf)
    assert "南湖社区养老服务站" in text
    assert f"{statement.month:%Y-%m}" in text
    assert statement.payable_fen == statement.subsidy_fen > 0
    assert f"¥ {statement.payable_fen / 100:,.2f}" in text
    assert "养老服务补贴结算单" in text
    assert statement_facts.statement_number(statement) in text
    # The payee's account shows its last four digits only.
    assert "************2222" in text
    assert "6222000011112222" not in text
    # The elder's name is masked on the lines.
    assert shop.elder.name not in text
    assert shop.elder.name[0] + "*" * (len(shop.elder.name) - 1) in text
    # The approval trail names the preparer and the approver.
    assert bureau_names(statement) <= set(re.findall(r"settle\.\w+", text))
    assert statement.lines_hash[:32] in text


def bureau_names(statement) -> set[str]:
    from eldercare.accounts import User
    from eldercare.db import db

    return {
        db.session.get(User, statement.prepared_by_user_id).display_name,
        db.session.get(User, statement.approved_by_user_id).display_name,
    }


def test_the_chinese_font_is_embedded_not_only_named(statement):
    fonts = _fonts(documents.statement_pdf(statement))
    assert fonts
    for font in fonts:
        assert "WenQuanYiMicroHei" in font["base"]  # the subset (AAAAAA+...) of the TTC face
        assert font["files"] == ["/FontFile2"], font  # a TrueType program in the file
        assert font["bytes"] > 1000
    assert not any("STSong" in f["base"] for f in fonts)


def _decode(png: bytes) -> list[str]:
    return [
        b.text
        for b in zxingcpp.read_barcodes(Image.open(io.BytesIO(png)), formats=QR_ONLY)
        if b.valid
    ]


def test_the_pdf_qr_opens_the_verification_page(statement, client):
    pdf = documents.statement_pdf(statement)
    # The QR image is read back out of the PDF itself and decoded as a phone would.
    images = [image for page in PdfReader(io.BytesIO(pdf)).pages[:1] for image in page.images]
    assert len(images) == 1
    buffer = io.BytesIO()
    images[0].image.save(buffer, format="PNG")
    [url] = _decode(buffer.getvalue())
    assert url == statement_facts.verify_url(statement)
    assert url.startswith(f"{BASE}/settlement/verify/")
    assert str(statement.id) not in url.rsplit("/", 1)[1]  # the id is not in the clear

    page = client.get(url.removeprefix(BASE), headers={"Accept-Language": "en"})
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert statement.lines_hash in html
    assert 'data-match="yes"' in html
    assert "Approved, awaiting payment" in html
    assert "南湖社区养老服务站" in html


def test_a_large_statement_builds(shop, bureau, public_url):
    redemptions = bulk_redemptions(shop, 3000)
    statement = make_statement(
        shop.market.station, redemptions, preparer=bureau.officer, approver=bureau.approver
    )
    pdf = documents.statement_pdf(statement)
    reader = PdfReader(io.BytesIO(pdf))
    per_page = documents._rows_per_page()
    assert len(reader.pages) == 1 + -(-3000 // per_page)
    last = reader.pages[-1].extract_text()
    assert str(redemptions[-1].id) in last
    assert "合计" in last and f"{3000 * 5:,}.00" in last  # the subsidy total, 3,000 x 5 yuan
    # Every lines page repeats the header.
    assert all("兑付编号" in p.extract_text() for p in reader.pages[1:])

    book = load_workbook(io.BytesIO(b"".join(statement_xlsx(statement))), read_only=True)
    rows = list(book.active.iter_rows(values_only=True))
    ids = [r[0] for r in rows if r and isinstance(r[0], int)]
    assert ids == [r.id for r in redemptions]


def test_xlsx_has_the_totals_at_the_top_a_header_and_money_as_numbers(shop, bureau, public_url):
    redemptions = [spend(shop, 1500), spend(shop, 1250)]
    statement = make_statement(
        shop.market.station,
        redemptions,
        preparer=bureau.officer,
        approver=bureau.approver,
        card=True,
    )
    book = load_workbook(io.BytesIO(b"".join(statement_xlsx(statement))))
    sheet = book.active
    assert sheet.title == f"{statement.month:%Y-%m}"
    rows = [[c for c in row] for row in sheet.iter_rows()]
    facts = {row[0].value: row[1] for row in rows if len(row) > 1 and row[0].value}
    assert facts["服务商 Provider"].value == "南湖社区养老服务站"
    assert facts["结算月份 Month"].value == f"{statement.month:%Y-%m}"
    assert facts["银行账号 Account"].value == "************2222"
    paid = facts["应支付金额 To be paid"]
    assert paid.value == pytest.approx(statement.payable_fen / 100)
    assert paid.number_format == "#,##0.00"
    # Card co-payments collected for the provider are added to what it is paid.
    assert statement.card_copay_fen == sum(r.copay_fen for r in redemptions) > 0
    assert statement.payable_fen == statement.subsidy_fen + statement.card_copay_fen
    assert facts["明细哈希 Hash of the lines"].value == statement.lines_hash

    header_at = next(
        i for i, row in enumerate(rows) if row and row[0].value == "兑付编号 Redemption"
    )
    assert header_at > 10  # the facts and totals come first
    lines = rows[header_at + 1 :]
    assert [row[0].value for row in lines] == [r.id for r in redemptions]
    first = lines[0]
    assert Decimal(str(first[7].value)) == Decimal("15.00")  # price in yuan, a number
    assert Decimal(str(first[9].value)) == Decimal(redemptions[0].subsidy_fen) / 100
    assert first[9].number_format == "#,##0.00"
    assert first[2].value == shop.elder.name[0] + "*" * (len(shop.elder.name) - 1)
    assert first[11].value == "银行卡 card"


def test_the_printed_qr_decodes_to_the_verification_link(statement):
    [url] = _decode(documents.verification_qr_png(statement))
    assert url == statement_facts.verify_url(statement)
    token = url.rsplit("/", 1)[1]
    assert statement_facts.statement_id_from_token(token) == statement.id
