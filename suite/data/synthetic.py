"""Synthetic data written in the official on-disk format, so it goes through the same loader as real data: the
tests' and --synthetic runs' input, and a .tar.gz laid out like the official archive for the download path."""

from __future__ import annotations

import os
import pickle
import shutil
import tarfile
from pathlib import Path

import numpy as np

from ..atomic import write_atomic
from .cifar import dataset_spec
from .download import md5_of

SYNTHETIC_TEST_IMAGES = 256


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
