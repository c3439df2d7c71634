"""QR images: the rotating code as PNG or SVG, and the printed card (A6) as PNG or SVG.

Error correction M (15%) for the codes on a screen; Q (25%) for the card, which lives in a
wallet and gets scratched and bent. The card is drawn at 300 dpi, the least a print shop
accepts, in the CJK font Debian ships (fonts-noto-cjk; scripts/system-deps.sh installs it),
or Pillow's own font when that is missing (the Chinese then prints as boxes, so the test
machines have it).
"""

from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import qrcode
import qrcode.constants
import qrcode.image.svg
from flask_babel import gettext as _
from PIL import Image, ImageDraw, ImageFont

from eldercare.residents import mask_name

SCREEN_CORRECTION = qrcode.constants.ERROR_CORRECT_M
CARD_CORRECTION = qrcode.constants.ERROR_CORRECT_Q
QUIET_ZONE = 4  # modules of white around the code, as the standard asks

# A6 portrait, 105 x 148 mm, at 300 dpi.
A6_MM = (105, 148)
DPI = 300
A6_PX = (round(A6_MM[0] / 25.4 * DPI), round(A6_MM[1] / 25.4 * DPI))  # 1240 x 1748

_FONT_CANDIDATES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-{weight}.ttc",
    "/usr/share/fonts/opentype/noto-cjk/NotoSansCJK-{weight}.ttc",
    "/usr/share/fonts/truetype/noto/NotoSansCJK-{weight}.ttc",
)
_SVG_FONTS = "'Noto Sans CJK SC', 'Noto Sans SC', 'Source Han Sans SC', sans-serif"


def _qr(data: str, correction: int) -> qrcode.QRCode:
    code = qrcode.QRCode(error_correction=correction, border=QUIET_ZONE)
    code.add_data(data)
    code.make(fit=True)
    return code


def qr_matrix(data: str, *, correction: int = SCREEN_CORRECTION) -> list[list[bool]]:
    """The modules, quiet zone included: True is dark."""
    return _qr(data, correction).get_matrix()


def qr_png(url: str, *, box_size: int = 10, correction: int = SCREEN_CORRECTION) -> bytes:
    code = _qr(url, correction)
    code.box_size = box_size
    image = code.make_image(fill_color="black", back_color="white")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def qr_svg(url: str, *, correction: int = SCREEN_CORRECTION) -> str:
    """One path, sized in millimetres by qrcode (one module = 1 mm; scale it with CSS)."""
    code = _qr(url, correction)
    image = code.make_image(image_factory=qrcode.image.svg.SvgPathImage)
    return image.to_string(encoding="unicode")


# -- the printed card ----------------------------------------------------------------------


@lru_cache(maxsize=16)
def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    weight = "Bold" if bold else "Regular"
    candidates = [Path(p.format(weight=weight)) for p in _FONT_CANDIDATES]
    candidates += sorted(Path("/usr/share/fonts").glob(f"**/NotoSansCJK*-{weight}.tt[cf]"))
    for path in candidates:
        if path.is_file():
            # A .ttc holds the JP, KR, SC, TC and HK faces; pick the simplified Chinese one.
            for index in range(10):
                try:
                    font = ImageFont.truetype(str(path), size, index=index)
                except OSError:
                    break
                if font.getname()[0].endswith("SC"):
                    return font
            return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size=size)


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int) -> list[str]:
    """Greedy line breaking: between words for English, between characters for Chinese."""
    pieces = text.split(" ") if " " in text else list(text)
    joiner = " " if " " in text else ""
    lines, line = [], ""
    for piece in pieces:
        candidate = f"{line}{joiner}{piece}" if line else piece
        if line and draw.textlength(candidate, font=font) > width:
            lines.append(line)
            line = piece
        else:
            line = candidate
    if line:
        lines.append(line)
    return lines


def _card_texts(url: str, number: str, name: str, month_text: str | None) -> dict:
    return {
        "url": url,
        "title": _("Elderly care service voucher card"),
        # Masked here whatever the caller passes: a lost card must not name its owner.
        # (Masking is idempotent: 王** stays 王**.)
        "name": mask_name(name),
        "month": month_text or "",
        "number_label": _("Card number"),
        "number": number,
        "pin_note": _(
            "The service provider scans this code; the elder then types the 6-digit PIN on "
            "the provider's phone. Never write the PIN on this card."
        ),
    }


def card_png(url: str, number: str, name: str, month_text: str | None = None) -> bytes:
    """The A6 card at 300 dpi: title, the QR of ``url`` (``cards.card_url``) large, the
    elder's masked name, the card number (``cards.card_number``), and what the provider
    needs (the PIN)."""
    texts = _card_texts(url, number, name, month_text)
    width, height = A6_PX
    margin = 90
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)

    y = 70
    title = _font(60, bold=True)
    for line in _wrap(draw, texts["title"], title, width - 2 * margin):
        draw.text((width / 2, y), line, font=title, fill=0, anchor="mt")
        y += 78
    y += 10

    matrix = qr_matrix(texts["url"], correction=CARD_CORRECTION)
    # At most 1000 px (85 mm) across, so the lines below still fit with a long address.
    box = min(width - 2 * margin, 1000) // len(matrix)
    side = box * len(matrix)
    left = (width - side) // 2
    for row, cells in enumerate(matrix):
        for col, dark in enumerate(cells):
            if dark:
                x0, y0 = left + col * box, y + row * box
                draw.rectangle((x0, y0, x0 + box - 1, y0 + box - 1), fill=0)
    y += side + 20

    draw.text((width / 2, y), texts["name"], font=_font(72, bold=True), fill=0, anchor="mt")
    y += 100
    if texts["month"]:
        draw.text((width / 2, y), texts["month"], font=_font(40), fill=0, anchor="mt")
        y += 60
    label = f"{texts['number_label']}: {texts['number']}"
    draw.text((width / 2, y), label, font=_font(48), fill=0, anchor="mt")
    y += 80
    note = _font(38)
    for line in _wrap(draw, texts["pin_note"], note, width - 2 * margin):
        draw.text((width / 2, y), line, font=note, fill=0, anchor="mt")
        y += 52

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", dpi=(DPI, DPI))
    return buffer.getvalue()


def card_svg(url: str, number: str, name: str, month_text: str | None = None) -> str:
    """The same card as SVG, 105 x 148 mm, for print shops that want vectors. Units are
    tenths of a millimetre; the QR is one path in a group scaled to its module size."""
    texts = _card_texts(url, number, name, month_text)
    width, height = A6_MM[0] * 10, A6_MM[1] * 10
    matrix = qr_matrix(texts["url"], correction=CARD_CORRECTION)
    side = 870  # 87 mm across, quiet zone included
    module = side / len(matrix)
    left, top = (width - side) / 2, 130
    path = "".join(
        f"M{col},{row}h1v1h-1z"
        for row, cells in enumerate(matrix)
        for col, dark in enumerate(cells)
        if dark
    )

    def text(y, value, size, weight="normal"):
        return (
            f'<text x="{width / 2:g}" y="{y:g}" font-size="{size}" font-weight="{weight}" '
            f'text-anchor="middle">{escape(value)}</text>'
        )

    y = top + side
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{A6_MM[0]}mm" height="{A6_MM[1]}mm" '
        f'viewBox="0 0 {width} {height}" font-family={quoteattr(_SVG_FONTS)}>',
        f'<rect width="{width}" height="{height}" fill="#fff"/>',
        text(90, texts["title"], 50, "bold"),
        f'<g id="qr" transform="translate({left:g},{top:g}) scale({module:g})">'
        f'<path fill="#000" d="{path}"/></g>',
        text(y + 60, texts["name"], 60, "bold"),
    ]
    y += 60
    if texts["month"]:
        y += 50
        parts.append(text(y, texts["month"], 34))
    y += 70
    parts.append(text(y, f"{texts['number_label']}: {texts['number']}", 40))
    # SVG 1.1 does not wrap text: the note goes on the lines Pillow would break it into.
    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    for line in _wrap(probe, texts["pin_note"], _font(32), width - 150):
        y += 46
        parts.append(text(y, line, 32))
    parts.append("</svg>")
    return "\n".join(parts)
