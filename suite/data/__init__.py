"""CIFAR folders -> uint8 tensors in memory; official download with checksum; batch-wise augmentation;
a synthetic dataset written in the official on-disk format.

Everything stays in one process on purpose: the paper's augmentation (4-pixel zero pad, random 32x32
crop, horizontal flip) is done on whole uint8 batches with tensor indexing, so no worker processes
compete with training for the cores.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..atomic import write_atomic
from ..errors import UserError

# The paper's normalisation (its code uses the CIFAR-10 values for CIFAR-100 too).
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)
DATA_ENV = "Q4BENCH_DATA"
DEFAULT_DATA_DIR = Path.home() / ".cache" / "q4bench"
SYNTHETIC_TEST_IMAGES = 256


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


# ---------------------------------------------------------------------------------------------
# Reading the official python-format batch files


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


# ---------------------------------------------------------------------------------------------
# Download of the official archive


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


# ---------------------------------------------------------------------------------------------
# Augmentation and batches


def augment(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """RandomCrop(32, padding=4) then RandomHorizontalFlip on a uint8 batch (B, C, H, W), in one gather."""
    return crop_and_flip(images, *_draw_augmentation(images.shape[0], generator, padding), padding=padding)


def _draw_augmentation(n: int, generator: torch.Generator, padding: int = 4):
    """(dy, dx, flip) for n images, drawn on the CPU generator in a fixed order, so a run draws the same
    numbers whatever device holds the images."""
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    return dy, dx, flip


def crop_and_flip(
    images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor, padding: int = 4
) -> torch.Tensor:
    """The crop/flip gather with given offsets; everything on the images' device."""
    n, c, h, w = images.shape
    device = images.device
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    rows = dy[:, None] + torch.arange(h, device=device)
    cols = dx[:, None] + torch.arange(w, device=device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # a flipped crop reads its columns backwards
    return padded[
        torch.arange(n, device=device)[:, None, None, None],
        torch.arange(c, device=device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


_SCALE = torch.tensor([1.0 / (255.0 * s) for s in STD]).view(1, 3, 1, 1)
_SHIFT = torch.tensor([m / s for m, s in zip(MEAN, STD)]).view(1, 3, 1, 1)


_CONSTANTS_ON: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32, (x/255 - mean)/std, on the images' device."""
    device = images.device
    if device not in _CONSTANTS_ON:  # copied once per device: a copy per batch would stall a GPU on the host
        _CONSTANTS_ON[device] = (_SCALE.to(device), _SHIFT.to(device))
    scale, shift = _CONSTANTS_ON[device]
    return images.to(torch.float32).mul_(scale).sub_(shift)


def batches(
    split: Split,
    batch_size: int,
    generator: torch.Generator | None = None,
    train: bool = False,
    shard: tuple[int, int] = (0, 1),
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled, augmented batches when train (generator required); in order otherwise. The split may sit
    on any device: the random numbers are drawn on the CPU generator for the whole epoch first (the same
    sequence as drawing them batch by batch) and moved once, so a GPU epoch never waits on the host.

    shard = (rank, ranks): training batches of a distributed run. Every rank draws the whole epoch's order
    and augmentation and keeps positions rank, rank + ranks, ... of each global batch of batch_size: the
    global batches, and each image's crop and flip, are those of a single process (DistributedSampler's split
    when ranks divides batch_size)."""
    rank, ranks = shard
    n = len(split)
    device = split.images.device
    if not train:
        for start in range(0, n, batch_size):
            yield normalize(split.images[start : start + batch_size]), split.labels[start : start + batch_size]
        return
    order = torch.randperm(n, generator=generator)
    # BatchNorm needs 2 images per rank: a last global batch too small for that is left out on every rank.
    starts = [s for s in range(0, n, batch_size) if min(batch_size, n - s) >= 2 * ranks]
    draws = [_draw_augmentation(min(batch_size, n - s), generator) for s in starts]
    if device.type != "cpu":
        order = order.to(device, non_blocking=True)
        draws = [tuple(t.to(device, non_blocking=True) for t in d) for d in draws]
    for start, (dy, dx, flip) in zip(starts, draws):
        index = order[start : start + batch_size]
        if ranks > 1:
            index, dy, dx, flip = index[rank::ranks], dy[rank::ranks], dx[rank::ranks], flip[rank::ranks]
        yield normalize(crop_and_flip(split.images[index], dy, dx, flip)), split.labels[index]


def num_train_batches(n: int, batch_size: int, ranks: int = 1) -> int:
    """Optimizer steps per epoch: a tail batch is kept when every rank gets at least 2 of its images."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= 2 * ranks else 0)


# ---------------------------------------------------------------------------------------------
# Synthetic data in the official on-disk format


def write_synthetic(
    root: str | os.PathLike,
    name: str = "cifar10",
    num_train: int = 2000,
    num_test: int = 500,
    seed: int = 0,
    bytes_keys: bool = False,
) -> Path:
    """Write a small learnable dataset (each class a fixed colour pattern plus noise) in exactly the
    layout of the official download, so it goes through the same loader as real data."""
    spec = dataset_spec(name)
    rng = np.random.default_rng(seed)
    folder = Path(root) / spec.folder
    folder.mkdir(parents=True, exist_ok=True)
    # Low-frequency class templates: an 8x8 random pattern upsampled to 32x32.
    templates = rng.integers(40, 216, size=(spec.num_classes, 3, 8, 8)).repeat(4, axis=2).repeat(4, axis=3)

    def make(count: int) -> tuple[np.ndarray, list[int]]:
        labels = rng.integers(0, spec.num_classes, size=count)
        noise = rng.normal(0, 40, size=(count, 3, 32, 32))
        images = np.clip(templates[labels] + noise, 0, 255).astype(np.uint8)
        return images.reshape(count, -1), labels.tolist()

    def dump(path: Path, obj: dict) -> None:
        if bytes_keys:
            obj = {k.encode(): v for k, v in obj.items()}
        write_atomic(path, lambda f: pickle.dump(obj, f, protocol=2))

    for files, count in ((spec.train_files, num_train), (spec.test_files, num_test)):
        sizes = [count // len(files) + (1 if i < count % len(files) else 0) for i in range(len(files))]
        for fname, size in zip(files, sizes):
            data, labels = make(size)
            dump(folder / fname, {"batch_label": f"synthetic {fname}", spec.label_key: labels, "data": data})
    names = [f"class_{i}" for i in range(spec.num_classes)]
    dump(folder / spec.meta_file, {spec.meta_names_key: names})
    return folder


def synthetic_archive(root: str | os.PathLike, name: str = "cifar10", **kwargs) -> tuple[Path, str]:
    """A .tar.gz laid out like the official archive, and its md5: the download path's test input."""
    root = Path(root)
    spec = dataset_spec(name)
    staging = root / "staging"
    write_synthetic(staging, name, **kwargs)
    archive = root / f"{spec.folder}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(staging / spec.folder, arcname=spec.folder)
    shutil.rmtree(staging)
    return archive, md5_of(archive)


def load_data(
    name: str,
    data_dir: str | os.PathLike | None,
    synthetic: bool,
    subset: int | None,
    seed: int = 0,
) -> tuple[Split, Split, str]:
    """The training entry point: (train, test, description). --subset keeps the first N train images."""
    if synthetic:
        with tempfile.TemporaryDirectory(prefix="q4bench-synthetic-") as tmp:
            write_synthetic(tmp, name, num_train=max(subset or 2000, 2), num_test=SYNTHETIC_TEST_IMAGES, seed=seed)
            train, test = load_dataset(name, tmp, download=False)
        source = f"synthetic {dataset_spec(name).name}-format data"
    else:
        train, test = load_dataset(name, data_dir)
        source = f"{dataset_spec(name).name} from {resolve_data_dir(data_dir)}"
    if subset is not None:
        if subset < 2:
            raise UserError(f"--subset must be at least 2, got {subset}")
        if subset > len(train):  # never silently train on fewer images than asked
            raise UserError(f"--subset {subset} is more than the {len(train)} training images of {source}")
        train = train.head(subset)
    return train, test, source
