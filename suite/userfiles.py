"""Paths a user hands us. Files read (profile and parity TOML, result and compare JSON): size capped before
reading, strict UTF-8, no NaN/Infinity, nesting bounded, the top level an object; memory and time stay
bounded by the cap whatever the file holds. Output folders: checked before any work. Every failure is one
UserError naming the file or option."""

from __future__ import annotations

import json
import os
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser as the tomli package
    import tomli as tomllib

from .errors import UserError

# Caps, checked on the file's size before a byte is read. A hardware profile or parity.toml is under 10 KB;
# 1 MiB leaves room for comments and refuses only what cannot be a config. A bench or compare result grows
# with methods, profiles and runs (a 10-seed compare is ~100 KB, a history of 150 epochs ~200 KB): 32 MiB.
CONFIG_MAX_BYTES = 1 << 20
RESULT_MAX_BYTES = 32 << 20


def read_user_bytes(path: str | os.PathLike, what: str, max_bytes: int) -> bytes:
    """The file's bytes; refused when missing, not a regular file, empty or over max_bytes."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:
                raise UserError(f"{path}: {what} is {size:,} bytes, over the {max_bytes:,}-byte limit for one")
            data = f.read(max_bytes + 1)  # a file that grows while read (a pipe, /dev/zero) stops here
    except IsADirectoryError:
        raise UserError(f"{path}: {what} is a folder, expected a file") from None
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise UserError(f"{path}: {what} is over the {max_bytes:,}-byte limit for one")
    if not data.strip():
        raise UserError(f"{path}: {what} is empty")
    return data


def read_user_text(path: str | os.PathLike, what: str, max_bytes: int) -> str:
    data = read_user_bytes(path, what, max_bytes)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: {what} is not UTF-8 text (byte {exc.start} is {data[exc.start]:#04x})") from None


def _no_constant(name: str):
    # json accepts NaN, Infinity and -Infinity by default; they are not JSON and no figure of ours is one.
    raise ValueError(f"{name} is not a JSON number")


def parse_user_json(path: str | os.PathLike, text: str, what: str) -> dict:
    """A JSON object from text; one-line UserError naming path otherwise."""
    try:
        doc = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        end = text.rstrip()
        hint = " (truncated?)" if not end.endswith(("}", "]")) or exc.pos >= len(end) else ""
        raise UserError(f"{path}: {what} is not valid JSON{hint}: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise UserError(f"{path}: {what} is nested too deeply to be one") from None
    except ValueError as exc:  # NaN/Infinity (above), an integer of more than 4,300 digits
        raise UserError(f"{path}: {what} is not valid JSON: {str(exc).splitlines()[0]}") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: {what} must be a JSON object at the top level, found {type(doc).__name__}")
    return doc


def read_user_json(path: str | os.PathLike, what: str, max_bytes: int = RESULT_MAX_BYTES) -> dict:
    return parse_user_json(path, read_user_text(path, what, max_bytes), what)


def parse_user_toml(path: str | os.PathLike, text: str, what: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: {what} is not valid TOML ({str(exc).splitlines()[0]})") from None
    except RecursionError:
        raise UserError(f"{path}: {what} is nested too deeply to be one") from None
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise UserError(f"{path}: {what} is not valid TOML ({str(exc).splitlines()[0]})") from None


def read_user_toml(path: str | os.PathLike, what: str, max_bytes: int = CONFIG_MAX_BYTES) -> dict:
    return parse_user_toml(path, read_user_text(path, what, max_bytes), what)



def check_output_dir(path: str | os.PathLike, option: str) -> Path:
    """Refuse, before any work, an output folder that is a file, lies under a file, or is not writable.
    Creates nothing: the command makes the folder when it first writes."""
    path = Path(path)
    existing = path
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent  # the nearest part of the path that exists
    if not existing.is_dir():
        where = "" if existing == path else f" ({existing} is a file)"
        raise UserError(f"{option} {path}: not a folder{where}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"{option} {path}: {existing} is not writable")
    return path


def check_output_file(path: str | os.PathLike, option: str) -> Path:
    """An output file's path: not a folder, and its folder passes check_output_dir."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path}: is a folder, expected a file name")
    check_output_dir(path.parent, option)
    return path
