"""Output folders and their locks: every folder the suite writes is a real folder (never a symbolic link to
somewhere else), and one writer holds it at a time through an exclusive flock on OUT/.q4bench.lock.

The kernel drops a flock when its holder dies, however it dies (kill -9 included), so a lock file left
behind never blocks the next command; only a live writer does, and the second command is refused in one
line instead of interleaving its files with the first's.

A folder may come from a stranger (a pull request can commit a symbolic link under reports/), so the lock
file is opened without following links and must be a plain file with one name: a link there would let the
lock's truncate-and-write land on whatever the link points at."""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import os
import shutil
import stat
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .atomic import remove_stale_temps, write_atomic
from .errors import UserError

LOCK_NAME = ".q4bench.lock"
LOCK_MODE = 0o644
# O_NONBLOCK: a FIFO in the lock's place must not hang the open; flock is non-blocking anyway.
_LOCK_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _link_refusal(path: Path, label: str) -> UserError:
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    return UserError(f"{label} {path}: is a symbolic link (to {target}); the suite writes only into real folders: "
                     f"give the folder it points to if you mean it")


def refuse_link(path: str | os.PathLike, label: str = "--out") -> Path:
    """``path``, refused in one line when it is a symbolic link (checked before long work starts)."""
    path = Path(path)
    if path.is_symlink():
        raise _link_refusal(path, label)
    return path


def real_folder(path: str | os.PathLike, label: str = "--out") -> Path:
    """``path`` as a real folder, made (with its parents) when absent. A symbolic link in its place, or
    anything but a folder, is a one-line UserError: writing through a link would write somewhere else."""
    path = refuse_link(path, label)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"{label} {path}: not a folder") from None
    except OSError as exc:
        raise UserError(f"{label} {path}: cannot create the folder ({exc.strerror or exc})") from None
    if path.is_symlink() or not path.is_dir():  # made a link or a file between the two checks
        raise UserError(f"{label} {path}: not a real folder")
    return path


def real_folder_under(root: Path, parts: tuple[str, ...], label: str) -> Path:
    """root/parts[0]/.../parts[-1] as a real folder, each part below root made when absent and refused when it
    is a symbolic link (which could lead out of root)."""
    path = real_folder(root, label)
    for part in parts:
        path = real_folder(path / part, label)
    return path


def _open_lock(path: Path) -> int:
    try:
        fd = os.open(path, _LOCK_FLAGS, LOCK_MODE)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UserError(f"{path}: the lock file is a symbolic link; the suite's lock must be a plain file: "
                            f"delete the link (its target is not touched)") from None
        if exc.errno == errno.EISDIR:
            raise UserError(f"{path}: the lock file is not a plain file but a folder; move it away") from None
        raise UserError(f"{path}: cannot open the lock file ({exc.strerror or exc})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(fd)
        what = "has other names (hard links)" if stat.S_ISREG(info.st_mode) else "is not a plain file"
        raise UserError(f"{path}: the lock file {what}; delete it (the suite makes a new one)")
    return fd


@contextmanager
def hold(out: str | os.PathLike, command: str, label: str = "--out") -> Iterator[Path]:
    """Hold OUT's lock (creating OUT, a real folder) while the block runs; a UserError when another process
    holds it. Stale temporaries in OUT are removed once the lock is ours: nobody else can be writing them."""
    out = real_folder(out, label)
    fd = _open_lock(out / LOCK_NAME)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "a process"
            raise UserError(f"{out} is busy: another {holder} is writing it; wait for it or choose another "
                            f"{label}") from None
        started = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %z")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"q4bench {command} (pid {os.getpid()}, started {started})\n".encode(), 0)
        remove_stale_temps(out)
        yield out
    finally:
        os.close(fd)  # releases the flock


# ---------------------------------------------------------------------------------------------
# Ownership: a command that clears or replaces files in its folder first proves it made them


def marker_name(command: str) -> str:
    return f".q4bench-{command}"


def claim(out: Path, command: str, names: tuple[str, ...], overwrite: bool, proof: tuple[str, ...] = ()) -> None:
    """Before ``command`` removes or replaces OUT/<names>: refuse in one line when one of them exists and OUT
    shows no sign that ``command`` made it (its marker, or one of the ``proof`` files only it writes),
    unless ``overwrite``; then leave the marker, so the next run of the command may. Call holding OUT's lock."""
    marker = out / marker_name(command)
    made_here = overwrite or marker.is_file() or any((out / name).is_file() for name in proof)
    found = [name for name in names if os.path.lexists(out / name)]
    if found and not made_here:
        raise UserError(f"{out} holds {', '.join(found)}, which q4bench {command} would remove or replace but did "
                        f"not write (no {marker.name} there); choose another folder, or pass --overwrite to "
                        f"let it")
    write_atomic(marker, lambda f: f.write(f"q4bench {command} owns {', '.join(names)} in this folder and "
                                           f"replaces them on its next run\n"), mode="w")


def remove_owned(path: Path) -> None:
    """Remove a file or folder a claim() gave us; a link is removed, never followed."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif os.path.lexists(path):
        path.unlink()
