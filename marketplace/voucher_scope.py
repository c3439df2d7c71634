"""Which voucher kinds pay part of a category's services, and which kind an elder holds.

The voucher policy (in ``vouchers/``, which this package may not import) decides: it
registers a ``VoucherScopeSource`` here, and the badge, the "voucher accepted" filter and
the API ask it, so they say what a check-in accepts. Until one is registered the
programme's own categories count, as one kind of voucher.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import date

import sqlalchemy as sa
from flask import current_app
from flask_babel import lazy_gettext as _l

from eldercare.db import db
from marketplace.models import ServiceCategory

_EXTENSION = "marketplace.voucher_scope"
PROGRAMME = "programme"  # the one kind there is while no voucher policy is registered


@dataclass(frozen=True)
class VoucherScopeSource:
    # day -> {kind: the category codes a voucher of that kind pays for that day}; a kind
    # with no rule in force that day is left out.
    scope_on: Callable[[date], Mapping[str, frozenset[str]]]
    # (resident id, day) -> the kind of voucher the elder pays with that day.
    kind_held: Callable[[int, date], str | None]
    # kind -> its name, in the reader's language.
    label: Callable[[str], str]


def _programme_scope(day: date) -> dict[str, frozenset[str]]:
    codes = db.session.scalars(sa.select(ServiceCategory.code).where(ServiceCategory.programme))
    return {PROGRAMME: frozenset(codes)}


_PROGRAMME = VoucherScopeSource(
    scope_on=_programme_scope,
    kind_held=lambda resident_id, day: None,
    label=lambda kind: str(_l("Eldercare voucher")),
)


def register_voucher_scope(app, source: VoucherScopeSource) -> None:
    app.extensions[_EXTENSION] = source


def _source() -> VoucherScopeSource:
    return current_app.extensions.get(_EXTENSION, _PROGRAMME)


def scope_on(day: date) -> Mapping[str, frozenset[str]]:
    """{kind: category codes} for ``day``: ask once, then look up as many categories as a
    page shows (no statement per row)."""
    return _source().scope_on(day)


def kinds_paying(
    scope: Mapping[str, frozenset[str]], category_code: str, kinds: Collection[str] | None
) -> tuple[str, ...]:
    """The kinds (among ``kinds``; None: every kind) whose voucher pays for the category."""
    return tuple(
        kind
        for kind, codes in scope.items()
        if category_code in codes and (kinds is None or kind in kinds)
    )


def accepts_vouchers(
    category: ServiceCategory, day: date, kinds: Collection[str] | None = None
) -> bool:
    return bool(kinds_paying(scope_on(day), category.code, kinds))


def kinds_held(resident_ids: Collection[int], day: date) -> frozenset[str] | None:
    """The kinds the elders pay with on ``day``; None when any is unknown (then every kind
    counts, as for a visitor)."""
    source = _source()
    held = {source.kind_held(resident_id, day) for resident_id in resident_ids}
    if not held or None in held:
        return None
    return frozenset(held)


def kind_label(kind: str) -> str:
    return _source().label(kind)
