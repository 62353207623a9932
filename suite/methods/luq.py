"""LUQ (Chmiel et al., ICLR 2023): fully quantized training with 4-bit forward weights and activations
(per-tensor SAWB clipping, round to nearest, STE) and the logarithmic unbiased quantizer (LUQ) on each
quantized layer's output gradient, so both backward GEMMs see a 4-bit radix-2 gradient. docs/methods.md.

Choices where the spec leaves room (all knobs of LuqMethod):
- Weight integer range -7..7 (15 levels, symmetric, Delta = clip/7 so the grid ends exactly at +-clip).
  The reference code writes Qn = -8, Qp = 8, which is 17 levels and not 4 bits; (-8, 8) reproduces it.
- Activations: unsigned 0..15 (Delta = 2 clip / 15, the code's formula 2 clip / (Qp - Qn)). A tensor
  with negative values (only the first conv's input, the normalised image) switches to the signed
  range; the code then uses Qn = -8 with Qp left at 15 (24 levels); here the signed range is the
  weights' 4-bit -7..7 by default, (-8, 15) reproduces the code.
- Every conv and linear is quantized, first and last included (as tathe4); quantize_first_last=False
  keeps those two in FP32 (the LUQ paper's practice there is unverified, docs/methods.md).
- grad_samples = 1 (the code default; the headline may have used 2, unverified).
The optimizer is the harness's shared AdamW recipe with clipping 0.5 and no projection (LUQ itself
trained ImageNet ResNets with SGD + momentum; the harness compares methods under one recipe).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from .base import FP32_GEMM, GemmBits, LayerQuantizer, Method, layers_bitops_ratio

SAWB_C1, SAWB_C2 = 12.1, 12.2  # docs/methods.md, the 4-bit SAWB coefficients


# --- forward: SAWB uniform quantizer ---------------------------------------------------------------


def sawb_clip(x: torch.Tensor, c1: float = SAWB_C1, c2: float = SAWB_C2) -> torch.Tensor:
    """The SAWB clipping value c1*sqrt(E[x^2]) - c2*E[|x|] over the whole tensor (a 0-d tensor).

    The formula is negative for near-constant magnitudes (all +-a gives -0.1 a), where it would make
    no grid at all; there, and for an all-zero tensor, max|x| (floored at 1e-8) is used instead."""
    x = x.detach()
    n = x.numel()
    rms = torch.linalg.vector_norm(x) / math.sqrt(n)
    mean_abs = torch.linalg.vector_norm(x, 1) / n
    clip = c1 * rms - c2 * mean_abs
    if not clip > 0:  # one sync on a 0-d CPU tensor; the max pass only in the degenerate case
        clip = torch.linalg.vector_norm(x, float("inf"))
    return clip.clamp_min(1e-8)


def sawb_quantize(x: torch.Tensor, qmin: int, qmax: int, clip: torch.Tensor | None = None) -> torch.Tensor:
    """round(clamp(x / Delta, qmin, qmax)) * Delta with Delta = 2 clip / (qmax - qmin): the reference
    code's UniformQuantizeSawb forward. No gradient (see _SawbSTE)."""
    if clip is None:
        clip = sawb_clip(x)
    delta = 2.0 * clip / (qmax - qmin)
    return (x.detach() / delta).clamp_(qmin, qmax).round_().mul_(delta)


class _SawbSTE(torch.autograd.Function):
    """Forward: the SAWB-quantized tensor, exactly on its grid. Backward: identity (plain STE, the
    reference code's, with no mask for clipped values)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
        return sawb_quantize(x, qmin, qmax)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None, None


def quantize_sawb(x: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    return _SawbSTE.apply(x, qmin, qmax)


# --- backward: the logarithmic unbiased quantizer ---------------------------------------------------


def luq_alpha(g: torch.Tensor, exponent_bits: int = 3) -> torch.Tensor:
    """The underflow threshold alpha = max|g| / 2^(2^e - 1) (= max|g|/128 for e = 3): the levels
    alpha*2^k, k = 0..7, end exactly at max|g|. The reference code takes torch.max(g), the *signed*
    maximum, which for a tensor whose largest magnitude is negative puts that element above the top
    level; max|g| is what the paper describes and what is used here."""
    return g.detach().abs().max() / 2.0 ** (2**exponent_bits - 1)


def luq_quantize(
    g: torch.Tensor, exponent_bits: int = 3, samples: int = 1, generator: torch.Generator | None = None
) -> torch.Tensor:
    """LUQ (docs/methods.md), the mean of ``samples`` independent draws.

    With a = |g|/alpha: below 1, stochastic underflow to 0 or 1 with P(1) = a; from 1 up, between the
    neighbouring powers of two 2^e <= a < 2^(e+1), 2^(e+1) with P = (a - 2^e)/2^e, else 2^e. Both are
    unbiased, so E[output] = g exactly. The output of one draw lies on {0, +-alpha*2^k, k = 0..2^e - 1}.
    The reference code draws the same distribution with additive noise and a 4/3 factor inside
    floor(log2(.)); the direct form here is the same law (docs/methods.md, derived)."""
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    dtype = g.dtype
    g = g.detach().float()
    alpha = luq_alpha(g, exponent_bits).clamp_min(torch.finfo(torch.float32).tiny)
    a = g.abs().div_(alpha)  # magnitudes in units of alpha, in [0, 2^(2^e - 1)]
    # step = the gap to the next level up. From alpha up it is 2^floor(log2 a), read exactly off the
    # float32 exponent bits (mantissa masked to zero); below alpha (underflow) it is 1, and the level
    # below is 0 there instead of step.
    step = (a.view(torch.int32) & 0x7F800000).view(torch.float32).clamp_min_(1.0)
    above = a >= 1.0  # the level below is step, else 0
    count = None
    for _ in range(samples):  # a loop over samples, not elements: each draw is a few vectorised passes
        # Round up iff U < (a - low)/step, i.e. (U + [a >= 1]) * step < a: P = (a - low)/step (up
        # to float32 rounding of U + 1 to 2^-23; step is a power of two, so the product is exact).
        u = torch.empty_like(a, dtype=torch.float32).uniform_(generator=generator)  # in a's memory layout
        up = u.add_(above).mul_(step) < a
        count = up.float() if count is None else count.add_(up)
    levels = count.add_(above, alpha=samples)  # samples * low + number of round-ups, in units of step
    if samples > 1:
        levels.div_(samples)
    return torch.copysign(levels.mul_(step), g).mul_(alpha).to(dtype)


class _LuqGradient(torch.autograd.Function):
    """Identity in the forward pass; LUQ on the gradient in the backward pass."""

    @staticmethod
    def forward(ctx, y: torch.Tensor, exponent_bits: int, samples: int) -> torch.Tensor:
        ctx.exponent_bits, ctx.samples = exponent_bits, samples
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return luq_quantize(grad, ctx.exponent_bits, ctx.samples), None, None


# --- the method ------------------------------------------------------------------------------------


@dataclass
class LuqQuantizer(LayerQuantizer):
    weight_range: tuple[int, int] = (-7, 7)
    activation_range: tuple[int, int] = (0, 15)
    signed_activation_range: tuple[int, int] = (-7, 7)
    exponent_bits: int = 3
    grad_samples: int = 1

    def weight(self, w: torch.Tensor) -> torch.Tensor:
        return quantize_sawb(w, *self.weight_range)

    def input(self, x: torch.Tensor) -> torch.Tensor:
        # Decided on every call from this tensor. The reference code decides once (the first input with a
        # negative value switches the layer to the signed range) and keeps it. In both networks only the
        # first conv's input (the normalised images) has negative values, so the two differ only for a
        # batch whose normalised images are all non-negative, in practice never.
        signed = bool(x.detach().amin() < 0)
        return quantize_sawb(x, *(self.signed_activation_range if signed else self.activation_range))

    def output(self, y: torch.Tensor) -> torch.Tensor:
        return _LuqGradient.apply(y, self.exponent_bits, self.grad_samples)

    def codes(self, w: torch.Tensor) -> torch.Tensor:
        qmin, qmax = self.weight_range
        delta = 2.0 * sawb_clip(w) / (qmax - qmin)
        return (w.detach() / delta).clamp_(qmin, qmax).round_().to(torch.int8)


@dataclass(frozen=True)
class LuqMethod(Method):
    weight_range: tuple[int, int] = (-7, 7)
    activation_range: tuple[int, int] = (0, 15)
    signed_activation_range: tuple[int, int] = (-7, 7)
    exponent_bits: int = 3  # radix-2 gradient: sign + 3-bit exponent, no mantissa
    grad_samples: int = 1  # LUQ's "SMP" variance reduction: the mean of this many draws
    quantize_first_last: bool = True
    quantizes_gradients: bool = True

    def _quantized(self, index: int, count: int) -> bool:
        return self.quantize_first_last or 0 < index < count - 1

    def layer_quantizer(self, index: int, count: int) -> LayerQuantizer | None:
        if not self._quantized(index, count):
            return None
        return LuqQuantizer(
            self.weight_range, self.activation_range, self.signed_activation_range, self.exponent_bits, self.grad_samples
        )

    def bitops_ratio(self, layer_macs: Sequence[int], total_steps: int) -> float:
        count = len(layer_macs)
        w_bits = _range_bits(self.weight_range)
        g_bits = 1 + self.exponent_bits
        bits = []
        for index in range(count):
            if not self._quantized(index, count):
                bits.append(FP32_GEMM)
                continue
            a_range = self.signed_activation_range if index == 0 else self.activation_range  # image input is signed
            bits.append(GemmBits(w_bits, _range_bits(a_range), g_bits, self.grad_samples))
        return layers_bitops_ratio(layer_macs, bits)


def _range_bits(r: tuple[int, int]) -> int:
    """Bits needed for the integers r[0]..r[1]: 4 for -7..7, -8..7 and 0..15; 5 for the code's -8..8."""
    return math.ceil(math.log2(r[1] - r[0] + 1))
