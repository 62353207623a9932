"""Invariants of the paper's weight quantizer (docs/method.md)."""

import torch

from suite.methods import get_method, quantize_symmetric, symmetric_codes
from suite.methods.base import projected_parameters
from suite.model import VGG4bit


def _weights(seed=0, shape=(64, 32, 3, 3), std=0.1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * std


def test_at_most_15_distinct_values_all_integer_multiples_of_scale():
    for seed in range(5):
        w = _weights(seed)
        q = quantize_symmetric(w)
        codes, scale = symmetric_codes(w, 7)
        assert torch.unique(q).numel() <= 15
        assert codes.min() >= -7 and codes.max() <= 7
        # Every forward weight is exactly its integer code times the scale.
        assert torch.equal(q, codes.to(torch.float32) * scale)
        assert torch.allclose(q / scale, torch.round(q / scale), atol=1e-5)


def test_scale_is_max_abs_over_7_and_largest_weight_maps_to_7():
    w = _weights(1)
    w.view(-1)[123] = -2.5  # the largest |W| is negative
    codes, scale = symmetric_codes(w, 7)
    assert torch.isclose(scale, torch.tensor((2.5 + 1e-8) / 7))
    assert codes.view(-1)[123] == -7
    w.view(-1)[123] = 2.5
    codes, _ = symmetric_codes(w, 7)
    assert codes.view(-1)[123] == 7
    assert (codes.abs() == 7).sum() >= 1


def test_scale_is_recomputed_every_call():
    w = _weights(2)
    q1 = quantize_symmetric(w)
    q2 = quantize_symmetric(w * 3)
    assert torch.allclose(q2, q1 * 3, atol=1e-6)


def test_rounding_is_half_to_even_like_the_paper():
    # max|W| = 7, and 7 + 1e-8 is 7 in float32, so the scale is exactly 1: 2.5 -> 2, 3.5 -> 4, -2.5 -> -2
    w = torch.tensor([7.0, 2.5, 3.5, -2.5, 0.4])
    codes, scale = symmetric_codes(w, 7)
    assert scale.item() == 1.0
    assert codes.tolist() == [7, 2, 4, -2, 0]


def test_ste_passes_upstream_gradient_unchanged():
    w = _weights(3).requires_grad_()
    upstream = torch.randn_like(w)
    quantize_symmetric(w).backward(upstream)
    assert torch.equal(w.grad, upstream)


def test_tanh_projection_matches_formula_and_skips_1d_parameters():
    model = VGG4bit()
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-6, 6)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    method = get_method("tathe4")
    method.project_(projected_parameters(model.parameters()))
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            expected = 3.0 * torch.tanh(before[name] / 3.0)
            assert torch.allclose(p, expected, atol=1e-6), name
            assert p.abs().max() < 3.0
        else:
            assert torch.equal(p, before[name]), name  # biases and BN untouched


def test_fp32_method_has_no_quantizer_and_no_projection():
    from suite.train import build_model

    fp32 = get_method("fp32")
    model, quantizers = build_model(fp32, 10)
    assert quantizers == [None] * 8
    p = [torch.full((2, 2), 5.0)]
    fp32.project_(p)
    assert torch.equal(p[0], torch.full((2, 2), 5.0))
    assert fp32.grad_clip_norm == get_method("tathe4").grad_clip_norm == 0.5
