"""Configuration read into dataclasses by one reader: hardware profiles, parity.toml's tables, a [slurm] table.

A config dataclass marks each field a file may set with ``setting(check)``; its __post_init__ calls
check_fields(self), which puts every such value through its check (type, range, choices) and keeps the checked
value (a TOML array as a tuple, an integer given for a number as a float). Rules across fields live in the same
__post_init__. read_table() builds one from a TOML table: an unknown key, a missing key and a bad value are each
one UserError naming the file, the table, the key and what to write; built from command-line options instead, the
same dataclass names the option (--epochs)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any, Callable

from .bounds import COUNTS, check_count, check_number, number_range
from .errors import FieldError, UserError
from .userfiles import read_user_toml

_CHECK, _OPTION = "q4bench.check", "q4bench.option"


# ---------------------------------------------------------------------------------------------
# Checks: each says what it expects, and returns the checked value or raises FieldError(None, problem)


def _refuse(expects: str, value) -> FieldError:
    return FieldError(None, f"must be {expects}, got {value!r}")


@dataclass(frozen=True)
class Count:
    """An integer within suite.bounds.COUNTS[name] (the range the same command-line option has)."""

    name: str
    alternative: str | None = None  # a word the reader accepts instead (profiles' threads = "all"), named in errors

    @property
    def expects(self) -> str:
        low, high = COUNTS[self.name]
        return f"an integer from {low} to {high:,}" + (f" or {self.alternative}" if self.alternative else "")

    def __call__(self, value) -> int:
        if self.alternative and isinstance(value, str):
            raise _refuse(self.expects, value)
        return check_count(value, self.name)


@dataclass(frozen=True)
class Number:
    low: float
    high: float
    low_inclusive: bool = False
    high_inclusive: bool = True

    @property
    def expects(self) -> str:
        return number_range(self.low, self.high, self.low_inclusive, self.high_inclusive)

    def __call__(self, value) -> float:
        return check_number(value, "", self.low, self.high, self.low_inclusive, self.high_inclusive)


@dataclass(frozen=True)
class Text:
    nonempty: bool = False  # refuse "" and blanks; surrounding spaces are dropped

    @property
    def expects(self) -> str:
        return "non-empty text" if self.nonempty else "text"

    def __call__(self, value) -> str:
        if not isinstance(value, str) or (self.nonempty and not value.strip()):
            raise _refuse(self.expects, value)
        return value.strip() if self.nonempty else value


@dataclass(frozen=True)
class Choice:
    options: tuple[str, ...]

    @property
    def expects(self) -> str:
        return "one of " + ", ".join(map(repr, self.options))

    def __call__(self, value) -> str:
        if not isinstance(value, str) or value not in self.options:
            raise _refuse(self.expects, value)
        return value


@dataclass(frozen=True)
class Items:
    """A list (a TOML array) whose every item passes ``item``; kept as a tuple."""

    item: Any
    nonempty: bool = False

    @property
    def expects(self) -> str:
        return f"a {'non-empty ' if self.nonempty else ''}list, each {self.item.expects}"

    def __call__(self, value) -> tuple:
        if not isinstance(value, (list, tuple)) or (self.nonempty and not value):
            raise _refuse(self.expects, value)
        return tuple(self.item(v) for v in value)  # an item's own problem names the bad item


@dataclass(frozen=True)
class Table:
    """A TOML table (inline or not), kept as a dict."""

    expects: str = "a table ({ key = value, ... })"

    def __call__(self, value) -> dict:
        if not isinstance(value, dict):
            raise _refuse(self.expects, value)
        return value


# ---------------------------------------------------------------------------------------------
# Dataclass fields that a file sets


def setting(check: Callable, default=dataclasses.MISSING, *, option: str | None = None):
    """A dataclass field a config file may set (its key is the field's name), checked by ``check``; ``option``:
    the command-line option that sets it, when not --<field-name>. Without a default the key is required."""
    return dataclasses.field(default=default, metadata={_CHECK: check, _OPTION: option})


def check_fields(obj) -> None:
    """For a config dataclass's __post_init__: every setting's value through its check, the checked value kept.
    None is left alone where None is the field's default (an optional setting not given)."""
    for f in dataclasses.fields(obj):
        check = f.metadata.get(_CHECK)
        value = getattr(obj, f.name)
        if check is None or (value is None and f.default is None):
            continue
        try:
            checked = check(value)
        except FieldError as exc:
            raise FieldError(f.name, exc.problem, f.metadata.get(_OPTION)) from None
        object.__setattr__(obj, f.name, checked)  # frozen dataclasses too: this is their own __post_init__


def check_data_source(data_dir: str | None, synthetic: bool) -> None:
    """The cross-field rule every request that loads data shares."""
    if data_dir and synthetic:
        raise FieldError(None, "--data-dir and --synthetic exclude each other")


# ---------------------------------------------------------------------------------------------
# The reader


def _settings(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if _CHECK in f.metadata}


def read_table(cls, table: dict, where: str, **derived):
    """``cls`` built from a TOML table (``where``: "FILE [table]", or "FILE" for the top level); ``derived``: its
    fields that do not come from the file."""
    check_keys(cls, table, where)
    try:
        return cls(**table, **derived)
    except FieldError as exc:
        raise UserError(exc.at(where)) from None


def check_keys(cls, table: dict, where: str) -> None:
    """Every key of the table one of cls's settings, every required setting there. A key the class retired
    (cls.RETIRED_KEYS: key -> what to do instead) is refused with that fix."""
    settings = _settings(cls)
    retired = getattr(cls, "RETIRED_KEYS", {})
    for key in table:
        if key in retired:
            raise UserError(f"{where}: key {key!r} {retired[key]}")
        if key not in settings:
            raise UserError(f"{where}: unknown key {key!r}; known keys: {', '.join(sorted(settings))}")
    for name, f in settings.items():
        if name not in table and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise UserError(f"{where}: missing key {name!r}; add {name} = <{f.metadata[_CHECK].expects}>")


def read_toml_tables(path: str | os.PathLike, what: str, known: tuple[str, ...]) -> dict:
    """The TOML file's top level, whose every entry must be one of the ``known`` tables."""
    doc = read_user_toml(path, what)
    for name in doc:
        if name not in known:
            raise UserError(f"{path}: unknown table [{name}]; known tables: {', '.join(f'[{k}]' for k in known)}")
    return doc


def table_of(doc: dict, name: str, path: str | os.PathLike) -> dict:
    table = doc.get(name)
    if not isinstance(table, dict):
        raise UserError(f"{path}: missing table [{name}]")
    return table
