"""QR images read back with a real decoder (zxing-cpp), as a phone would; the A6 card; reading
uploaded photos and typed codes."""

import io
import re

import pytest
import zxingcpp
from flask_babel import force_locale
from PIL import Image

from eldercare.errors import InvalidInput
from tests.vouchers.helpers import give_voucher
from vouchers.redemption import cards, qr_images
from vouchers.redemption.qr_decode import decode_qr, is_card_reference, token_from_text
from vouchers.redemption.qr_tokens import make_token, qr_url

# Only QR codes, as the platform reads them (vouchers.redemption.qr_decode): a random module
# pattern can also pass for a 1-D barcode and add a second, false reading.
QR_ONLY = zxingcpp.BarcodeFormat.QRCode

BASE = "https://vouchers.example.cn"
_MODULE = re.compile(r"M(\d+),(\d+)")


@pytest.fixture
def public_url(app):
    app.config["PUBLIC_BASE_URL"] = BASE
    yield BASE
    del app.config["PUBLIC_BASE_URL"]


@pytest.fixture
def card(scheme, public_url, db_session):
    give_voucher(scheme.elder, scheme.today)
    scheme.card = cards.issue_card(scheme.elder.id, "583019", actor=scheme.son)
    return scheme


def _read(png: bytes) -> list[str]:
    image = Image.open(io.BytesIO(png))
    return [b.text for b in zxingcpp.read_barcodes(image, formats=QR_ONLY) if b.valid]


def _svg_modules(svg: str) -> set[tuple[int, int]]:
    path = re.search(r' d="([^"]+)"', svg).group(1)
    return {(int(x), int(y)) for x, y in _MODULE.findall(path)}


def _png_modules(png: bytes, box: int, count: int) -> set[tuple[int, int]]:
    image = Image.open(io.BytesIO(png)).convert("L")
    return {
        (x, y)
        for y in range(count)
        for x in range(count)
        if image.getpixel((x * box + box // 2, y * box + box // 2)) < 128
    }


def _rasterise(modules: set[tuple[int, int]], count: int, box: int = 8) -> bytes:
    image = Image.new("L", (count * box, count * box), 255)
    for x, y in modules:
        image.paste(0, (x * box, y * box, (x + 1) * box, (y + 1) * box))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_token_png_and_svg_decode_to_the_link(app_ctx, public_url):
    url = qr_url(make_token(1234))
    png = qr_images.qr_png(url, box_size=6)
    assert png.startswith(b"\x89PNG")
    assert _read(png) == [url]
    svg = qr_images.qr_svg(url)
    assert svg.startswith("<svg") and "</svg>" in svg
    count = len(qr_images.qr_matrix(url))
    svg_modules = _svg_modules(svg)
    # The SVG draws exactly the modules the PNG shows, and those read back as the link.
    assert svg_modules == _png_modules(png, 6, count)
    assert len(svg_modules) > 100
    assert _read(_rasterise(svg_modules, count)) == [url]
    # Another token, another picture.
    other = qr_url(make_token(1235))
    assert _svg_modules(qr_images.qr_svg(other)) != svg_modules


def test_card_png_is_a6_at_300_dpi_and_decodes(card, app_ctx):
    url = cards.card_url(card.card)
    png = qr_images.card_png(url, cards.card_number(card.card), card.elder.name, "2025-06")
    image = Image.open(io.BytesIO(png))
    assert image.size == (1240, 1748)
    assert abs(image.size[1] / image.size[0] - 148 / 105) < 0.005
    assert tuple(round(v) for v in image.info["dpi"]) == (300, 300)
    assert url == f"{BASE}/r/c{card.card.card_code}"
    assert _read(png) == [url]
    # Below the QR: the name, the month, the number and the PIN note, in black on white.
    text_band = image.convert("L").crop((0, 1200, 1240, 1748))
    dark = sum(text_band.histogram()[:128])
    assert 5_000 < dark < 0.2 * 1240 * 548


def test_card_png_prints_the_text_in_a_cjk_font(card, app_ctx):
    font = qr_images._font(40)
    assert "CJK" in font.getname()[0]
    # A CJK glyph drawn in the font is not the empty box of a missing glyph.
    assert font.getbbox("王")[2] > 20


def test_card_svg_is_a6_with_the_qr_and_the_masked_name(card, app_ctx):
    url = cards.card_url(card.card)
    # Given the full name, the card still prints it masked.
    svg = qr_images.card_svg(url, cards.card_number(card.card), card.elder.name, "2025年6月")
    assert 'width="105mm" height="148mm"' in svg
    assert card.elder.masked_name in svg and card.elder.name not in svg
    assert cards.card_number(card.card) in svg
    assert "2025年6月" in svg
    matrix = qr_images.qr_matrix(url, correction=qr_images.CARD_CORRECTION)
    expected = {(x, y) for y, row in enumerate(matrix) for x, dark in enumerate(row) if dark}
    modules = _svg_modules(svg)
    assert modules == expected
    assert _read(_rasterise(modules, len(matrix))) == [url]


def test_card_svg_escapes_what_it_prints(card, app_ctx):
    svg = qr_images.card_svg(cards.card_url(card.card), "0000 <b>", "<王*>&", None)
    assert "&lt;***" in svg and "<王" not in svg and "<b>" not in svg


def test_a_photo_of_a_code_is_read_on_the_server(app_ctx, public_url):
    url = qr_url(make_token(99))
    png = qr_images.qr_png(url, box_size=4)
    # A phone photo: bigger, in colour, the code off centre on a grey table, as JPEG.
    photo = Image.new("RGB", (900, 700), (180, 170, 160))
    photo.paste(Image.open(io.BytesIO(png)).convert("RGB"), (300, 150))
    buffer = io.BytesIO()
    photo.save(buffer, format="JPEG", quality=85)
    assert decode_qr(buffer.getvalue()) == url
    # A picture with no code in it: nothing, and no error.
    blank = io.BytesIO()
    Image.new("RGB", (200, 200), "white").save(blank, format="PNG")
    assert decode_qr(blank.getvalue()) is None


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 50, "text", None],
)
def test_what_is_not_a_picture_is_refused_clearly(app_ctx, data):
    with pytest.raises(InvalidInput) as caught:
        decode_qr(data)
    assert caught.value.code == "invalid_input" and set(caught.value.details) == {"photo"}
    with force_locale("en"):
        assert "Take the photo again" in str(caught.value.message)


def test_an_oversized_or_bomb_image_is_refused(app_ctx):
    with pytest.raises(InvalidInput):
        decode_qr(b"\xff" * (10 * 1024 * 1024 + 1))
    # 10,000 x 10,000 pixels of one colour compress to a few kilobytes.
    bomb = io.BytesIO()
    Image.new("1", (10_000, 10_000), 1).save(bomb, format="PNG")
    assert len(bomb.getvalue()) < 100_000
    with pytest.raises(InvalidInput):
        decode_qr(bomb.getvalue())


def test_token_from_text_takes_links_and_typed_codes(app_ctx, public_url):
    token = make_token(4321)
    assert token_from_text(qr_url(token)) == token
    assert token_from_text(f"{BASE}/r/{token}?from=camera#x") == token
    typed = "-".join(token[i : i + 4] for i in range(0, len(token), 4)).lower()
    assert token_from_text(f"  {typed} ") == token
    assert token_from_text(typed.replace("0", "o").replace("1", "I")) == token
    card_code = cards.new_card_code()
    for text in (
        f"{BASE}/r/c{card_code}",
        f"c{card_code.lower()}",
        " ".join(card_code[i : i + 4] for i in range(0, 16, 4)),
    ):
        found = token_from_text(text)
        assert found == "C" + card_code and is_card_reference(found)
    assert not is_card_reference(token)
    for junk in ("", "hello", "https://example.com/other/path", token[:-2], "Ü" * 23, None, 5):
        assert token_from_text(junk) is None
