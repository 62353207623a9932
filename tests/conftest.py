import os

import pytest
import torch

# Tests share 2 cores with nothing else; a fixed thread count also keeps runs bitwise repeatable.
torch.set_num_threads(2)


# Test modules whose results pass through float kernels (training, export, quantizers): `make test-isa` runs
# them with oneDNN and MKL capped to another instruction set, so no test passes only on the host's own ISA.
NUMERICS_MODULES = {
    "test_train", "test_realdata", "test_parity", "test_compare", "test_export", "test_distributed", "test_model",
    "test_simpleresnet", "test_sbm", "test_fractrain", "test_methods_extra", "test_quantizer", "test_device_recipe",
    "test_durability", "test_study", "test_fp4",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.module.__name__.rsplit(".", 1)[-1] in NUMERICS_MODULES:
            item.add_marker(pytest.mark.numerics)


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
