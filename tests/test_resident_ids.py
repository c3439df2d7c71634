from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eldercare import is_valid_resident_id
from eldercare.residents import (
    InvalidResidentId,
    compose_resident_id,
    mask_name,
    mask_resident_id,
    parse_resident_id,
)

# The worked examples of GB 11643-1999 and a Shenyang number built by hand:
# 21010219440312122: weighted sum 150, 150 % 11 = 7 -> check character "5".
VALID = ["11010519491231002X", "440524188001010014", "210102194403121225"]


@pytest.mark.parametrize("number", VALID)
def test_valid_numbers(number):
    assert is_valid_resident_id(number)


def test_lowercase_x_is_accepted_and_normalised():
    assert is_valid_resident_id("11010519491231002x")
    assert parse_resident_id("11010519491231002x").number == "11010519491231002X"


@pytest.mark.parametrize(
    "number, reason",
    [
        ("110105194912310021", "check_character"),  # should end in X
        ("440524188001010015", "check_character"),
        ("110105194902300028", "birth_date"),  # 30 February
        ("110105194913010020", "birth_date"),  # month 13
        ("110105209901010020", "birth_date"),  # born in the future
        ("11010519491231002", "format"),  # 17 characters
        ("1101051949123100AX", "format"),
        ("010105194912310020", "region"),
        ("", "format"),
    ],
)
def test_invalid_numbers_name_the_rule_they_break(number, reason):
    assert not is_valid_resident_id(number)
    with pytest.raises(InvalidResidentId) as excinfo:
        parse_resident_id(number)
    assert excinfo.value.reason == reason


def test_decodes_birth_date_and_sex():
    info = parse_resident_id("11010519491231002X")
    assert info.birth_date == date(1949, 12, 31)
    assert info.sex == "female"  # 17th digit 2 is even
    assert parse_resident_id("440524188001010014").sex == "male"


@given(
    region=st.sampled_from(["210102", "210103", "110105", "440524"]),
    birth=st.dates(min_value=date(1900, 1, 1), max_value=date(2020, 12, 31)),
    sequence=st.integers(min_value=0, max_value=999),
)
def test_composed_numbers_are_valid(region, birth, sequence):
    number = compose_resident_id(region, birth, sequence)
    assert is_valid_resident_id(number)
    assert parse_resident_id(number).birth_date == birth


@given(
    birth=st.dates(min_value=date(1920, 1, 1), max_value=date(2010, 12, 31)),
    sequence=st.integers(min_value=0, max_value=999),
    position=st.integers(min_value=0, max_value=16),
    delta=st.integers(min_value=1, max_value=9),
)
def test_any_single_digit_typo_is_caught(birth, sequence, position, delta):
    number = compose_resident_id("210102", birth, sequence)
    typo = str((int(number[position]) + delta) % 10)
    mistyped = number[:position] + typo + number[position + 1 :]
    assert not is_valid_resident_id(mistyped)


def test_masking_keeps_only_what_tells_people_apart():
    assert mask_resident_id("21010219440312122X") == "2101**********122X"
    assert mask_name("王秀英") == "王**"
    assert mask_name("李") == "李"
