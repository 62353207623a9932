"""Write-then-rename, so a reader (or a crash) never sees a half-written file.

Every file is first written to a temporary ``.NAME.XXXX.tmp`` beside it, fsynced, then renamed over NAME
(or linked to it, for files that must never be replaced). A kill leaves at most such a temporary, which
readers ignore (no reader globs ``*.tmp``) and the next command holding the folder's lock removes. A full
disk or a file size limit becomes a one-line UserError naming the file; the old file stays as it was."""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import signal
import tempfile
from pathlib import Path
from typing import Any, Callable

from .errors import UserError

# errnos that mean "the disk (or a quota or RLIMIT_FSIZE) is full", not a bug
DISK_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
TEMP_GLOB = ".*.tmp"
# Test-only: Q4BENCH_TEST_KILL_AT=NAME[#N][:STOP] (NAME may be a glob) sends this process SIGKILL (or SIGSTOP) just before the
# Nth (default 1st) rename of a temporary onto a file called NAME. Inert unless the variable is set.
KILL_ENV = "Q4BENCH_TEST_KILL_AT"
_reached: dict[str, int] = {}


def _test_kill_point(name: str) -> None:
    spec = os.environ.get(KILL_ENV)
    if not spec:
        return
    spec, _, sig = spec.partition(":")
    label, _, nth = spec.partition("#")
    if not fnmatch.fnmatchcase(name, label):  # a pattern, for names made at run time (a bench result's)
        return
    _reached[name] = _reached.get(name, 0) + 1
    if _reached[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGSTOP if sig == "STOP" else signal.SIGKILL)


def disk_full(exc: BaseException) -> OSError | None:
    """The disk-full OSError behind ``exc`` (torch.save wraps it in a RuntimeError), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def disk_full_error(path: str | os.PathLike, exc: OSError) -> UserError:
    return UserError(f"{path}: cannot write: no space left on the device or over a file size limit "
                     f"({os.strerror(exc.errno)}); the previous file, if any, is unchanged")


_MODE: list[int] = []


def _file_mode() -> int:
    """0666 less the process's umask, what open() would give a new file (the umask read once: os.umask
    can only be read by setting it)."""
    if not _MODE:
        mask = os.umask(0o022)
        os.umask(mask)
        _MODE.append(0o666 & ~mask)
    return _MODE[0]


def _write_temp(path: Path, write: Callable[[Any], None], mode: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _file_mode())  # mkstemp makes 0600; a result or report is as readable as any new file
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as exc:
        os.unlink(tmp)
        full = disk_full(exc)
        if full is not None:
            raise disk_full_error(path, full) from None
        raise
    _test_kill_point(path.name)
    return tmp


def write_atomic(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call ``write(fileobj)`` on a temporary file beside ``path``, fsync it, then rename over ``path``."""
    path = Path(path)
    tmp = _write_temp(path, write, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def write_new(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Like write_atomic, but never replaces a file: FileExistsError when ``path`` exists, so of two writers
    racing for one name exactly one wins and the other's content is not lost silently."""
    path = Path(path)
    tmp = _write_temp(path, write, mode)
    try:
        os.link(tmp, path)  # atomic and exclusive: fails if path exists
    finally:
        os.unlink(tmp)
    return path


def _json_text(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n"


def write_json_atomic(path: str | os.PathLike, data: Any) -> Path:
    text = _json_text(data)
    return write_atomic(path, lambda f: f.write(text), mode="w")


def write_json_new(path: str | os.PathLike, data: Any) -> Path:
    text = _json_text(data)
    return write_new(path, lambda f: f.write(text), mode="w")


def remove_stale_temps(folder: str | os.PathLike) -> None:
    """Remove temporaries a killed writer left in ``folder``; call only while holding its lock."""
    for tmp in Path(folder).glob(TEMP_GLOB):
        tmp.unlink(missing_ok=True)
