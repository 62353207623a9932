"""What made a file: the code (git commit, dirty flag), the versions and the time. Stamped into every
file the suite writes, so a figure can be traced to the code and host that produced it.

Torch-free on purpose (the report side imports it): versions are read from package metadata.
"""

from __future__ import annotations

import datetime as _dt
import functools
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path

from . import __version__

# A copy of the tree without .git (a GPU machine gets the working tree only) can still name its code:
# the launcher exports the commit here, and the stamp says it came from the environment, not from git.
COMMIT_ENV = "Q4BENCH_COMMIT"
_REPO = Path(__file__).resolve().parent.parent


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(_REPO), *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def code_version() -> dict:
    """{"commit", "dirty", "source"}: $Q4BENCH_COMMIT when a launcher sets it (a copied tree's own git
    metadata can name another base: seen on a GPU machine, whose copy called the session's base commit
    dirty), else the checkout's HEAD and whether tracked files differ from it, else "unknown"."""
    env = os.environ.get(COMMIT_ENV, "").strip()
    if env:
        return {"commit": env, "dirty": None, "source": f"${COMMIT_ENV}, set by the launcher"}
    head = _git("rev-parse", "HEAD") if (_REPO / ".git").exists() else None
    if head:
        status = _git("status", "--porcelain", "--untracked-files=no")
        return {"commit": head.strip(), "dirty": bool(status.strip()) if status is not None else None, "source": "git"}
    return {"commit": "unknown", "dirty": None, "source": "not a git checkout"}


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict:
    return {
        "suite": __version__,
        "python": platform.python_version(),
        "torch": package_version("torch"),
        "onnxruntime": package_version("onnxruntime"),
    }


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def stamp(**extra) -> dict:
    """The provenance block of a written file: code, versions, time (UTC, ISO 8601), plus ``extra``."""
    return {"code": code_version(), "versions": versions(), "written_at": utc_now(), **extra}
