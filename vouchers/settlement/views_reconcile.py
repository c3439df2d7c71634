"""(being written)"""

DESTINATIONS: list = []
