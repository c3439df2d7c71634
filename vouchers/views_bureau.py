"""(being written)"""

from vouchers.views import bp  # noqa: F401

DESTINATIONS: list = []
