"""The split of a price between insurance, the voucher and the elder, in fen."""

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eldercare.errors import InvalidInput
from vouchers.redemption.pricing import MAX_PRICE_FEN, MAX_QUANTITY, split, split_units

# price, insurance, ratio, remaining -> subsidy, co-payment
TABLE = [
    (10_000, 0, 4000, 50_000, 4000, 6000),  # 40%: ¥100 -> ¥40 from the voucher
    (10_000, 0, 5000, 50_000, 5000, 5000),  # the 2026 home ratio, 50%
    (10_000, 6000, 4000, 50_000, 1600, 2400),  # insurance first: 40% of the ¥40 left
    (125_000, 0, 4000, 50_000, 50_000, 75_000),  # exactly at the cap
    (125_001, 0, 4000, 50_000, 50_000, 75_001),  # one fen over: the cap holds
    (124_999, 0, 4000, 50_000, 49_999, 75_000),  # one fen under: floor(49,999.6)
    (1, 0, 4000, 50_000, 0, 1),  # 0.4 fen rounds down, the elder pays one fen
    (3, 0, 5000, 50_000, 1, 2),
    (1500, 0, 4000, 250, 250, 1250),  # a nearly used-up voucher
    (1500, 0, 4000, 0, 0, 1500),
    (200_000, 0, 4000, 80_000, 80_000, 120_000),  # institutional cap ¥800
]


@pytest.mark.parametrize("price,insurance,ratio,remaining,subsidy,copay", TABLE)
def test_pricing_table(price, insurance, ratio, remaining, subsidy, copay):
    result = split(price, insurance, ratio_bp=ratio, remaining_fen=remaining)
    assert (result.subsidy_fen, result.copay_fen) == (subsidy, copay)
    assert result.out_of_pocket_fen == price - insurance


@given(
    price=st.integers(1, 5_000_000),
    insurance_share=st.fractions(0, 1),
    ratio=st.integers(1, 10_000),
    remaining=st.integers(0, 100_000),
)
def test_split_properties(price, insurance_share, ratio, remaining):
    insurance = int(price * insurance_share)
    result = split(price, insurance, ratio_bp=ratio, remaining_fen=remaining)
    assert result.insurance_fen + result.subsidy_fen + result.copay_fen == price
    assert 0 <= result.subsidy_fen <= remaining
    exact = Fraction(price - insurance) * ratio / 10_000
    assert result.subsidy_fen <= exact  # public money never pays more than the rule gives
    if exact <= remaining:
        # Rounding is never against the elder by a fen or more.
        assert exact - result.subsidy_fen < 1


@pytest.mark.parametrize(
    "price,insurance",
    [(0, 0), (-1, 0), (100, -1), (100, 101), (1.5, 0), ("100", 0), (True, 0), (5_000_001, 0)],
)
def test_bad_amounts_are_refused(price, insurance):
    with pytest.raises(InvalidInput):
        split(price, insurance, ratio_bp=4000, remaining_fen=50_000)


# --- a quantity of units at the listed unit price (issue 10 item 12) -----------------------


@given(
    quantity=st.integers(1, MAX_QUANTITY),
    unit=st.integers(1, 200_000),
    price_share=st.fractions(0, 1),
    insurance_share=st.fractions(0, 1),
    ratio=st.integers(1, 10_000),
    remaining=st.integers(0, 100_000),
)
def test_units_cap_the_price_and_keep_the_split(
    quantity, unit, price_share, insurance_share, ratio, remaining
):
    cap = quantity * unit
    price = max(1, int(cap * price_share))
    insurance = int(price * insurance_share)
    if price > MAX_PRICE_FEN:
        with pytest.raises(InvalidInput):
            split_units(quantity, unit, price, insurance, ratio_bp=ratio, remaining_fen=remaining)
        return
    result = split_units(quantity, unit, price, insurance, ratio_bp=ratio, remaining_fen=remaining)
    # The split of the total is the split rule's, unchanged.
    plain = split(price, insurance, ratio_bp=ratio, remaining_fen=remaining)
    assert (result.subsidy_fen, result.copay_fen, result.insurance_fen) == (
        plain.subsidy_fen,
        plain.copay_fen,
        plain.insurance_fen,
    )
    assert result.quantity == quantity
    assert result.insurance_fen + result.subsidy_fen + result.copay_fen == price <= cap


@given(
    quantity=st.integers(1, MAX_QUANTITY),
    unit=st.integers(1, 50_000),
    over=st.integers(1, 10_000),
)
def test_a_price_over_quantity_times_the_unit_price_is_refused(quantity, unit, over):
    price = quantity * unit + over
    with pytest.raises(InvalidInput) as refused:
        split_units(quantity, unit, price, 0, ratio_bp=4000, remaining_fen=50_000)
    assert set(refused.value.details) == {"price"}


@pytest.mark.parametrize("quantity", [0, -1, MAX_QUANTITY + 1, 1.5, "2", True, None])
def test_bad_quantities_are_refused(quantity):
    with pytest.raises(InvalidInput) as refused:
        split_units(quantity, 1500, 1500, 0, ratio_bp=4000, remaining_fen=50_000)
    assert "quantity" in refused.value.details
