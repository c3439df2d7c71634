"""What the voucher pays and what the elder pays for one purchase, in fen.

Long-term-care insurance pays first; the voucher then pays the policy ratio of what is left
for the elder (the out-of-pocket part), rounded down to the fen and never more than the
voucher's remaining balance; the elder pays the rest. Rounding the subsidy down costs the
elder less than one fen against the exact ratio, and public money never pays a fraction of a
fen that the rule does not give.
"""

from __future__ import annotations

from dataclasses import dataclass

from flask_babel import lazy_gettext as _l

from eldercare.errors import InvalidInput

MAX_PRICE_FEN = 5_000_000  # as in the marketplace's catalogue: 50,000 yuan catches typos


@dataclass(frozen=True)
class Split:
    price_fen: int
    insurance_fen: int
    out_of_pocket_fen: int
    subsidy_fen: int
    copay_fen: int
    ratio_bp: int


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def split(price_fen: int, insurance_fen: int, *, ratio_bp: int, remaining_fen: int) -> Split:
    errors = {}
    if not _whole(price_fen) or not 0 < price_fen <= MAX_PRICE_FEN:
        errors["price"] = _l("Enter the price in yuan, more than 0 and at most 50,000.")
    if (
        not _whole(insurance_fen)
        or insurance_fen < 0
        or (_whole(price_fen) and insurance_fen > price_fen)
    ):
        errors["insurance"] = _l("The insurance part must be between 0 and the price.")
    if errors:
        raise InvalidInput(details=errors)
    if not _whole(ratio_bp) or not 0 < ratio_bp <= 10_000:
        raise ValueError(f"ratio out of range: {ratio_bp!r}")
    if not _whole(remaining_fen) or remaining_fen < 0:
        raise ValueError(f"remaining out of range: {remaining_fen!r}")
    out_of_pocket = price_fen - insurance_fen
    subsidy = min(out_of_pocket * ratio_bp // 10_000, remaining_fen)
    return Split(
        price_fen=price_fen,
        insurance_fen=insurance_fen,
        out_of_pocket_fen=out_of_pocket,
        subsidy_fen=subsidy,
        copay_fen=out_of_pocket - subsidy,
        ratio_bp=ratio_bp,
    )
