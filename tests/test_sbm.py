"""SBM (Range BN, gradient bifurcation) as sbm8/sbm4, and Range BN alone as tathe4-rangebn."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from suite import bench
from suite.cli import main as cli_main
from suite.methods import RangeBatchNorm, SbmQuantizer, get_method, range_bn_scale_fix
from suite.methods.sbm import range_bn_chunks
from suite.model import QuantConv2d, QuantLinear, VGG4bit, layer_macs_per_image
from suite.train import build_model, read_history

# --- Range BN ----------------------------------------------------------------------------------------


def test_scale_fix_is_the_official_constant():
    # 0.5 * 0.35 * (1 + sqrt(pi ln 4)) / sqrt(2 ln m), written out for m = 4
    assert range_bn_scale_fix(4) == pytest.approx(0.175 * (1 + math.sqrt(math.pi * 1.3862943611198906)) / math.sqrt(2 * 1.3862943611198906))
    assert range_bn_scale_fix(4) == pytest.approx(0.3244282, abs=1e-7)
    with pytest.raises(ValueError):
        range_bn_scale_fix(1)


def test_range_bn_on_a_hand_computed_case():
    """One channel, two images of 2x2, two chunks of 4 values in (N, H, W) order:
    chunk 1 = [1, 2, 3, 4] (max 4, min 1), chunk 2 = [-1, 0, 5, 9] (max 9, min -1).
    mean of maxima 6.5, mean of minima 0, range 6.5; scale = 6.5 * scale_fix(4) = 2.108783;
    mean = 23 / 8 = 2.875; out = (x - 2.875) / (2.108783 + 1e-5)."""
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[-1.0, 0.0], [5.0, 9.0]]]])
    bn = RangeBatchNorm(1, num_chunks=2)
    with torch.no_grad():
        bn.weight.fill_(2.0), bn.bias.fill_(0.5)
    out = bn(x)
    scale = 6.5 * 0.3244282
    assert scale == pytest.approx(2.108783, abs=1e-6)
    assert torch.allclose(out, (x - 2.875) / (scale + 1e-5) * 2.0 + 0.5, atol=1e-5)
    # the running statistics move 10% of the way (torch's BatchNorm convention), and evaluation uses them
    assert bn.running_mean.item() == pytest.approx(0.2875) and bn.running_scale.item() == pytest.approx(0.9 + 0.1 * scale)
    bn.eval()
    assert torch.allclose(bn(x), (x - 0.2875) / (0.9 + 0.1 * scale + 1e-5) * 2.0 + 0.5, atol=1e-5)


def test_range_bn_is_close_to_batch_norm_on_gaussian_inputs():
    """Gaussian activations of a conv layer's size (128 x 8 channels x 16 x 16, mean 1, std 3 per
    channel): chunk size 2048. Stated tolerance: each channel's scale within 10% of its standard
    deviation (the constant is a Gaussian approximation; measured 0.94-0.98 here), and the outputs
    within 0.1 of BatchNorm's on average (BN's outputs have mean |.| ~0.8), the mean exactly BN's."""
    torch.manual_seed(0)
    x = torch.randn(128, 8, 16, 16) * 3 + 1
    bn = RangeBatchNorm(8)
    mean, scale = bn.batch_stats(x)
    std = x.transpose(0, 1).reshape(8, -1).std(1, unbiased=False)
    assert torch.allclose(mean, x.mean((0, 2, 3)), atol=1e-5)
    assert ((scale / std - 1).abs() < 0.10).all(), scale / std
    out, ref = bn(x), F.batch_norm(x, None, None, training=True, eps=1e-5)
    assert (out - ref).abs().mean() < 0.1
    assert torch.corrcoef(torch.stack([out.flatten(), ref.flatten()]))[0, 1] > 0.9999  # the same affine map up to scale


def test_chunks_divide_the_values_and_keep_two_per_chunk():
    assert range_bn_chunks(128 * 64, 16) == 16
    assert range_bn_chunks(44, 16) == 11  # a short last BatchNorm1d batch: 11 chunks of 4
    assert range_bn_chunks(16, 16) == 8  # the smoke tier's batch of 16 in BatchNorm1d: chunks of 2
    with pytest.raises(ValueError, match="at least 2"):
        range_bn_chunks(1, 16)


@pytest.mark.parametrize("arch", ["vgg4bit", "simpleresnet4bit"])
def test_range_bn_methods_replace_every_batch_norm(arch):
    for name in ("sbm8", "tathe4-rangebn"):
        model, _ = build_model(get_method(name), 10, arch)
        kinds = [type(m) for m in model.modules()]
        assert nn.BatchNorm2d not in kinds and nn.BatchNorm1d not in kinds
        assert kinds.count(RangeBatchNorm) == (7 if arch == "vgg4bit" else 6)


# --- gradient bifurcation -----------------------------------------------------------------------------


def _identity_conv() -> QuantConv2d:
    """A 1x1 conv with the identity as weight (on the 8-bit grid from 0 to 1 exactly) and no bias:
    its input gradient *is* the output gradient that reaches the dX path."""
    conv = QuantConv2d(6, 6, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(6).view(6, 6, 1, 1))
    conv.quantizer = SbmQuantizer(8, 8)
    return conv


def test_bifurcation_quantizes_the_input_gradient_and_not_the_weight_gradient():
    torch.manual_seed(0)
    conv = _identity_conv()
    x = torch.randn(4, 6, 5, 5, requires_grad=True)
    g = torch.randn(4, 6, 5, 5) * torch.exp(torch.randn(4, 6, 5, 5))  # spread-out gradient values
    conv(x).backward(g)
    # dX: the 8-bit stochastic-rounded g: at most 256 distinct values, unbiased (close to g), not g
    assert torch.unique(x.grad).numel() <= 256 < torch.unique(g).numel()
    step = (g.max() - g.min()) / 255
    assert ((x.grad - g).abs() <= step * (1 + 1e-5)).all() and not torch.equal(x.grad, g)
    # dW: exactly the ordinary conv's weight gradient of the same forward (quantized input and
    # weight, straight-through) with the unquantized output gradient
    q = conv.quantizer
    xq, w = q.input(x.detach()), q.weight(conv.weight.detach()).requires_grad_()
    F.conv2d(xq, w).backward(g)
    assert torch.allclose(conv.weight.grad, w.grad, rtol=1e-6, atol=1e-6)


def test_bifurcation_in_a_linear_layer():
    torch.manual_seed(1)
    fc = QuantLinear(6, 6, bias=True)
    with torch.no_grad():
        fc.weight.copy_(torch.eye(6)), fc.bias.zero_()
    fc.quantizer = SbmQuantizer(8, 8)
    x = torch.randn(128, 6, requires_grad=True)
    g = torch.randn(128, 6) * torch.exp(2 * torch.randn(128, 6))
    fc(x).backward(g)
    assert torch.unique(x.grad).numel() <= 256 < torch.unique(g).numel()
    xq = fc.quantizer.input(x.detach())
    assert torch.allclose(fc.weight.grad, g.t() @ xq, rtol=1e-5, atol=1e-5)
    assert torch.allclose(fc.bias.grad, g.sum(0), rtol=1e-5, atol=1e-5)


def test_forward_is_the_quantized_layer():
    torch.manual_seed(2)
    conv = QuantConv2d(3, 4, 3, padding=1, stride=2)
    conv.quantizer = SbmQuantizer(8, 8)
    x = torch.randn(2, 3, 8, 8)
    q = conv.quantizer
    expected = F.conv2d(q.input(x), q.weight(conv.weight), conv.bias, 2, 1)
    assert torch.allclose(conv(x), expected, atol=1e-6)
    assert torch.unique(q.weight(conv.weight)).numel() <= 256


def test_bifurcation_under_bf16_autocast_on_cpu():
    torch.manual_seed(3)
    model, _ = build_model(get_method("sbm8"), 10, "simpleresnet4bit")
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(torch.randn(8, 3, 32, 32)), torch.randint(0, 10, (8,)))
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


# --- the methods ----------------------------------------------------------------------------------------


def test_bitops_estimate_follows_the_bifurcation():
    macs = layer_macs_per_image(VGG4bit())
    # forward 8x8, dX 8x8, dW 16x8 (the high-precision copy), every layer: 256 / 3072
    assert get_method("sbm8").bitops_ratio(macs, 100) == pytest.approx(256 / 3072)
    assert get_method("sbm4").bitops_ratio(macs, 100) == pytest.approx((16 + 16 + 64) / 3072)
    assert get_method("tathe4-rangebn").bitops_ratio(macs, 100) is None  # no gradient quantized
    costs = bench.method_costs(["sbm8", "tathe4-rangebn"])
    assert costs["sbm8"]["bitops_ratio"]["method"] == "estimated" and costs["sbm8"]["kernels"].startswith("simulated")


@pytest.mark.parametrize("method", ["sbm8", "sbm4", "tathe4-rangebn"])
def test_trains_one_epoch_through_the_cli(tmp_path, method):
    out = tmp_path / "run"
    assert cli_main(["train", "--method", method, "--arch", "simpleresnet4bit", "--synthetic", "--subset", "128",
                     "--epochs", "1", "--batch-size", "64", "--threads", "1", "--out", str(out)]) == 0
    entry = read_history(out / "history.json")["epochs"][0]
    assert math.isfinite(entry["train_loss"]) and 0 <= entry["test_acc"] <= 100
