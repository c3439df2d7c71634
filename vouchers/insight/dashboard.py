"""The bureau dashboard's tables: one definition each, read by the page, its CSV/XLSX
downloads and the API, so the three always show the same figures.

A table is a name (in the URLs), a title, its columns (key, heading, kind) and the
``figures`` function computing its rows for a scope (``district_id``, None: the city) and
a month. Kinds: ``text``, ``count``, ``fen`` (money: integer fen in the API, yuan with two
decimals in a download, the project's ``yuan`` on the page) and ``bp`` (a share in basis
points: a percentage with one decimal in a download and on the page).

``read_month`` and ``read_district`` turn the query string into a month and a district in
the reader's scope: a bad month is ``InvalidInput`` (changing nothing), another district's
id is ``NotFound`` for district staff, as everywhere.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from flask_babel import lazy_gettext as _l

from eldercare.db import db
from eldercare.errors import InvalidInput, NotFound
from eldercare.forms import whole_number
from eldercare.residents import District
from eldercare.timeutil import local_today
from vouchers.insight import figures

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
BAD_MONTH = _l("Give the month as year and month, for example 2026-11.")
BAD_DISTRICT = _l("Choose a district from the list.")


@dataclass(frozen=True)
class Column:
    key: str
    heading: object  # a lazy string
    kind: str = "count"  # text, count, fen, bp


@dataclass(frozen=True)
class Table:
    name: str
    title: object
    columns: tuple[Column, ...]
    rows: Callable[[int | None, date, str], list[dict]]
    # The months it covers: the twelve up to the chosen one, or the chosen one only.
    over_a_year: bool = False


def _monthly(district_id, month, locale):
    return figures.by_month(district_id, figures.months_ending(month))


def _burn_down(district_id, month, locale):
    return figures.burn_down(district_id, figures.months_ending(month))


def _providers(district_id, month, locale):
    return figures.by_provider(district_id, month)


def _flags(district_id, month, locale):
    return figures.open_flags(district_id, month)


# Columns several tables have, defined once so that they read the same in all of them.
MONTH_COLUMN = Column("month", _l("Month"), "text")
DISTRICT_COLUMNS = (
    Column("district", _l("District code"), "text"),
    Column("name", _l("District"), "text"),
)
USED_COLUMN = Column("used", _l("Redemptions"))
SUBSIDY_COLUMN = Column("subsidy_fen", _l("Voucher subsidy used"), "fen")
TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table(
            "monthly",
            _l("Vouchers issued, used and expired by month"),
            (
                MONTH_COLUMN,
                Column("issued", _l("Vouchers issued")),
                Column("issued_fen", _l("Face value issued"), "fen"),
                USED_COLUMN,
                Column("used_fen", _l("Voucher subsidy used"), "fen"),
                Column("expired", _l("Vouchers expired")),
                Column("returned_fen", _l("Returned at expiry"), "fen"),
            ),
            _monthly,
            over_a_year=True,
        ),
        Table(
            "burn_down",
            _l("Pool burn-down at each month's end"),
            (
                MONTH_COLUMN,
                Column("funded_fen", _l("Funded to date"), "fen"),
                Column("spent_fen", _l("Spent to date"), "fen"),
                Column("left_fen", _l("Left"), "fen"),
            ),
            _burn_down,
            over_a_year=True,
        ),
        Table(
            "districts",
            _l("Redemptions of the month by district"),
            (
                *DISTRICT_COLUMNS,
                USED_COLUMN,
                SUBSIDY_COLUMN,
                Column("price_fen", _l("Price of the services"), "fen"),
            ),
            figures.by_district,
        ),
        Table(
            "categories",
            _l("Redemptions of the month by service category"),
            (
                Column("category", _l("Category code"), "text"),
                Column("label", _l("Service category"), "text"),
                USED_COLUMN,
                SUBSIDY_COLUMN,
            ),
            figures.by_category,
        ),
        Table(
            "providers",
            _l("Redemptions of the month by provider"),
            (
                Column("provider_id", _l("Provider number")),
                Column("provider", _l("Provider"), "text"),
                Column("providers", _l("Providers counted")),
                USED_COLUMN,
                SUBSIDY_COLUMN,
            ),
            _providers,
        ),
        Table(
            "take_up",
            _l("Take-up of the month by district"),
            (
                *DISTRICT_COLUMNS,
                Column("holders", _l("Eligible elders (holding a voucher not revoked, or used)")),
                Column("users", _l("Elders who used it")),
                Column("share_bp", _l("Take-up"), "bp"),
            ),
            figures.take_up,
        ),
        Table(
            "open_flags",
            _l("Open flags on the month's redemptions by rule"),
            (
                Column("rule", _l("Rule code"), "text"),
                Column("label", _l("Rule"), "text"),
                Column("open", _l("Open flags")),
                Column("subsidy_fen", _l("Subsidy held out of settlement"), "fen"),
            ),
            _flags,
        ),
    )
}
OTHERS_LABEL = _l("All other providers")


def rows_of(table: Table, district_id: int | None, month: date, locale: str) -> list[dict]:
    rows = table.rows(district_id, month, locale)
    if table.name == "providers":
        for row in rows:
            if row["provider_id"] is None:
                row["provider"] = str(OTHERS_LABEL)
    return rows


def _download_value(column: Column, value):
    if value is None:
        return None
    if column.kind == "fen":
        return (Decimal(value) / 100).quantize(Decimal("0.01"))  # yuan, exact
    if column.kind == "bp":
        return (Decimal(value) / 100).quantize(Decimal("0.1"))  # percent
    return value


def download_headers(table: Table) -> list[str]:
    out = []
    for column in table.columns:
        if column.kind == "fen":
            out.append(str(_l("%(heading)s (yuan)", heading=column.heading)))
        elif column.kind == "bp":
            out.append(str(_l("%(heading)s (%%)", heading=column.heading)))
        else:
            out.append(str(column.heading))
    return out


def download_rows(table: Table, rows: list[dict]) -> list[list]:
    return [[_download_value(c, row[c.key]) for c in table.columns] for row in rows]


def percent(bp: int) -> str:
    return f"{Decimal(bp) / 100:.1f}%"


# --------------------------------------------------------------------------- reading input


def read_month(text: str | None) -> date:
    """``YYYY-MM`` (years 2000-2099) as the month's first day; blank: this month."""
    text = (text or "").strip()
    if not text:
        return local_today().replace(day=1)
    match = _MONTH.match(text)
    if not match or not 2000 <= int(match.group(1)) <= 2099 or not 1 <= int(match.group(2)) <= 12:
        raise InvalidInput(details={"month": BAD_MONTH})
    return date(int(match.group(1)), int(match.group(2)), 1)


def read_district(text: str | None, user) -> District | None:
    """The district the figures are for: district staff always their own (another
    district's id answers 404, as if it did not exist); city-wide staff the one asked for,
    or None (the whole city) when none is."""
    text = (text or "").strip()
    asked = None
    if text:
        number = whole_number(text, digits=9)
        if number is None or number < 1:
            raise InvalidInput(details={"district": BAD_DISTRICT})
        asked = db.session.get(District, number)
        if asked is None:
            raise NotFound()
    if user.district_id is not None:
        if asked is not None and asked.id != user.district_id:
            raise NotFound()
        return db.session.get(District, user.district_id)
    return asked
