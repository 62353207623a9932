import os

import pytest
import torch

# Tests share 2 cores with nothing else; a fixed thread count also keeps runs bitwise repeatable.
torch.set_num_threads(2)


@pytest.fixture
def synthetic_dir(tmp_path):
    from suite.data import write_synthetic

    write_synthetic(tmp_path, "cifar10", num_train=300, num_test=100, seed=0)
    return tmp_path


def real_cifar10_dir():
    """$Q4BENCH_DATA when it holds real CIFAR-10, else None."""
    from suite.data import DATASETS, find_folder
    from pathlib import Path

    root = os.environ.get("Q4BENCH_DATA")
    if not root:
        return None
    return root if find_folder(DATASETS["cifar10"], Path(root)) else None
