"""Whether a category's services can be paid partly with a voucher.

The voucher policy (in ``vouchers/``, which this package may not import) decides. It
registers a function here; until one is registered the programme's own categories count.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from flask import current_app

from marketplace.models import ServiceCategory

_EXTENSION = "marketplace.voucher_scope"
VoucherScope = Callable[[str, date], bool]  # (category code, day) -> covered?


def register_voucher_scope(app, scope: VoucherScope) -> None:
    app.extensions[_EXTENSION] = scope


def accepts_vouchers(category: ServiceCategory, day: date) -> bool:
    scope = current_app.extensions.get(_EXTENSION)
    return scope(category.code, day) if scope is not None else category.programme
