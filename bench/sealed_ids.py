"""The benches' elders' ID numbers as the residents table stores them (eldercare/pii.py):
ciphertexts and lookup hashes computed here, handed to one set-based INSERT as the arrays
``:sealed``, ``:hashes`` and ``:tails`` (unnest ... WITH ORDINALITY gives the row number),
or row by row to a COPY (``sealed_resident``, bench/pii.py: a million at a time)."""

from __future__ import annotations

from eldercare.pii import KeyRing, keyring


def number(g: int) -> str:
    """The made-up ID number of elder ``g`` (1 onwards): 21000...0001."""
    return f"21{g:016d}"


def phone(g: int) -> str:
    return f"138{g:08d}"


def sealed_ids(n: int) -> dict:
    """The arrays for made-up numbers 21000...0001 onwards, as stored."""
    keys = keyring()
    numbers = [number(g) for g in range(1, n + 1)]
    return {
        "sealed": [keys.encrypt(x, "residents.id_number") for x in numbers],
        "hashes": [keys.lookup_hash("id_number", x) for x in numbers],
        "tails": [keys.lookup_hash("id_number_tail", x) for x in numbers],
    }


def sealed_resident(keys: KeyRing, g: int) -> tuple[str, str, str, str]:
    """Elder ``g``'s ID number sealed, its two hashes and the phone sealed, as stored."""
    x = number(g)
    return (
        keys.encrypt(x, "residents.id_number"),
        keys.lookup_hash("id_number", x),
        keys.lookup_hash("id_number_tail", x),
        keys.encrypt(phone(g), "residents.phone"),
    )
