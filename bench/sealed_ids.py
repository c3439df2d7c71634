"""The benches' elders' ID numbers as the residents table stores them (eldercare/pii.py):
ciphertexts and lookup hashes computed here, handed to one set-based INSERT as the arrays
``:sealed``, ``:hashes`` and ``:tails`` (unnest ... WITH ORDINALITY gives the row number)."""

from __future__ import annotations

from eldercare.pii import keyring


def sealed_ids(n: int) -> dict:
    """The arrays for made-up numbers 21000...0001 onwards, as stored."""
    keys = keyring()
    numbers = [f"21{g:016d}" for g in range(1, n + 1)]
    return {
        "sealed": [keys.encrypt(x, "residents.id_number") for x in numbers],
        "hashes": [keys.lookup_hash("id_number", x) for x in numbers],
        "tails": [keys.lookup_hash("id_number_tail", x) for x in numbers],
    }
