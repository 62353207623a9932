"""One epoch on 2,000 real CIFAR-10 images, for both methods (runs where $Q4BENCH_DATA holds CIFAR-10; CI
builds it from ../shared/datasets)."""

import pytest
from scipy.stats import binom

from suite.train import TrainConfig, train

from .conftest import real_cifar10_dir

DATA = real_cifar10_dir()

# The bar is derived from chance, not measured on a host: a predictor blind to the images scores Binomial(10,000,
# 0.1) on CIFAR-10's balanced test set, above this only with probability 1e-9 (11.8%). One epoch of 16 steps on
# 2,000 images learns far more on every CPU seen (27.7% fp32, 31.8% tathe4 on a Zen 4; the exact figure
# depends on the host's float kernels, so no figure of a host is the bar).
WELL_ABOVE_CHANCE = 100.0 * binom.isf(1e-9, 10_000, 0.1) / 10_000


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.skipif(DATA is None, reason="no real CIFAR-10 in $Q4BENCH_DATA (CI builds it from ../shared/datasets)")
@pytest.mark.parametrize("method", ["fp32", "tathe4"])
def test_one_real_epoch_is_well_above_chance(tmp_path, method):
    history = train(
        TrainConfig(method=method, epochs=1, threads=2, seed=0, data_dir=DATA, subset=2000, out=str(tmp_path)),
        log=lambda *a: None,
    )
    assert history["test_images"] == 10_000 and history["train_images"] == 2000
    assert history["final_test_acc"] > WELL_ABOVE_CHANCE, history["final_test_acc"]
    if method == "tathe4":
        assert all(n <= 15 for n in history["epochs"][0]["distinct_codes"].values())
