"""The report as data: sections of paragraphs, tables of typed cells and figures. No Markdown or HTML here
(render.py does that), so tests assert on what a cell holds and how it was obtained.

Every number cell says its kind: MEASURED (by the command named in its file), DERIVED (arithmetic on
measured figures, the formula in a footnote), ESTIMATED (a model, named in a footnote) or UNAVAILABLE
(with why). An explanation that would repeat in every row is a footnote, given once per table."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum

from .claims import Verdict


NOT_MEASURED = "not measured"


class Kind(Enum):
    MEASURED = "measured"
    DERIVED = "derived"
    ESTIMATED = "estimated"
    UNAVAILABLE = "not measured"
    PAPER = "paper"
    TEXT = "text"


@dataclass(frozen=True)
class Cell:
    text: str
    kind: Kind = Kind.TEXT
    value: float | None = None  # the number behind the text, for sorting and for tests
    note: str | None = None  # a footnote key of the table
    fixture: bool = False
    verdict: Verdict | None = None


@dataclass
class Table:
    name: str
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    sortable: bool = False
    caption: str = ""
    footnotes: dict[str, str] = field(default_factory=dict)  # key -> text, numbered where first used

    def add(self, row: dict[str, Cell]) -> None:
        self.rows.append([row.get(c, Cell("-")) for c in self.columns])

    def column(self, name: str) -> list[Cell]:
        i = self.columns.index(name)
        return [r[i] for r in self.rows]


@dataclass
class Figure:
    name: str
    png: bytes
    title: str
    caption: str
    data: dict = field(default_factory=dict)  # what was drawn (e.g. one bar per row), for tests


@dataclass
class Paragraph:
    text: str
    css: str = ""


@dataclass
class Section:
    anchor: str
    title: str
    blocks: list = field(default_factory=list)  # Paragraph, Table, Figure
    details: bool = False  # below the divider, folded in HTML: the evidence behind the main page

    def tables(self) -> dict[str, Table]:
        return {b.name: b for b in self.blocks if isinstance(b, Table)}

    def figures(self) -> dict[str, Figure]:
        return {b.name: b for b in self.blocks if isinstance(b, Figure)}

    def text(self) -> str:
        return "\n".join(b.text for b in self.blocks if isinstance(b, Paragraph))


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def number(value, spec: str = ".1f", unit: str = "", kind: Kind = Kind.MEASURED, note: str | None = None,
           missing: str = NOT_MEASURED, fixture: bool = False) -> Cell:
    if not _finite(value):
        return Cell(missing, Kind.UNAVAILABLE, note=note)
    return Cell(f"{value:{spec}}{unit}", kind, float(value), note, fixture)


def unavailable(why: str = "", note: str | None = None) -> Cell:
    return Cell(f"{NOT_MEASURED} ({why})" if why else NOT_MEASURED, Kind.UNAVAILABLE, note=note)


def text(value: str, note: str | None = None, fixture: bool = False) -> Cell:
    return Cell(value, Kind.TEXT, note=note, fixture=fixture)
