"""One writer per output folder: an exclusive flock on OUT/.q4bench.lock for a command's lifetime.

The kernel drops a flock when its holder dies, however it dies (kill -9 included), so a lock file left
behind never blocks the next command; only a live writer does, and the second command is refused in one
line instead of interleaving its files with the first's."""

from __future__ import annotations

import datetime as dt
import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .atomic import remove_stale_temps
from .errors import UserError

LOCK_NAME = ".q4bench.lock"


@contextmanager
def hold(out: str | os.PathLike, command: str) -> Iterator[Path]:
    """Hold OUT's lock (creating OUT) while the block runs; a UserError when another process holds it.
    Stale temporaries in OUT are removed once the lock is ours: nobody else can be writing them."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "a process"
            raise UserError(f"{out} is busy: another {holder} is writing it; wait for it or choose another "
                            f"--out") from None
        started = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %z")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"q4bench {command} (pid {os.getpid()}, started {started})\n".encode(), 0)
        remove_stale_temps(out)
        yield out
    finally:
        os.close(fd)  # releases the flock
