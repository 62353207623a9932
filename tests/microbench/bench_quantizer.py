"""Micro-benchmarks (pytest-benchmark), run by `make microbench`, never by `make test` (pytest only collects
test_*.py). They time the pieces of tathe4's overhead over fp32: the quantizer forward and backward, the
tanh projection, and one whole training step of each method on the same batch."""

import pytest
import torch

from suite.methods import get_method, projected_parameters, quantize_symmetric
from suite.train import Stepper, build_model, get_recipe, make_optimizer

BATCH = 128


@pytest.fixture(scope="module")
def conv_weight():
    torch.manual_seed(0)
    return torch.randn(256, 256, 3, 3, requires_grad=True)  # the network's largest conv


def test_quantizer_forward(benchmark, conv_weight):
    with torch.no_grad():
        benchmark(quantize_symmetric, conv_weight, 7)


def test_quantizer_forward_backward(benchmark, conv_weight):
    grad = torch.randn_like(conv_weight)

    def step():
        conv_weight.grad = None
        quantize_symmetric(conv_weight, 7).backward(grad)

    benchmark(step)


def test_tanh_projection(benchmark):
    method = get_method("tathe4")
    model, _ = build_model(method, 10)
    params = projected_parameters(list(model.parameters()))
    benchmark(method.project_, params)


@pytest.mark.parametrize("method_name", ["fp32", "tathe4"])
def test_training_step(benchmark, method_name):
    torch.manual_seed(0)
    method = get_method(method_name)
    model, quantizers = build_model(method, 10)
    model.train()
    stepper = Stepper(model, method, make_optimizer(model, get_recipe("paper")), quantizers, total_steps=10_000)
    images, labels = torch.randn(BATCH, 3, 32, 32), torch.randint(0, 10, (BATCH,))
    benchmark.extra_info.update(method=method_name, batch=BATCH, threads=torch.get_num_threads())
    benchmark.pedantic(stepper, args=(images, labels), rounds=5, warmup_rounds=1)
