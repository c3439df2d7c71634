import pytest
from hypothesis import given
from hypothesis import strategies as st

from eldercare.credit_codes import ALPHABET, compose_credit_code, credit_code_problem
from marketplace import is_valid_credit_code

# Codes printed on real business licences (public registers).
REAL = ["91350100M000100Y43", "91110000600037341L", "91440300708461136T"]


@pytest.mark.parametrize("code", REAL)
def test_real_codes_are_valid(code):
    assert is_valid_credit_code(code)
    assert is_valid_credit_code(code.lower())


@pytest.mark.parametrize(
    "code, problem",
    [
        ("91350100M000100Y44", "check_character"),
        ("91110000600037341K", "check_character"),
        ("91350100M000100Y4", "format"),  # 17 characters
        ("91350100M000100I43", "format"),  # I is not in the alphabet
        ("913501O0M000100Y43", "format"),  # letter O in the division code
        ("", "format"),
    ],
)
def test_invalid_codes_name_the_rule(code, problem):
    assert not is_valid_credit_code(code)
    assert credit_code_problem(code) == problem


@given(
    prefix=st.sampled_from(["91", "52", "12", "53"]),
    division=st.sampled_from(["210102", "210103", "210112"]),
    body=st.text(alphabet=ALPHABET, min_size=8, max_size=8),
)
def test_composed_codes_are_valid_and_any_single_change_is_caught(prefix, division, body):
    code = compose_credit_code(prefix, division, body)
    assert is_valid_credit_code(code)
    for position in range(17):
        for replacement in (ALPHABET[(ALPHABET.index(code[position]) + 1) % 31],):
            typo = code[:position] + replacement + code[position + 1 :]
            assert not is_valid_credit_code(typo)
