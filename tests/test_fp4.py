"""MXFP4 and NVFP4: the encoders against hand-computed cases from the formats' definitions and bit for bit
against torchao 0.18.0 (the reference implementation of the encodings), the stochastic rounding's
unbiasedness, the 16 x 16 weight tiles, the Hadamard transform cancelling in the weight gradient, and the
autograd functions' three GEMMs.

Statistical tests use fixed seeds and a Hoeffding bound that a correct implementation exceeds with
probability below DELTA (each draw of a stochastically rounded value lies between its two grid neighbours)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from suite.methods import METHODS, Fp4GemmQuantizer, Fp4Method, Fp4WeightQuantizer, get_method
from suite.methods.fp4 import GemmRecipe, weight_gradient_operands
from suite.methods.fp4_formats import (
    E2M1_MAGNITUDES,
    _e4m3_round_up,
    nvfp4_tensor_scale,
    MXFP4,
    NVFP4,
    fake_quantize,
    fake_quantize_2d,
    fake_quantize_weight,
    hadamard_along_batch,
    hadamard_matrix,
    mx_scale_exponent,
    random_hadamard,
    round_e2m1,
)
from suite.model import QuantConv2d, QuantLinear, quant_layers

with warnings.catch_warnings():  # torchao warns about its CUDA-only extensions on import
    warnings.simplefilter("ignore")
    from torchao.prototype.mx_formats.mx_tensor import MXTensor
    from torchao.prototype.mx_formats.nvfp4_tensor import NVFP4Tensor, per_tensor_amax_to_scale

DELTA = 1e-6
FORMATS = (MXFP4, NVFP4)
GRID = torch.tensor(E2M1_MAGNITUDES)


def _heavy_tailed(shape, seed: int) -> torch.Tensor:
    """Values whose blocks span ~8 decades, both signs, some exact zeros and negative zeros."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen) * torch.exp(3.0 * torch.randn(shape[0], *[1] * (len(shape) - 1), generator=gen))
    x.view(-1)[::97] = 0.0
    x.view(-1)[1::101] = -0.0
    return x


def _bits(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous().view(torch.int32)


# --- E2M1 ----------------------------------------------------------------------------------------


def test_e2m1_rounds_to_nearest_even_and_saturates_at_6():
    grid = torch.cat([GRID, -GRID])
    assert torch.equal(round_e2m1(grid), grid)  # every E2M1 value is kept
    ties = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, -0.25, -2.5, -5.0])
    # each tie goes to the neighbour with an even mantissa: 0, 1, 1, 2, 2, 4, 4
    assert round_e2m1(ties).tolist() == [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, -0.0, -2.0, -4.0]
    assert round_e2m1(torch.tensor([6.5, 7.9, 1e30, -1e30])).tolist() == [6.0, 6.0, 6.0, -6.0]
    assert round_e2m1(torch.tensor([float("nan")])).isnan().all()
    v = torch.linspace(-6, 6, 100_001)
    q = round_e2m1(v)
    distance = (q - v).abs()
    nearest = (v.abs().unsqueeze(1) - GRID).abs().min(1).values
    assert torch.isin(q.abs(), GRID).all() and torch.equal(distance, nearest)


# --- MXFP4 hand cases ------------------------------------------------------------------------------


def test_mx_scale_is_the_power_of_two_floor_log2_amax_minus_2():
    block = torch.full((32,), 0.3)
    block[5] = 1.0  # amax 1: exponent floor(log2 1) - 2 = -2, scale 0.25
    q = fake_quantize(block, MXFP4)
    assert q[5] == 1.0 and q[0] == 0.25  # 0.3 / 0.25 = 1.2 -> 1 -> 0.25
    assert mx_scale_exponent(torch.tensor([1.0, 7.0, 8.0, 0.1])).tolist() == [-2, 0, 1, -6]
    # amax 7: scale 2^0, and 7 is above E2M1's 6: saturated (the spec's clamp), not rounded to 8
    assert fake_quantize(torch.tensor([7.0] + [0.0] * 31), MXFP4)[0] == 6.0
    x = _heavy_tailed((16, 256), seed=1)
    q = fake_quantize(x, MXFP4)
    amax = x.reshape(16, 8, 32).abs().amax(-1, keepdim=True)
    scale = torch.exp2(torch.floor(torch.log2(amax)) - 2)
    elements = (q.reshape(16, 8, 32) / scale).abs()
    assert torch.isin(elements, GRID).all()  # every value is an E2M1 element times a power of two


def test_mx_block_of_zeros_and_block_with_one_huge_value():
    assert torch.equal(_bits(fake_quantize(torch.zeros(64), MXFP4)), _bits(torch.zeros(64)))
    block = torch.ones(32)
    block[3] = 1e30  # floor(log2 1e30) = 99: scale 2^97; 1e30 / 2^97 = 6.3 saturates to 6
    q = fake_quantize(block, MXFP4)
    assert q[3] == 6.0 * 2.0**97
    assert (q[torch.arange(32) != 3] == 0).all()  # 1 / 2^97 rounds to 0
    assert torch.equal(fake_quantize(torch.cat([block, torch.ones(32)]), MXFP4)[32:], torch.ones(32))


def test_mx_nan_or_inf_makes_its_block_nan_and_leaves_the_others():
    for special in (float("nan"), float("inf"), float("-inf")):
        x = torch.ones(64)
        x[40] = special
        q = fake_quantize(x, MXFP4)
        assert q[32:].isnan().all() and torch.equal(q[:32], torch.ones(32)), special


# --- NVFP4 hand cases ------------------------------------------------------------------------------


def test_nvfp4_e4m3_scale_rounds_to_nearest_and_saturates_at_448():
    # per-tensor scale amax / 2688 = 1 exactly; the first block holds the tensor's amax: scale 448
    x = torch.zeros(32)
    x[0], x[1] = 2688.0, 448.0 * 1.5
    x[16] = 1800.0  # second block: amax/6 = 300, whose nearest E4M3 values are 288 and 320 -> 288
    q = fake_quantize(x, NVFP4)
    assert q[0] == 2688.0 and q[1] == 448.0 * 1.5
    assert q[16] == 6.0 * 288.0  # 1800 / 288 = 6.25 clips to 6: the nearest scale fell below amax/6
    # stochastic rounding rounds the scale up (320): 1800 / 320 = 5.625 lands on 4 or 6 times 320
    draws = torch.stack([fake_quantize(x, NVFP4, stochastic=True) for _ in range(64)])[:, 16]
    assert set(draws.tolist()) == {4.0 * 320, 6.0 * 320}


def test_nvfp4_block_scale_never_exceeds_448_and_small_blocks_keep_the_smallest_normal_scale():
    x = torch.ones(32)
    x[0] = 1e30  # tensor scale 1e30/2688; the second block's scale would be ~4.5e-28: clamped to 2^-6
    q = fake_quantize(x, NVFP4)
    assert q[0] == pytest.approx(1e30, rel=1e-6)
    assert (q[1:] == 0).all()  # 1 * 2688/1e30 / 2^-6 rounds to 0
    assert torch.equal(fake_quantize(torch.zeros(48), NVFP4), torch.zeros(48))  # torchao: NaN (scale 0)


def test_nvfp4_nan_or_inf_anywhere_makes_the_tensor_nan():
    for special in (float("nan"), float("inf")):
        x = torch.ones(64)
        x[40] = special
        assert fake_quantize(x, NVFP4).isnan().all(), special


# --- bit for bit against torchao ---------------------------------------------------------------------


def _torchao(x: torch.Tensor, fmt) -> torch.Tensor:
    if fmt is MXFP4:
        return MXTensor.to_mx(x, torch.float4_e2m1fn_x2, block_size=32).dequantize(torch.float32)
    scale = per_tensor_amax_to_scale(x.abs().amax())
    return NVFP4Tensor.to_nvfp4(x, per_tensor_scale=scale).dequantize(torch.float32)


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_round_to_nearest_equals_torchao_bit_for_bit(fmt):
    for seed in range(6):
        x = _heavy_tailed((64, 512), seed)
        assert torch.equal(_bits(fake_quantize(x, fmt)), _bits(_torchao(x, fmt))), seed


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_conv_weight_blocks_run_along_input_channels_at_each_tap(fmt):
    w = _heavy_tailed((32, 64, 3, 3), seed=7)
    ours = fake_quantize_weight(w, fmt)
    # torchao on the (out x tap, in channel) matrix: the blocks an NHWC implicit GEMM reduces over
    rows = w.permute(0, 2, 3, 1).reshape(-1, 64).contiguous()
    ref = _torchao(rows, fmt).reshape(32, 3, 3, 64).permute(0, 3, 1, 2)
    assert torch.equal(_bits(ours), _bits(ref.contiguous()))


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_a_short_last_block_is_zero_padded(fmt):
    x = _heavy_tailed((8, 27), seed=8)  # 27: the first conv's 3 channels x 9 taps, not a block multiple
    padded = F.pad(x, (0, fmt.block * 2 - 27))
    assert torch.equal(fake_quantize(x, fmt), fake_quantize(padded, fmt)[:, :27])


# --- stochastic rounding ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_stochastic_rounding_is_unbiased_within_hoeffding_bounds(fmt):
    x = _heavy_tailed((4, 256), seed=9)
    gen = torch.Generator().manual_seed(10)
    draws = 2000
    samples = torch.stack([fake_quantize(x, fmt, stochastic=True, generator=gen) for _ in range(draws)])
    gap = _grid_gap(x, fmt)
    # each draw is one of x's two grid neighbours: at most two values, each within one grid step of x
    lo, hi = samples.amin(0), samples.amax(0)
    assert ((samples == lo) | (samples == hi)).all()
    assert ((samples - x).abs() <= gap * (1 + 1e-6)).all()
    # Hoeffding over the draws of each element (range: the gap), union over the elements
    bound = gap * math.sqrt(math.log(2 * x.numel() / DELTA) / (2 * draws))
    assert ((samples.mean(0) - x).abs() <= bound + 1e-6 * x.abs()).all()


def _grid_gap(x: torch.Tensor, fmt) -> torch.Tensor:
    """The E2M1 step (times the block's stochastic-rounding scale) around each element of x."""
    blocks = x.reshape(x.shape[0], -1, fmt.block)
    amax = blocks.abs().amax(-1, keepdim=True)
    if fmt is MXFP4:
        scale = torch.exp2(mx_scale_exponent(amax, round_up=True).float())
    else:
        tensor_scale = nvfp4_tensor_scale(x)
        scale = tensor_scale * _e4m3_round_up((amax / 6 / tensor_scale).clamp(2.0**-6, 448.0))
    v = (blocks / scale).abs()
    step = torch.where(v < 2, 0.5, torch.where(v < 4, 1.0, 2.0))
    return (step * scale).reshape(x.shape)


def test_stochastic_rounding_keeps_values_on_the_grid_exactly():
    x = torch.tensor([1.0, -0.5, 3.0, 6.0] * 8)  # amax 6: MX scale (rounded up) 1, every value representable
    for _ in range(20):
        assert torch.equal(fake_quantize(x, MXFP4, stochastic=True), x)


# --- 2-D weight tiles ----------------------------------------------------------------------------


def test_2d_weight_tiles_share_one_scale_and_commute_with_transposition():
    w = torch.full((32, 32), 0.01)
    w[0, 0] = 1.0  # the first 16 x 16 tile's amax; its other rows lose their small values
    q2 = fake_quantize_2d(w, NVFP4)
    q1 = fake_quantize_weight(w, NVFP4)
    assert q2[0, 0] == pytest.approx(1.0, rel=1e-6) and (q2[1:16, :16] == 0).all()
    assert (q1[1:16, :16] != 0).all()  # 1 x 16 blocks: each row has its own scale
    assert torch.equal(q2[16:, 16:], q1[16:, 16:])  # a tile of equal values: the same either way
    x = _heavy_tailed((48, 80), seed=11)  # 80: not a multiple of 16 in one of the two directions
    assert torch.equal(fake_quantize_2d(x, NVFP4).t(), fake_quantize_2d(x.t().contiguous(), NVFP4))


def test_2d_conv_weight_tiles_are_out_by_in_channels_at_each_tap():
    w = torch.zeros(32, 48, 3, 3)
    w[3, 5, 1, 2] = 1.0
    w[3, 6, 1, 2] = 1e-3  # same tile (channels 0..15 x 0..15), same tap: flushed by the tile's scale
    w[3, 6, 0, 0] = 1e-3  # same channels, another tap: another tile, kept
    w[20, 6, 1, 2] = 1e-3  # same tap, output channels 16..31: another tile, kept
    q = fake_quantize_2d(w, NVFP4)
    assert q[3, 6, 1, 2] == 0 and q[3, 6, 0, 0] != 0 and q[20, 6, 1, 2] != 0
    assert q[3, 5, 1, 2] == pytest.approx(1.0, rel=1e-6)


# --- the Hadamard transform -------------------------------------------------------------------------


def test_hadamard_is_orthogonal_exactly():
    h = hadamard_matrix(16)
    assert torch.equal(h.t() @ h, torch.eye(16))
    rh = random_hadamard(16, torch.Generator().manual_seed(0))
    assert torch.equal(rh.t() @ rh, torch.eye(16))
    assert set(rh.abs().unique().tolist()) == {0.25}


@pytest.mark.parametrize("batch", [32, 20])
def test_hadamard_cancels_in_the_weight_gradient_of_a_linear_and_a_conv(batch):
    gen = torch.Generator().manual_seed(13)
    recipe = GemmRecipe(NVFP4, weight_2d=True, wgrad_hadamard=True)
    g, x = torch.randn(batch, 24, generator=gen, dtype=torch.float64), torch.randn(batch, 40, generator=gen, dtype=torch.float64)
    gh, xh = weight_gradient_operands(g, x, recipe, quantize=False)
    assert not torch.allclose(gh[:batch], g)  # the operands really were mixed
    assert torch.allclose(gh.t() @ xh, g.t() @ x, rtol=0, atol=1e-12)
    g, x = torch.randn(batch, 8, 6, 6, generator=gen, dtype=torch.float64), torch.randn(batch, 5, 6, 6, generator=gen, dtype=torch.float64)
    w = torch.randn(8, 5, 3, 3, dtype=torch.float64)
    args = ([1, 1], [1, 1], [1, 1], False, [0, 0], 1, [False, True, False])
    plain = torch.ops.aten.convolution_backward(g, x, w, None, *args)[1]
    gh, xh = weight_gradient_operands(g, x, recipe, quantize=False)
    mixed = torch.ops.aten.convolution_backward(gh, xh, w, None, *args)[1]
    assert torch.allclose(mixed, plain, rtol=0, atol=1e-11)


def test_hadamard_along_batch_pads_to_a_group_and_mixes_only_within_groups():
    x = torch.zeros(20, 3)
    x[17] = 1.0  # in the second group of 16 (rows 16..31, padded)
    y = hadamard_along_batch(x, hadamard_matrix(16))
    assert y.shape == (32, 3) and (y[:16] == 0).all() and (y[16:].abs() == 0.25).all()


# --- the autograd functions -------------------------------------------------------------------------


def _layer(kind: str):
    torch.manual_seed(0)
    return QuantConv2d(32, 16, 3, padding=1) if kind == "conv" else QuantLinear(64, 32)


def _signs(shape, seed):
    return torch.randint(0, 2, shape, generator=torch.Generator().manual_seed(seed)).float() * 2 - 1


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_gemm_layer_runs_its_three_gemms_on_quantized_operands(fmt, kind):
    """Inputs and output gradients of +-1 are exact in both formats (stochastic rounding keeps them), so the
    gradients are exactly the products of the quantized operands: dX with the forward's quantized weight."""
    layer = _layer(kind)
    layer.quantizer = Fp4GemmQuantizer(fmt, weight_2d=fmt is NVFP4)
    shape = (32, 32, 4, 4) if kind == "conv" else (32, 64)
    x = _signs(shape, 1).requires_grad_()
    y = layer(x)
    wq = fake_quantize_weight(layer.weight, fmt, two_d=fmt is NVFP4)
    bias = layer.bias.detach()
    op = (lambda a, w: F.conv2d(a, w, bias, padding=1)) if kind == "conv" else (lambda a, w: F.linear(a, w, bias))
    assert torch.equal(y, op(x.detach(), wq))
    g = _signs(tuple(y.shape), 2)
    y.backward(g)
    xr = x.detach().requires_grad_()
    wr = wq.clone().requires_grad_()
    op(xr, wr).backward(g)
    assert torch.allclose(x.grad, xr.grad, rtol=1e-6, atol=1e-5) and torch.allclose(layer.weight.grad, wr.grad, rtol=1e-6, atol=1e-4)
    assert torch.allclose(layer.bias.grad, g.sum((0, 2, 3)) if kind == "conv" else g.sum(0))


def test_gemm_layer_input_gradient_is_unbiased_within_hoeffding_bounds():
    layer = QuantLinear(32, 16)
    layer.quantizer = Fp4GemmQuantizer(NVFP4, weight_2d=True)
    x = torch.randn(16, 32, requires_grad=True)
    g = torch.randn(16, 16)
    wq = fake_quantize_weight(layer.weight, NVFP4, two_d=True)
    torch.manual_seed(14)
    draws = 1000
    grads = []
    for _ in range(draws):
        x.grad = None
        layer(x).backward(g)
        grads.append(x.grad.clone())
    mean = torch.stack(grads).mean(0)
    # dX_j = sum_i Q(g)_i W_ij: each draw lies within sum_i gap_i |W_ij| of its range
    gap = _grid_gap(g, NVFP4)
    spread = gap @ wq.abs()
    bound = spread * math.sqrt(math.log(2 * mean.numel() / DELTA) / (2 * draws))
    assert ((mean - g @ wq).abs() <= bound + 1e-5).all()


def test_weight_ste_passes_the_gradient_unchanged_and_forwards_the_quantized_weight():
    for fmt in FORMATS:
        layer = _layer("linear")
        layer.quantizer = Fp4WeightQuantizer(fmt)
        x = torch.randn(8, 64)
        y = layer(x)
        assert torch.equal(y, F.linear(x, fake_quantize_weight(layer.weight, fmt), layer.bias))
        upstream = torch.randn_like(y)
        y.backward(upstream)
        assert torch.allclose(layer.weight.grad, upstream.t() @ x)


# --- the methods ---------------------------------------------------------------------------------


def test_the_four_methods_are_registered_with_their_switches():
    wanted = {
        "mxfp4-w": ("mxfp4", True, False, False, False),
        "nvfp4-w": ("nvfp4", True, False, False, False),
        "mxfp4": ("mxfp4", False, False, False, True),
        "nvfp4": ("nvfp4", False, True, True, True),
    }
    for name, (fmt, weights_only, two_d, hadamard, keep) in wanted.items():
        m = METHODS[name]
        assert isinstance(m, Fp4Method)
        assert (m.fmt, m.weights_only, m.weight_2d, m.wgrad_hadamard, m.keep_first_last) == (fmt, weights_only, two_d, hadamard, keep)
        assert m.quantizes_gradients is not weights_only and m.projection is None and m.grad_clip_norm == 0.5
        first, middle, last = (m.layer_quantizer(i, 8) for i in (0, 3, 7))
        assert isinstance(middle, Fp4GemmQuantizer if not weights_only else Fp4WeightQuantizer)
        assert (first is None and last is None) is keep
        assert "fp32.onnx" in m.kernels(8)
    with pytest.raises(ValueError, match="fmt"):
        Fp4Method("x", "y", fmt="int4")
    with pytest.raises(ValueError, match="wgrad_hadamard"):
        Fp4Method("x", "y", wgrad_hadamard=True)


def test_bitops_of_the_fully_quantized_methods():
    macs = [100, 300, 600]
    assert get_method("nvfp4-w").bitops_ratio(macs, 10) is None
    # first and last FP32 (ratio 1), the middle layer at 4 x 4 bits: 16/1024
    assert get_method("nvfp4").bitops_ratio(macs, 10) == pytest.approx((100 + 300 * 16 / 1024 + 600) / 1000)


# --- cost and export ----------------------------------------------------------------------------------


def test_bench_method_costs_say_the_formats_are_emulated_on_float_kernels():
    from suite import bench

    costs = bench.method_costs(["mxfp4-w", "nvfp4-w", "mxfp4", "nvfp4"])
    for name in ("mxfp4-w", "nvfp4-w"):
        assert costs[name]["kernels"].startswith("float32 GEMMs on") and "fp32.onnx only" in costs[name]["kernels"]
        assert costs[name]["bitops_ratio"]["method"] == "unavailable"
    for name in ("mxfp4", "nvfp4"):
        assert costs[name]["kernels"].startswith("simulated") and costs[name]["quantizes_gradients"]
        # VGG4bit: the first conv (3 channels) and the last linear are FP32, the rest at 4 x 4 bits
        assert 16 / 1024 < costs[name]["bitops_ratio"]["value"] < 0.1


@pytest.mark.parametrize("method", ["nvfp4-w", "mxfp4"])
def test_export_writes_fp32_onnx_alone_with_the_decoded_weights(tmp_path, capsys, method):
    import numpy as np
    import onnx
    import onnxruntime as ort

    from suite.cli import main
    from suite.train import model_from_checkpoint
    from tests.test_export import _save_checkpoint

    checkpoint, out = tmp_path / "c.pt", tmp_path / "onnx"
    _save_checkpoint(checkpoint, method)
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert sorted(p.name for p in out.glob("*.onnx")) == ["fp32.onnx"]
    assert "no onnxruntime CPU kernel runs these formats" in printed
    assert ("does not quantize activations" in printed) is (method == "mxfp4")
    model, _, _ = model_from_checkpoint(checkpoint)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(out / "fp32.onnx")).graph.initializer}
    fmt = NVFP4 if method.startswith("nv") else MXFP4
    for name, layer in quant_layers(model):
        expected = layer.weight.detach() if layer.quantizer is None else fake_quantize_weight(layer.weight, fmt)
        assert np.array_equal(inits[f"{name}.weight"], expected.contiguous().numpy()), name
    if method == "nvfp4-w":  # weights only: the file is the PyTorch network
        images = torch.randn(8, 3, 32, 32)
        model.eval()
        with torch.no_grad():
            reference = model(images).numpy()
        session = ort.InferenceSession(str(out / "fp32.onnx"), providers=["CPUExecutionProvider"])
        logits = session.run(None, {"input": images.numpy()})[0]
        assert np.allclose(logits, reference, rtol=1e-4, atol=1e-4)
    assert main(["verify-onnx", "--checkpoint", str(checkpoint), "--onnx", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "exports fp32.onnx alone" in err

