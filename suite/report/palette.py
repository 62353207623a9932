"""One look per method in every figure of the report: its colour and marker (and, on bars, its hatch), decided
here and nowhere else, so a method a reader found in one figure is the same mark in the next.

The colours are a qualitative palette of 13 (Okabe-Ito without black and yellow, then Paul Tol's "muted"
colours without the pale ones): none vanishes on white and no two of the first 13 methods share one. fp32,
the reference every figure compares against, is grey. A precision arm ("tathe4@bf16") keeps its method's
colour with a triangle marker and hatched bars: the colour says the method, the mark the precision. A method
this table does not know (a plugin) gets a colour-and-marker pair from its name's checksum, the same in every
figure and every report."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from ..spec import BASELINE, FULL_PRECISION, split_arm

PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#882255", "#117733", "#332288",
           "#999933", "#44AA99", "#661100", "#AA4499")
REFERENCE_GREY = "#7f7f7f"
# The methods q4bench ships, in the order they take the palette's colours (tathe4 vermillion, cpt blue, ...).
KNOWN_METHODS = ("cpt", "tathe4", "fractrain-dfq", "fractrain-pfq", "luq4", "sbm4", "sbm8", "tathe4-hardclip",
                 "tathe4-noclip", "tathe4-notanh", "tathe4-rangebn", "tathe4-2bit", "tathe4-3bit")
_UNKNOWN_MARKERS = ("s", "D", "v", "P")
ARM_MARKER, ARM_HATCH = "^", "///"


@dataclass(frozen=True)
class Style:
    colour: str
    marker: str
    hatch: str = ""


def method_style(method: str) -> Style:
    """The method's colour, marker and hatch; the same for the same name in every figure."""
    base, precision = split_arm(method)
    colour, marker = _base_style(base)
    if precision != FULL_PRECISION:
        return Style(colour, ARM_MARKER, ARM_HATCH)
    return Style(colour, marker)


def _base_style(base: str) -> tuple[str, str]:
    if base == BASELINE:
        return REFERENCE_GREY, "o"
    if base in KNOWN_METHODS:
        return PALETTE[KNOWN_METHODS.index(base)], "o"
    slot = zlib.crc32(base.encode())
    return PALETTE[slot % len(PALETTE)], _UNKNOWN_MARKERS[(slot // len(PALETTE)) % len(_UNKNOWN_MARKERS)]


# Series that are not methods (hosts, layers) never take tathe4's colour, so no host reads as the method.
SERIES_COLOURS = tuple(c for c in PALETTE if c != PALETTE[KNOWN_METHODS.index("tathe4")])


def series_colour(index: int) -> str:
    """The colour of the index-th series of a figure whose series are not methods (hosts, layers)."""
    return SERIES_COLOURS[index % len(SERIES_COLOURS)]
