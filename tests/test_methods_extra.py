"""LUQ, cyclic precision (CPT) and the reference method's ablations as registered methods.

Statistical tests use fixed seeds (so they are deterministic) and state a bound that a correct
implementation fails with probability below 1e-6 (Hoeffding's inequality: draws of a stochastic
quantizer are bounded, so no normal approximation is needed)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from suite.methods import (
    METHODS,
    CptMethod,
    CptQuantizer,
    GemmBits,
    LuqMethod,
    TatheMethod,
    cyclic_bits,
    gemm_bitops_ratio,
    get_method,
    luq_quantize,
    minmax_quantize,
    sawb_clip,
    sawb_quantize,
)
from suite.methods.cpt import cyclic_bits_all
from suite.methods.luq import luq_alpha, quantize_sawb
from suite.model import QuantConv2d, QuantLinear, VGG4bit, forward_macs_per_image, layer_macs_per_image
from suite.train import Stepper, build_model, distinct_codes

NEW_METHODS = ("luq4", "cpt", "tathe4-notanh", "tathe4-noclip", "tathe4-hardclip")
DELTA = 1e-6  # the probability a correct implementation may fail a statistical test


def _heavy_tailed(n: int, seed: int) -> torch.Tensor:
    """Gradient-like values over ~6 decades, both signs, so every LUQ branch (underflow, each
    exponent, the exact maximum) is exercised."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=gen) * torch.exp(2.0 * torch.randn(n, generator=gen))


def _luq_grid(g: torch.Tensor) -> torch.Tensor:
    alpha = g.abs().max() / 128
    return torch.cat([torch.zeros(1), alpha * 2.0 ** torch.arange(8, dtype=g.dtype)])


# --- LUQ ---------------------------------------------------------------------------------------


def test_luq_outputs_lie_on_the_log_grid():
    g = _heavy_tailed(20_000, seed=1)
    q = luq_quantize(g, generator=torch.Generator().manual_seed(2))
    grid = _luq_grid(g)
    assert torch.isin(q.abs(), grid).all()  # exactly {0, +-alpha 2^k, k = 0..7}, no rounding noise
    assert q.abs().max() == g.abs().max()  # the top level is max|g| itself
    assert (torch.sign(q) * torch.sign(g) >= 0).all()  # never flips a sign
    assert (q[g == 0] == 0).all()
    assert q.abs().unique().numel() <= 9


def test_luq_scale_is_max_abs_not_the_signed_max():
    # The reference code's torch.max(g) would give alpha = 0.5/128 here; max|g| gives 4/128.
    g = torch.tensor([-4.0, 0.5, 0.3, -0.01, 0.0])
    assert luq_alpha(g) == pytest.approx(4.0 / 128)
    q = luq_quantize(g, generator=torch.Generator().manual_seed(0))
    assert q[0] == -4.0  # the largest magnitude is exactly the top level, sign kept
    assert torch.isin(q.abs(), _luq_grid(g)).all()


def test_luq_is_unbiased_within_hoeffding_bounds():
    n, draws = 1000, 2000
    g = _heavy_tailed(n, seed=3)
    gen = torch.Generator().manual_seed(4)
    mean = torch.stack([luq_quantize(g, generator=gen) for _ in range(draws)]).mean(0)
    alpha = g.abs().max() / 128
    # Each draw of element i lies in an interval of width step_i = alpha * 2^floor(log2(|g|/alpha))
    # (alpha below the underflow threshold). Hoeffding: P(|mean - g| >= t) <= 2 exp(-2 K t^2 / step^2);
    # a union bound over the n elements at total probability DELTA gives the per-element tolerance:
    step = torch.where(g.abs() >= alpha, alpha * 2.0 ** torch.floor(torch.log2(g.abs() / alpha)), alpha)
    tol = step * math.sqrt(math.log(2 * n / DELTA) / (2 * draws))
    assert ((mean - g).abs() <= tol).all(), float(((mean - g).abs() / tol).max())
    # A systematic bias shows in the average normalised error, over all n*K independent draws:
    # each (draw - g)/step lies in an interval of width 1, so |average| < sqrt(ln(2/DELTA) / (2 n K)).
    avg = float(((mean - g) / step).mean())
    assert abs(avg) < math.sqrt(math.log(2 / DELTA) / (2 * n * draws))


def test_luq_keeps_values_already_on_the_grid():
    g = torch.tensor([128.0, -64.0, 1.0, -2.0, 0.0, 32.0])
    for seed in range(5):
        assert torch.equal(luq_quantize(g, generator=torch.Generator().manual_seed(seed)), g)


def test_luq_multiple_samples_average_draws_and_cut_the_variance():
    g = _heavy_tailed(5000, seed=5)
    one = torch.stack([luq_quantize(g, generator=torch.Generator().manual_seed(s)) for s in range(40)])
    four = torch.stack([luq_quantize(g, samples=4, generator=torch.Generator().manual_seed(100 + s)) for s in range(40)])
    ratio = float(four.var(0).sum() / one.var(0).sum())
    assert 0.15 < ratio < 0.35  # 1/4 in expectation
    alpha = g.abs().max() / 128
    units = four.abs() / alpha * 4  # the mean of 4 draws of integers (powers of two or 0) * 4: integers
    assert torch.allclose(units, units.round(), atol=1e-4)


def test_luq_gradient_hook_is_identity_forward_and_quantizes_backward():
    q = LuqMethod("t", "t").layer_quantizer(1, 3)
    y = torch.randn(64, requires_grad=True)
    out = q.output(y)
    assert torch.equal(out, y)
    g = _heavy_tailed(64, seed=6)
    out.backward(g)
    assert torch.isin(y.grad.abs(), _luq_grid(g)).all()


# --- SAWB --------------------------------------------------------------------------------------


def test_sawb_clip_formula():
    x = torch.tensor([1.0, -1.0, 3.0, -3.0])  # E[x^2] = 5, E|x| = 2
    assert float(sawb_clip(x)) == pytest.approx(12.1 * math.sqrt(5) - 12.2 * 2, rel=1e-6)
    gauss = torch.randn(1_000_000, generator=torch.Generator().manual_seed(0)) * 0.05
    # For N(0, s^2): E|x| = s sqrt(2/pi), so clip = (12.1 - 12.2 sqrt(2/pi)) s = 2.3658 s.
    assert float(sawb_clip(gauss)) == pytest.approx((12.1 - 12.2 * math.sqrt(2 / math.pi)) * 0.05, rel=5e-3)


def test_sawb_clip_degenerate_tensors_fall_back_to_max_abs():
    assert float(sawb_clip(torch.full((10,), -2.0))) == pytest.approx(2.0)  # formula gives -0.2
    assert float(sawb_clip(torch.zeros(10))) > 0


def test_sawb_weight_grid_is_4_bit_symmetric():
    w = torch.randn(64, 32, 3, 3, generator=torch.Generator().manual_seed(1)) * 0.1
    clip = sawb_clip(w)
    q = sawb_quantize(w, -7, 7)
    k = q / (clip / 7)
    assert torch.allclose(k, k.round(), atol=1e-4)
    assert k.round().abs().max() == 7  # SAWB clips the tails: max|W| > clip for a Gaussian
    assert w.abs().max() > clip
    assert q.unique().numel() <= 15
    codes = LuqMethod("t", "t").layer_quantizer(1, 3).codes(w)
    assert codes.dtype == torch.int8 and codes.abs().max() <= 7
    assert torch.allclose(codes.float() * (clip / 7), q, atol=1e-6)


def test_sawb_activations_unsigned_and_signed_input():
    quant = LuqMethod("t", "t").layer_quantizer(1, 3)
    relu = torch.relu(torch.randn(4, 8, 6, 6, generator=torch.Generator().manual_seed(2)))
    q = quant.input(relu)
    delta = 2 * sawb_clip(relu) / 15  # the code's Delta = 2 clip / (Qp - Qn), Qn = 0, Qp = 15
    k = q / delta
    assert torch.allclose(k, k.round(), atol=1e-4) and k.min() >= 0 and k.round().max() <= 15
    image = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(3))  # normalised: signed
    q = quant.input(image)
    k = q / (sawb_clip(image) / 7)
    assert torch.allclose(k, k.round(), atol=1e-4) and k.round().min() >= -7 and k.round().max() <= 7
    assert q.unique().numel() <= 15


def test_sawb_ste_passes_the_gradient_unchanged():
    x = torch.randn(100, requires_grad=True)
    quantize_sawb(x, -7, 7).sum().backward()
    assert torch.equal(x.grad, torch.ones(100))


def test_luq_first_and_last_layer_parameter():
    all_layers = LuqMethod("t", "t")
    inner = LuqMethod("t", "t", quantize_first_last=False)
    assert all(all_layers.layer_quantizer(i, 8) is not None for i in range(8))
    assert [inner.layer_quantizer(i, 8) is not None for i in range(8)] == [False] + [True] * 6 + [False]


# --- CPT ---------------------------------------------------------------------------------------


def test_cpt_bits_at_known_steps():
    # 3200 steps, 32 cycles: T = 100. b = rint(3 + 2.5 (1 - cos(pi (t mod 100) / 100))).
    expected = {0: 3, 25: 4, 50: 6, 75: 7, 99: 8, 100: 3, 150: 6, 3199: 8}
    # t=25: 3.732 -> 4; t=50: 5.5 -> 6 (half to even); t=75: 7.268 -> 7; t=99: 7.9988 -> 8.
    for t, b in expected.items():
        assert cyclic_bits(t, 3200, 3, 8, 32) == b
    assert cyclic_bits_all(3200, 3, 8, 32)[list(expected)].tolist() == list(expected.values())
    bits = cyclic_bits_all(3200, 3, 8, 32)
    assert all(np.all(np.diff(bits[c * 100 : (c + 1) * 100]) >= 0) for c in range(32))  # rises within a cycle


def test_cpt_on_step_sets_every_quantizer_and_eval_uses_max_bits():
    method = get_method("cpt")
    quantizers = [method.layer_quantizer(i, 8) for i in range(8)]
    assert quantizers[-1] is None and all(isinstance(q, CptQuantizer) for q in quantizers[:-1])
    method.on_step(quantizers, 25, 3200)
    assert {q.forward_bits for q in quantizers[:-1]} == {4}
    w = torch.randn(16, 8, 3, 3, generator=torch.Generator().manual_seed(0))
    q = quantizers[0].weight(w)
    for c in range(16):  # per output channel: 2^4 levels from its min to its max
        assert q[c].unique().numel() <= 16
        assert q[c].min() == pytest.approx(float(w[c].min())) and q[c].max() == pytest.approx(float(w[c].max()))
    with torch.inference_mode():  # evaluation: B_max = 8 bits
        q8 = quantizers[0].weight(w)
    assert q8.unique().numel() > 16 * 16
    assert all(q8[c].unique().numel() <= 256 for c in range(16))


def test_cpt_activation_quantizer_is_per_tensor_min_max():
    x = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(1))
    q = minmax_quantize(x, 3)
    assert q.unique().numel() <= 8
    assert q.min() == pytest.approx(float(x.min())) and q.max() == pytest.approx(float(x.max()))
    scale = (x.max() - x.min()) / 7
    assert (q - x).abs().max() <= scale / 2 + 1e-6


def test_cpt_gradient_stochastic_rounding_is_unbiased():
    n, draws = 500, 2000
    g = torch.randn(n, generator=torch.Generator().manual_seed(2))
    gen = torch.Generator().manual_seed(3)
    mean = torch.stack([minmax_quantize(g, 8, stochastic=True, generator=gen) for _ in range(draws)]).mean(0)
    scale = (g.max() - g.min()) / 255  # each draw lies in an interval of one step: Hoeffding again
    tol = scale * math.sqrt(math.log(2 * n / DELTA) / (2 * draws))
    assert ((mean - g).abs() <= tol).all()
    one = minmax_quantize(g, 8, stochastic=True, generator=gen)
    k = (one - g.min()) / scale
    assert torch.allclose(k, k.round(), atol=1e-3) and k.round().min() >= 0 and k.round().max() <= 255


# --- cost model --------------------------------------------------------------------------------


def test_bitops_cost_model():
    model = VGG4bit()
    macs = layer_macs_per_image(model)
    assert len(macs) == 8 and sum(macs) == forward_macs_per_image(model)
    assert gemm_bitops_ratio(GemmBits()) == 1.0
    assert gemm_bitops_ratio(GemmBits(8, 8, 8)) == pytest.approx(64 / 1024)
    assert gemm_bitops_ratio(GemmBits(4, 4, 4, samples=2)) == pytest.approx((16 + 32 + 32) / 3 / 1024)
    assert get_method("luq4").bitops_ratio(macs, 1000) == pytest.approx(16 / 1024)  # every layer 4x4
    inner = dataclasses.replace(get_method("luq4"), quantize_first_last=False)
    expected = (macs[0] + macs[-1] + sum(macs[1:-1]) * 16 / 1024) / sum(macs)
    assert inner.bitops_ratio(macs, 1000) == pytest.approx(expected)
    cpt = get_method("cpt")
    total = 3200
    brute = np.mean(
        [
            (sum(macs[:-1]) * (b * b + 2 * b * 8) / 3 / 1024 + macs[-1]) / sum(macs)
            for b in (cyclic_bits(t, total, 3, 8, 32) for t in range(total))
        ]
    )
    assert cpt.bitops_ratio(macs, total) == pytest.approx(brute)
    static8 = dataclasses.replace(cpt, min_bits=8).bitops_ratio(macs, total)
    # CPT's paper: FW(3,8)/BW8 costs 36.67 % fewer BitOPs than static FW8/BW8 (docs/methods.md).
    assert 1 - cpt.bitops_ratio(macs, total) / static8 == pytest.approx(0.3667, abs=0.005)
    assert get_method("fp32").bitops_ratio(macs, total) is None
    assert get_method("tathe4").bitops_ratio(macs, total) is None


# --- registry and ablations --------------------------------------------------------------------


def test_methods_are_registered_with_their_knobs():
    assert set(NEW_METHODS) <= set(METHODS)
    ref = get_method("tathe4")
    notanh, noclip, hard = (get_method(f"tathe4-{s}") for s in ("notanh", "noclip", "hardclip"))
    assert all(isinstance(m, TatheMethod) for m in (notanh, noclip, hard))
    assert (notanh.projection, notanh.grad_clip_norm) == (None, ref.grad_clip_norm)
    assert (noclip.projection, noclip.grad_clip_norm) == ("tanh", None)
    assert (hard.projection, hard.projection_alpha, hard.grad_clip_norm) == ("hardclip", 3.0, 0.5)
    assert get_method("luq4").quantizes_gradients and get_method("cpt").quantizes_gradients
    assert not ref.quantizes_gradients
    assert isinstance(get_method("cpt"), CptMethod) and isinstance(get_method("luq4"), LuqMethod)
    w = [torch.tensor([[-5.0, 2.0, 4.0]])]
    hard.project_(w)
    assert w[0].tolist() == [[-3.0, 2.0, 3.0]]


# --- training ----------------------------------------------------------------------------------


class _Tiny(nn.Module):
    """A small CNN from the suite's quantizable layers: first conv, a middle conv, last linear."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            QuantConv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            QuantConv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), QuantLinear(64, 4),
        )  # fmt: skip

    def forward(self, x):
        return self.body(x)


def _tiny_task(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    patterns = torch.randn(4, 3, 8, 8, generator=gen)
    labels = torch.arange(128) % 4
    images = patterns[labels] + 1.5 * torch.randn(128, 3, 8, 8, generator=gen)  # signed, like normalised images
    return images, labels


@pytest.fixture
def one_thread():
    """Tiny tensors: one intra-op thread is faster, and immune to a busy machine's thread contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", ["fp32", "tathe4", *NEW_METHODS, "mxfp4-w", "nvfp4-w", "mxfp4", "nvfp4"])
def test_every_method_trains_a_synthetic_model_with_falling_loss(name, one_thread):
    torch.manual_seed(0)
    method = get_method(name)
    model = _Tiny()
    layers = [m for m in model.modules() if isinstance(m, (QuantConv2d, QuantLinear))]
    quantizers = []
    for i, layer in enumerate(layers):
        layer.quantizer = method.layer_quantizer(i, len(layers))
        quantizers.append(layer.quantizer)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=5e-4)
    steps = 60
    stepper = Stepper(model, method, optimizer, quantizers, total_steps=steps)
    images, labels = _tiny_task()
    losses = []
    for s in range(steps):
        batch = slice((s % 4) * 32, (s % 4 + 1) * 32)
        losses.append(float(stepper(images[batch], labels[batch])[0]))
    assert all(math.isfinite(v) for v in losses)
    first, last = np.mean(losses[:8]), np.mean(losses[-8:])
    assert last < 0.6 * first, (first, last)


@pytest.mark.parametrize("name", ["luq4", "cpt", "nvfp4"])
def test_methods_run_on_the_real_network(name, one_thread):
    """One step of the paper's VGG with the method attached (every layer shape, the signed image
    input), then an evaluation pass; the weight-code count the history records."""
    torch.manual_seed(0)
    method = get_method(name)
    model, quantizers = build_model(method, 10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    stepper = Stepper(model, method, optimizer, quantizers, total_steps=10)
    images, labels = torch.randn(4, 3, 32, 32), torch.arange(4)
    loss, _ = stepper(images, labels)
    assert math.isfinite(float(loss))
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.inference_mode():
        assert torch.isfinite(model(images)).all()
    codes = distinct_codes(model)
    if name == "luq4":
        assert len(codes) == 8 and max(codes.values()) <= 15
    else:
        assert codes == {}
