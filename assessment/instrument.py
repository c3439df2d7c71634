"""The GB/T 42195-2022 instrument: items, dimensions, levels, loaded from the package's copy.

``gbt42195_items.json`` here is a copy of the shared domain file; a test keeps them equal.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

DATA_FILE = Path(__file__).with_name("gbt42195_items.json")


@dataclass(frozen=True)
class Item:
    code: str
    zh: str
    en: str
    min: int
    max: int
    dimension: str


@dataclass(frozen=True)
class Dimension:
    code: str
    zh: str
    en: str
    max: int
    items: tuple[Item, ...]


@dataclass(frozen=True)
class Level:
    code: str
    rank: int  # 0 intact .. 4 complete loss; higher is more disabled
    zh: str
    en: str
    min_total: int
    max_total: int


@dataclass(frozen=True)
class Instrument:
    dimensions: tuple[Dimension, ...]
    levels: tuple[Level, ...]

    @property
    def items(self) -> dict[str, Item]:
        return {item.code: item for d in self.dimensions for item in d.items}

    @property
    def max_total(self) -> int:
        return sum(d.max for d in self.dimensions)

    def level(self, code: str) -> Level:
        return next(level for level in self.levels if level.code == code)

    def level_for_total(self, total: int) -> Level:
        for level in self.levels:
            if level.min_total <= total <= level.max_total:
                return level
        raise ValueError(f"total {total} is outside every level band")

    def level_by_rank(self, rank: int) -> Level:
        return next(level for level in self.levels if level.rank == rank)


@cache
def instrument() -> Instrument:
    raw = json.loads(DATA_FILE.read_text(encoding="utf-8"))
    dimensions = tuple(
        Dimension(
            code=d["code"],
            zh=d["zh"],
            en=d["en"],
            max=d["max"],
            items=tuple(
                Item(i["code"], i["zh"], i["en"], i["min"], i["max"], d["code"]) for i in d["items"]
            ),
        )
        for d in raw["dimensions"]
    )
    levels = tuple(
        Level(lv["code"], lv["rank"], lv["zh"], lv["en"], lv["min_total"], lv["max_total"])
        for lv in raw["levels"]
    )
    return Instrument(dimensions, levels)
