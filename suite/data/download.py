"""The official archive: downloaded, checked against its md5 and unpacked beside the data folder, renamed into
place last, so a failed download never leaves a half folder that looks complete."""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UserError

if TYPE_CHECKING:
    from .cifar import DatasetSpec


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_archive(spec: DatasetSpec, root: Path, url: str, md5: str, timeout_s: float = 60.0) -> Path:
    """Fetch the archive, verify its md5, unpack it into root/<folder> (rename last, so a failed
    download never leaves a half folder that looks complete)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = tempfile.TemporaryDirectory(prefix=".download-", dir=root)
    except OSError as exc:  # a read-only or foreign folder: say what to do instead of a traceback
        raise UserError(f"{spec.name} folder {root / spec.folder} not found, and {root} cannot take a download "
                        f"({exc.strerror or exc}); put the official {spec.folder} folder there or pass a "
                        f"writable --data-dir") from None
    with staging as tmp:
        archive = Path(tmp) / "archive.tar.gz"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response, open(archive, "wb") as out:
                shutil.copyfileobj(response, out)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UserError(
                f"{spec.name} folder {root / spec.folder} not found and download from {url} failed ({reason}); "
                f"put the official {spec.folder} folder there or pass --data-dir"
            ) from None
        found = md5_of(archive)
        if found != md5:
            raise UserError(f"checksum mismatch for {url}: md5 {found}, expected {md5}")
        unpacked = Path(tmp) / "unpacked"
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(unpacked, filter="data")
        except (tarfile.TarError, OSError) as exc:
            raise UserError(f"{url}: archive could not be unpacked ({exc})") from None
        source = unpacked / spec.folder
        if not source.is_dir():
            raise UserError(f"{url}: archive has no {spec.folder}/ folder")
        target = root / spec.folder
        if os.path.lexists(target):
            _move_aside(target)  # incomplete (find_folder refused it), but not ours to delete
        os.replace(source, target)
    return target


def _move_aside(folder: Path) -> Path:
    """Rename ``folder`` to a free FOLDER.incomplete-N beside it: the download replaces it, nothing is deleted."""
    for n in range(1, 1000):
        aside = folder.with_name(f"{folder.name}.incomplete-{n}")
        if not os.path.lexists(aside):
            os.rename(folder, aside)
            return aside
    raise UserError(f"{folder}: 999 incomplete copies beside it already; remove them")
