"""The official CIFAR folders -> uint8 tensors in memory: the datasets' specs, the split held in memory, and the
batch files read through an unpickler that rebuilds numpy arrays and nothing else."""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from .download import download_archive

DATA_ENV = "Q4BENCH_DATA"
DEFAULT_DATA_DIR = Path.home() / ".cache" / "q4bench"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    folder: str  # the folder the official archive unpacks to
    url: str
    md5: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: str
    meta_file: str
    meta_names_key: str
    num_classes: int


DATASETS = {
    "cifar10": DatasetSpec(
        name="CIFAR-10",
        folder="cifar-10-batches-py",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        md5="c58f30108f718f92721af3b95e74349a",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        label_key="labels",
        meta_file="batches.meta",
        meta_names_key="label_names",
        num_classes=10,
    ),
    "cifar100": DatasetSpec(
        name="CIFAR-100",
        folder="cifar-100-python",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        md5="eb9058c3a382ffc7106e4002c42a8d85",
        train_files=("train",),
        test_files=("test",),
        label_key="fine_labels",
        meta_file="meta",
        meta_names_key="fine_label_names",
        num_classes=100,
    ),
}


def dataset_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None


@dataclass
class Split:
    """One split held in memory: images (N, 3, 32, 32) uint8, labels (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.labels.shape[0]

    def head(self, n: int) -> "Split":
        return Split(self.images[:n], self.labels[:n])

    def part(self, start: int, stop: int) -> "Split":
        return Split(self.images[start:stop], self.labels[start:stop])

    def to(self, device: str | torch.device) -> "Split":
        """The split on a device (CIFAR-10: 176 MiB of uint8), where batches are then gathered and augmented;
        itself when it is already there."""
        device = torch.device(device)
        if self.images.device == device:
            return self
        return Split(self.images.to(device), self.labels.to(device))


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """The batch files are pickles; a pickle can run code, so only numpy arrays and plain
    containers are allowed to be rebuilt from them."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
        ("builtins", "bytes"),  # an empty array's buffer (protocol 2 writes it as __builtin__.bytes)
        ("__builtin__", "bytes"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


# The largest official file, CIFAR-100's train, is 155 MB: anything far above is not a batch file, and the
# unpickler's memory is bounded by the file's size.
MAX_BATCH_FILE_BYTES = 256 << 20


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_BATCH_FILE_BYTES:
                raise UserError(f"{path}: {size:,} bytes, too large for a batch file (limit {MAX_BATCH_FILE_BYTES:,})")
            obj = _ArrayOnlyUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise UserError(f"{path}: batch file missing") from None
    except OSError as exc:  # a folder in its place, no permission
        raise UserError(f"{path}: cannot read batch file ({exc.strerror or exc})") from None
    except (UserError, MemoryError):  # out of memory is the host's limit, not a bad file (bench reports it as oom)
        raise
    except Exception as exc:  # noqa: BLE001 - any failure to unpickle (refused class, truncation, junk) is a bad file
        detail = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise UserError(f"{path}: truncated or corrupt batch file ({type(exc).__name__}: {detail})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{path}: corrupt batch file (expected a dict, found {type(obj).__name__})")
    # Files written by Python 3 with bytes keys, or read with encoding="bytes", carry b"data"; accept both.
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _read_batch(path: Path, spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    for key in ("data", spec.label_key):
        if key not in batch:
            raise UserError(f"{path}: corrupt batch file (no {key!r} field)")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1:] != (3 * 32 * 32,) \
            or not data.shape[0]:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise UserError(f"{path}: field 'data' must be uint8 of shape (N, 3072), N >= 1, found {found}")
    try:  # the official files hold a list of ints; floats, strings or nesting are not class ids
        labels = np.asarray(batch[spec.label_key])
    except ValueError:
        labels = np.asarray(None)
    if labels.dtype.kind not in "iu":
        raise UserError(f"{path}: field {spec.label_key!r} must be a list of integer class ids, found {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.shape != (data.shape[0],):
        raise UserError(f"{path}: field {spec.label_key!r} has {labels.size} labels for {data.shape[0]} images")
    if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise UserError(
            f"{path}: wrong class count: labels span {labels.min()}..{labels.max()}, "
            f"{spec.name} has {spec.num_classes} classes"
        )
    return data, labels


def _read_split(folder: Path, files: tuple[str, ...], spec: DatasetSpec) -> Split:
    parts = [_read_batch(folder / name, spec) for name in files]
    data = np.concatenate([d for d, _ in parts])
    labels = np.concatenate([l for _, l in parts])
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return Split(images, torch.from_numpy(labels))


def _check_meta(folder: Path, spec: DatasetSpec) -> None:
    path = folder / spec.meta_file
    if not path.exists():
        return  # optional: labels are checked against the class count anyway
    names = _unpickle(path).get(spec.meta_names_key)
    if names is not None and not isinstance(names, list):
        raise UserError(f"{path}: {spec.meta_names_key} must be a list of class names, found {type(names).__name__}")
    if names is not None and len(names) != spec.num_classes:
        raise UserError(
            f"{path}: wrong class count: {spec.meta_names_key} lists {len(names)} classes, "
            f"{spec.name} has {spec.num_classes}"
        )


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """--data-dir wins, then $Q4BENCH_DATA, then ~/.cache/q4bench; a file there is refused (not downloaded into)."""
    if data_dir:
        root, source = Path(data_dir).expanduser(), "--data-dir"
    elif os.environ.get(DATA_ENV):
        root, source = Path(os.environ[DATA_ENV]).expanduser(), f"${DATA_ENV}"
    else:
        root, source = DEFAULT_DATA_DIR, "the default data folder"
    if root.exists() and not root.is_dir():
        raise UserError(f"{source} {root}: not a folder")
    return root


def find_folder(spec: DatasetSpec, root: Path) -> Path | None:
    """The official folder under root, or root itself when it is that folder."""
    for candidate in (root / spec.folder, root):
        if all((candidate / f).exists() for f in spec.train_files + spec.test_files):
            return candidate
    return None


def load_dataset(
    name: str = "cifar10",
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    url: str | None = None,
    md5: str | None = None,
) -> tuple[Split, Split]:
    """(train, test) of an official-format CIFAR folder; downloads the archive when it is missing."""
    spec = dataset_spec(name)
    root = resolve_data_dir(data_dir)
    folder = find_folder(spec, root)
    if folder is None:
        if not download:
            raise UserError(f"{spec.name} folder {root / spec.folder} not found")
        download_archive(spec, root, url=url or spec.url, md5=md5 or spec.md5)
        folder = root / spec.folder
    _check_meta(folder, spec)
    return _read_split(folder, spec.train_files, spec), _read_split(folder, spec.test_files, spec)
