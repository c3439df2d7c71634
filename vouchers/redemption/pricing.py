"""What the voucher pays and what the elder pays for one purchase, in fen.

Long-term-care insurance pays first; the voucher then pays the policy ratio of what is left
for the elder (the out-of-pocket part), rounded down to the fen and never more than the
voucher's remaining balance; the elder pays the rest. Rounding the subsidy down costs the
elder less than one fen against the exact ratio, and public money never pays a fraction of a
fen that the rule does not give.

A purchase may be several units of one service (ten meals, three hours of care): its price is
at most the quantity times the listed (or booked) unit price, and the split above applies to
that total, unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from flask_babel import lazy_gettext as _l

from eldercare.errors import InvalidInput
from eldercare.forms import yuan

MAX_PRICE_FEN = 5_000_000  # as in the marketplace's catalogue: 50,000 yuan catches typos
# Units in one purchase: three meals a day for a month is 93; more is a typo (a price typed
# into the quantity), and a larger purchase is split into several redemptions.
MAX_QUANTITY = 100
QUANTITY_PROBLEM = _l("Enter how many units, a whole number from 1 to %(most)s.", most=MAX_QUANTITY)


@dataclass(frozen=True)
class Split:
    price_fen: int
    insurance_fen: int
    out_of_pocket_fen: int
    subsidy_fen: int
    copay_fen: int
    ratio_bp: int
    quantity: int = 1


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


def split_units(
    quantity: int,
    unit_price_fen: int,
    price_fen: int,
    insurance_fen: int,
    *,
    ratio_bp: int,
    remaining_fen: int,
) -> Split:
    """``split`` of a purchase of ``quantity`` units whose listed price is ``unit_price_fen``
    each: the price may not exceed quantity x unit price. Refusals name their field."""
    if not _whole(quantity) or not 1 <= quantity <= MAX_QUANTITY:
        raise InvalidInput(details={"quantity": QUANTITY_PROBLEM})
    result = split(price_fen, insurance_fen, ratio_bp=ratio_bp, remaining_fen=remaining_fen)
    cap = quantity * unit_price_fen
    if price_fen > cap:
        if quantity == 1:
            message = _l(
                "The price is more than the listed price of %(listed)s.",
                listed=yuan(unit_price_fen),
            )
        else:
            message = _l(
                "The price is more than %(quantity)s × %(listed)s (the listed price), "
                "that is %(cap)s.",
                quantity=quantity,
                listed=yuan(unit_price_fen),
                cap=yuan(cap),
            )
        raise InvalidInput(details={"price": message})
    return replace(result, quantity=quantity)
