"""Where a run's images come from: the official folder (downloaded when missing) or synthetic data, and the
--subset of its training images."""

from __future__ import annotations

import os
import tempfile

from ..errors import UserError
from .cifar import Split, dataset_spec, load_dataset, resolve_data_dir
from .synthetic import SYNTHETIC_TEST_IMAGES, write_synthetic


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
