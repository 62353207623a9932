"""Tathe (2026): symmetric per-tensor 4-bit weights (15 levels, scale max|W|/7 recomputed every
forward), straight-through estimator, tanh soft clip of the master weights after each step.
docs/method.md."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import LayerQuantizer, Method


def symmetric_scale(w: torch.Tensor, levels: int) -> torch.Tensor:
    """s = (max|W| + 1e-8) / levels, a 0-d tensor (the paper's code adds 1e-8 so s is never 0)."""
    lo, hi = torch.aminmax(w.detach())
    return (torch.maximum(hi, -lo) + 1e-8) / levels


def symmetric_codes(w: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(codes in -levels..levels as int8, scale). torch.round rounds half to even, as the paper's code."""
    scale = symmetric_scale(w, levels)
    codes = torch.round(w.detach() / scale).clamp_(-levels, levels).to(torch.int8)
    return codes, scale


# Up to this many levels the rounding bound below holds with a wide margin (levels * 2^-23 << 1/2).
_CLAMP_FREE_LEVELS = 2**16


class _SymmetricSTE(torch.autograd.Function):
    """Forward: codes * scale. Backward: the upstream gradient unchanged (no mask: c = max|W| means
    nothing is ever clipped). Returning codes*scale exactly, rather than the paper's
    W + (W_q - W).detach(), keeps every forward weight an exact multiple of the scale; the gradient
    is the same identity."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, levels: int) -> torch.Tensor:
        scale = symmetric_scale(w, levels)
        if levels > _CLAMP_FREE_LEVELS:
            return torch.round(w / scale).clamp_(-levels, levels).mul_(scale)
        # Speed (result unchanged): |w| <= max|W| and scale = fl(fl(max|W| + 1e-8) / levels), so
        # |w / scale| <= levels (1 + 2^-24)^2 < levels + 1/2 and round() never leaves -levels..levels: the
        # clamp is a no-op, bit for bit (NaN and -0.0 pass both ways alike). Dropping it and rounding in
        # place saves two passes over the weights and one allocation per layer and step.
        q = torch.div(w, scale)
        q.round_()
        return q.mul_(scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None


def quantize_symmetric(w: torch.Tensor, levels: int = 7) -> torch.Tensor:
    return _SymmetricSTE.apply(w, levels)


@dataclass
class SymmetricWeightQuantizer(LayerQuantizer):
    bits: int = 4

    @property
    def levels(self) -> int:
        return 2 ** (self.bits - 1) - 1

    def weight(self, w: torch.Tensor) -> torch.Tensor:
        return quantize_symmetric(w, self.levels)

    def codes(self, w: torch.Tensor) -> torch.Tensor:
        return symmetric_codes(w, self.levels)[0]


@dataclass(frozen=True)
class TatheMethod(Method):
    bits: int = 4

    def layer_quantizer(self, index: int, count: int) -> LayerQuantizer:
        return SymmetricWeightQuantizer(self.bits)  # every conv and linear, first and last included
