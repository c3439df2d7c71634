"""Demo data of the marketplace."""


def build_demo() -> dict:
    return {}
