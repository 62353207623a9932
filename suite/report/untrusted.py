"""Strings and numbers that came from result files, made safe to render. Results arrive from strangers, so
their text may hold HTML, Markdown, control characters or matplotlib's $...$ mathtext, and their numbers may
be as large as a float goes. Text is shown, never interpreted: the HTML page escapes it (render.py), the
Markdown page escapes it here, figures are drawn with mathtext off, and axis values are bounded."""

from __future__ import annotations

import contextlib
import html
import math
import re
from pathlib import Path
from typing import Callable, Iterable, Iterator

# Control characters (C0 but tab and newline, DEL, C1) cannot be shown; each becomes U+FFFD, as do the two
# private-use characters that mark a foreign string's place while the report's own markup is rendered.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ue000\ue001]")
_PLACE = re.compile(r"\ue000(\d+)\ue001")
# What Markdown would read as markup, a link, an image or HTML. An underscore inside a word is not markup.
_MD_SPECIAL = re.compile(r"([\\`*\[\]|#<>&~!$]|(?<![^\W_])_|_(?![^\W_]))")
# A figure's axes span at most this many units: far beyond any rate, time or accuracy a run records, and small
# enough that matplotlib's transforms stay finite.
PLOT_MAX = 1e15


def visible(text: str) -> str:
    """text with every control character (but tab and newline) replaced by U+FFFD."""
    return _CONTROL.sub("\ufffd", text)


def strings_in(value, limit: int = 100_000) -> set[str]:
    """Every string in a loaded JSON document (keys too), at most limit of them."""
    out: set[str] = set()
    stack = [value]
    while stack and len(out) < limit:
        v = stack.pop()
        if isinstance(v, str):
            out.add(v)
        elif isinstance(v, dict):
            out.update(k for k in v if isinstance(k, str))
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return out


def needs_escaping(strings: Iterable[str]) -> frozenset[str]:
    """The strings (as visible() shows them) that would change a Markdown page's meaning pasted in unescaped."""
    return frozenset(visible(s) for s in strings if _MD_SPECIAL.search(s) or "\n" in s or _CONTROL.search(s))


def escape_markdown(text: str) -> str:
    """text shown as written on a Markdown page (a newline becomes a space)."""
    out = _MD_SPECIAL.sub(lambda m: html.escape(m.group(1)) if m.group(1) in "<>&" else "\\" + m.group(1), text)
    return out.replace("\n", " ")


def render_text(text: str, foreign: frozenset[str], own: Callable[[str], str], theirs: Callable[[str], str]) -> str:
    """text rendered with own (the report's markup: emphasis, code spans) except each string of foreign (from
    result files, see needs_escaping), which is rendered with theirs (escaped whole) wherever it occurs. The
    foreign strings are set aside behind placeholders first, so own's markup may surround them but never
    reads inside them."""
    text = visible(text)
    present = sorted((s for s in foreign if s in text), key=len, reverse=True)
    if not present:
        return own(text)
    found: list[str] = []

    def set_aside(m: re.Match) -> str:
        found.append(m.group(0))
        return f"\ue000{len(found) - 1}\ue001"

    shielded = own(re.sub("|".join(map(re.escape, present)), set_aside, text))
    return _PLACE.sub(lambda m: theirs(found[int(m.group(1))]), shielded)


def markdown(text: str, foreign: frozenset[str] = frozenset(), table_cell: bool = False) -> str:
    """text for a Markdown page: foreign strings escaped whole (see render_text); the report's own text keeps
    its emphasis and code spans, with HTML's < > & escaped (and, in a table cell, the column bar |)."""
    def own(text: str) -> str:
        out = html.escape(text, quote=False)
        return out.replace("|", "\\|") if table_cell else out

    return render_text(text, foreign, own, escape_markdown)


def foreign_strings(docs: Iterable, paths: Iterable[Path]) -> frozenset[str]:
    """The strings of the given documents and the paths of their files that need escaping."""
    strings: set[str] = set()
    for doc in docs:
        strings |= strings_in(doc)
    strings |= {str(p) for p in paths}
    return needs_escaping(strings)


@contextlib.contextmanager
def plain_text_figures() -> Iterator[None]:
    """Figures drawn inside show every label as written: a '$' never starts matplotlib's mathtext."""
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False}):
        yield


def plottable(value, missing: float = math.nan) -> float:
    """value for an axis: a finite number within +-PLOT_MAX, else missing (matplotlib leaves nan undrawn)."""
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        return missing
    return v if math.isfinite(v) and abs(v) <= PLOT_MAX else missing
