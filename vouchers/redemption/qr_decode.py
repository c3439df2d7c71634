"""Reading a code the provider's phone could not read itself: a photo uploaded to the
server (decoded with zxing-cpp, as a phone would), or a code typed by hand."""

from __future__ import annotations

import io
import re
import warnings

import zxingcpp
from flask_babel import lazy_gettext as _l
from PIL import Image

from eldercare.errors import InvalidInput
from vouchers.redemption.cards import CARD_CODE_LENGTH, CARD_PREFIX
from vouchers.redemption.qr_tokens import is_token, normalise_code

MAX_PHOTO_BYTES = 10 * 1024 * 1024
# A 48-megapixel phone camera: anything bigger is not a photo of a code (or is a
# decompression bomb, a tiny file that unpacks into gigabytes).
MAX_PHOTO_PIXELS = 50_000_000
PHOTO_MESSAGE = _l(
    "The picture could not be read. Take the photo again with the whole code in view."
)

_PATH = re.compile(r"/r/([^/?#\s]+)")


def _unreadable() -> InvalidInput:
    return InvalidInput(PHOTO_MESSAGE, details={"photo": PHOTO_MESSAGE})


def decode_qr(image_bytes: bytes) -> str | None:
    """The text of the first QR code in the picture, or None when there is none."""
    if (
        not isinstance(image_bytes, bytes | bytearray)
        or not 0 < len(image_bytes) <= MAX_PHOTO_BYTES
    ):
        raise _unreadable()
    try:
        with warnings.catch_warnings():
            # Pillow warns (rather than refuses) between its two bomb limits; refuse both.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(bytes(image_bytes)))
            if image.width * image.height > MAX_PHOTO_PIXELS:
                raise _unreadable()
            image.load()
    except (
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as error:
        raise _unreadable() from error
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")  # palette, alpha, CMYK, 16-bit: what zxing takes
    for barcode in zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode):
        if barcode.valid and barcode.text:
            return barcode.text
    return None


def is_card_reference(code: str | None) -> bool:
    """Whether what ``token_from_text`` returned names a printed card (``C`` + its code)."""
    return code is not None and len(code) == CARD_CODE_LENGTH + 1 and code[0] == CARD_PREFIX


def token_from_text(text: str) -> str | None:
    """What a scanned or typed text names, normalised: a rotating token (23 characters), or a
    printed card as ``C`` + its 16-character code; None when it is neither.

    Accepts a whole link (``https://.../r/<token>`` or ``.../r/c<card code>``) or the code
    alone, typed in any case with spaces or dashes (and O/I/L for 0/1).
    """
    if not isinstance(text, str) or len(text) > 2048:
        return None
    text = text.strip()
    found = _PATH.findall(text)
    if found:
        text = found[-1]
    elif "/" in text or ":" in text:
        return None  # some other link: not one of ours
    code = normalise_code(text)
    if code is None:
        return None
    if is_token(code):
        return code
    if len(code) == CARD_CODE_LENGTH:  # the printed card number, typed without its prefix
        return CARD_PREFIX + code
    if len(code) == CARD_CODE_LENGTH + 1 and code[0] == CARD_PREFIX:
        return code
    return None
