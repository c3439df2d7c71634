"""The unified social credit code (统一社会信用代码, GB 32100-2015).

18 characters from a 31-character alphabet (digits and capitals without I, O, S, V, Z):
registration authority (1), entity type (1), administrative division (6), the organisation
code of GB 11714 (9: eight body characters and its own check character), and a final
check character over the first 17 (weights 3^i mod 31).
"""

from __future__ import annotations

ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_VALUE = {ch: i for i, ch in enumerate(ALPHABET)}
_WEIGHTS = tuple(pow(3, i, 31) for i in range(17))  # 1, 3, 9, 27, 19, 26, 16, ...
_ORG_WEIGHTS = (3, 7, 9, 10, 5, 8, 4, 2)  # GB 11714 organisation code


def credit_code_check_character(first17: str) -> str:
    total = sum(_VALUE[ch] * w for ch, w in zip(first17, _WEIGHTS, strict=True))
    return ALPHABET[(31 - total % 31) % 31]


def organisation_code_check_character(body8: str) -> str:
    total = sum(_VALUE[ch] * w for ch, w in zip(body8, _ORG_WEIGHTS, strict=True))
    remainder = 11 - total % 11
    return {10: "X", 11: "0"}.get(remainder, str(remainder))


def credit_code_problem(code: str) -> str | None:
    """Which rule the code breaks ("format", "check_character"), or None if it is valid."""
    if not isinstance(code, str):
        return "format"
    code = code.strip().upper()
    if len(code) != 18 or any(ch not in _VALUE for ch in code):
        return "format"
    if not code[2:8].isdigit():
        return "format"  # the administrative division code is six digits
    if credit_code_check_character(code[:17]) != code[17]:
        return "check_character"
    return None


def is_valid_credit_code(code: str) -> bool:
    return credit_code_problem(code) is None


def compose_credit_code(prefix: str, division: str, organisation_body8: str) -> str:
    """Build a well-formed code (demo data and tests): 2-character prefix such as "52"
    (civil-affairs, social organisation) or "91" (industry and commerce, company)."""
    org = organisation_body8 + organisation_code_check_character(organisation_body8)
    first17 = prefix + division + org
    return first17 + credit_code_check_character(first17)
