"""Paths a user hands us. Files read (profile and parity TOML, result and compare JSON, histories): regular
files only (a FIFO or device is refused before it is opened, so nothing waits on one), optionally only inside
a given folder (a link leaving it is refused), size capped before reading, strict UTF-8, no NaN/Infinity,
nesting bounded, the top level an object; memory and time stay bounded by the cap whatever the file holds.
Output folders: checked before any work. Every failure is one UserError naming the file or option."""

from __future__ import annotations

import json
import os
import stat
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


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def _open_regular(path: Path, what: str, inside: str | os.PathLike | None) -> int:
    """A descriptor of the regular file at path, checked before it is opened (a FIFO or device is never opened,
    so never waited on) and again after (the same inode: a file swapped in between is refused)."""
    target = path
    if inside is not None:
        root, target = Path(os.path.realpath(inside)), Path(os.path.realpath(path))
        if target != root and root not in target.parents:
            raise UserError(f"{path}: {what} lies outside {inside} (it resolves to {target}); not read")
    try:
        before = os.stat(target)
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    if not stat.S_ISREG(before.st_mode):
        if stat.S_ISDIR(before.st_mode):
            raise UserError(f"{path}: {what} is a folder, expected a file")
        raise UserError(f"{path}: {what} is {_kind(before.st_mode)}, expected a regular file; not read")
    # O_NONBLOCK: were a FIFO swapped in after the check, open returns at once instead of waiting for a writer.
    # O_NOFOLLOW on the resolved path: a link swapped in after the resolution is refused, not followed.
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | (os.O_NOFOLLOW if inside is not None else 0)
    try:
        fd = os.open(target, flags)
    except OSError as exc:
        raise UserError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    after = os.fstat(fd)
    if (after.st_ino, after.st_dev) != (before.st_ino, before.st_dev) or not stat.S_ISREG(after.st_mode):
        os.close(fd)
        raise UserError(f"{path}: {what} changed while it was opened; not read")
    return fd


def read_user_bytes(path: str | os.PathLike, what: str, max_bytes: int, *,
                    inside: str | os.PathLike | None = None) -> bytes:
    """The file's bytes; refused when missing, not a regular file (a FIFO, device or socket is never opened),
    empty, over max_bytes or, with inside, resolving (through links) to a place outside that folder."""
    path = Path(path)
    with os.fdopen(_open_regular(path, what, inside), "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise UserError(f"{path}: {what} is {size:,} bytes, over the {max_bytes:,}-byte limit for one")
        try:
            data = f.read(max_bytes + 1)  # a file that grows while read stops here
        except OSError as exc:
            raise UserError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise UserError(f"{path}: {what} is over the {max_bytes:,}-byte limit for one")
    if not data.strip():
        raise UserError(f"{path}: {what} is empty")
    return data


def read_user_text(path: str | os.PathLike, what: str, max_bytes: int, *,
                   inside: str | os.PathLike | None = None) -> str:
    data = read_user_bytes(path, what, max_bytes, inside=inside)
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


def read_user_json(path: str | os.PathLike, what: str, max_bytes: int = RESULT_MAX_BYTES, *,
                   inside: str | os.PathLike | None = None) -> dict:
    return parse_user_json(path, read_user_text(path, what, max_bytes, inside=inside), what)


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
