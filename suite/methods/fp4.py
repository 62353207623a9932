"""MXFP4 and NVFP4 training (formats in fp4_formats.py), simulated on float32 kernels.

Weights only (mxfp4-w, nvfp4-w): every conv and linear weight fake-quantized on every forward pass, blocks
along the reduction dimension, round-to-nearest-even, straight-through estimator; no tanh step and no other
post-step projection (the shared recipe's gradient clipping kept).

Fully quantized (mxfp4, nvfp4), after NVIDIA's NVFP4 pretraining recipe (arXiv 2509.25149) and Quartet
(arXiv 2505.14669): all three GEMMs of a layer take 4-bit inputs.
- forward  Y  = Q(X) * Q(W): activations blocked along C_in at each pixel (the reduction dimension at one
  kernel tap), weights as in the weights-only methods; round-to-nearest-even.
- input gradient dX = Qs(G) * Q(W): the output gradient blocked along C_out at each pixel, stochastic
  rounding; the forward's quantized weight (with 2-D weight scaling, the same values a transposed
  quantization gives).
- weight gradient dW = Qs(H G)^T Q(H X): both operands blocked along the batch (the reduction runs over
  images and pixels; a block is one channel at one pixel in 16 or 32 images), the gradient stochastically
  rounded, the unquantized input rounded to nearest-even; H a random 16 x 16 Hadamard transform (fresh
  signs each backward) over groups of 16 images when wgrad_hadamard is on, otherwise the identity. Mixing
  images commutes with the convolution's patch extraction, so H cancels exactly (H^T H = I).
- biases and BatchNorm stay float32; the bias gradient is the unquantized sum of G.
Switches (Fp4Method fields): weight_2d (16 x 16 weight tiles), wgrad_hadamard, keep_first_last (the first
conv and the last linear in float32, as both recipes keep some layers in high precision).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import FP32_GEMM, GemmBits, LayerQuantizer, Method, layers_bitops_ratio
from .fp4_formats import (
    FORMATS,
    HADAMARD_SIZE,
    Fp4Format,
    fake_quantize,
    fake_quantize_weight,
    hadamard_along_batch,
    random_hadamard,
)

ELEMENT_BITS = 4  # E2M1; the shared scales (8 bits per 32 or 16 elements) are not counted


class _WeightSTE(torch.autograd.Function):
    """Forward: the weight in the format. Backward: the upstream gradient unchanged."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, fmt: Fp4Format, two_d: bool) -> torch.Tensor:
        return fake_quantize_weight(w, fmt, two_d).to(w.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None, None


@dataclass(frozen=True)
class GemmRecipe:
    fmt: Fp4Format
    weight_2d: bool
    wgrad_hadamard: bool


def weight_gradient_operands(g: torch.Tensor, x: torch.Tensor, recipe: GemmRecipe, quantize: bool = True):
    """(G', X') for dW = G'^T X' summed over the batch: both Hadamard-mixed along the batch (when the recipe
    says so) and quantized along it, G' stochastically. ``quantize=False`` leaves out the rounding (tests)."""
    if recipe.wgrad_hadamard:
        h = random_hadamard(HADAMARD_SIZE).to(g.device)
        g, x = hadamard_along_batch(g, h), hadamard_along_batch(x, h)
    if quantize:
        g = fake_quantize(g, recipe.fmt, dim=0, stochastic=True)
        x = fake_quantize(x, recipe.fmt, dim=0)
    return g, x


class _Fp4Conv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, conv: nn.Conv2d, recipe: GemmRecipe):
        x, w = x.float(), w.float()
        wq = fake_quantize_weight(w, recipe.fmt, recipe.weight_2d)
        xq = fake_quantize(x, recipe.fmt, dim=1)
        ctx.save_for_backward(x, wq)
        ctx.geometry = (conv.stride, conv.padding, conv.dilation, False, [0, 0], conv.groups)
        ctx.recipe, ctx.has_bias = recipe, b is not None
        return F.conv2d(xq, wq, None if b is None else b.float(), conv.stride, conv.padding, conv.dilation, conv.groups)

    @staticmethod
    def backward(ctx, g):
        x, wq = ctx.saved_tensors
        recipe, args = ctx.recipe, ctx.geometry
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        conv_bw = torch.ops.aten.convolution_backward
        g = g.float()
        dx = dw = db = None
        if need_x:
            gq = fake_quantize(g, recipe.fmt, dim=1, stochastic=True)
            dx = conv_bw(gq, x, wq, None, *args, [True, False, False])[0]
        if need_w:
            gw, xw = weight_gradient_operands(g, x, recipe)
            dw = conv_bw(gw, xw, wq, None, *args, [False, True, False])[1]
        if need_b and ctx.has_bias:
            db = g.sum((0, 2, 3))
        return dx, dw, db, None, None


class _Fp4Linear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, recipe: GemmRecipe):
        x, w = x.float(), w.float()
        wq = fake_quantize_weight(w, recipe.fmt, recipe.weight_2d)
        xq = fake_quantize(x, recipe.fmt, dim=1)
        ctx.save_for_backward(x, wq)
        ctx.recipe, ctx.has_bias = recipe, b is not None
        return F.linear(xq, wq, None if b is None else b.float())

    @staticmethod
    def backward(ctx, g):
        x, wq = ctx.saved_tensors
        recipe = ctx.recipe
        g = g.float()
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = fake_quantize(g, recipe.fmt, dim=1, stochastic=True) @ wq
        if ctx.needs_input_grad[1]:
            gw, xw = weight_gradient_operands(g, x, recipe)
            dw = gw.t() @ xw
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = g.sum(0)
        return dx, dw, db, None


@dataclass
class Fp4WeightQuantizer(LayerQuantizer):
    fmt: Fp4Format
    weight_2d: bool = False

    def weight(self, w: torch.Tensor) -> torch.Tensor:
        return _WeightSTE.apply(w, self.fmt, self.weight_2d)

    def dequantized_weight(self, w: torch.Tensor) -> torch.Tensor:
        """The weight every forward GEMM uses (for export)."""
        return fake_quantize_weight(w, self.fmt, self.weight_2d)


@dataclass
class Fp4GemmQuantizer(Fp4WeightQuantizer):
    """All three GEMMs in the format (module docstring); runs in float32 even under autocast."""

    wgrad_hadamard: bool = False

    def apply(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        recipe = GemmRecipe(self.fmt, self.weight_2d, self.wgrad_hadamard)
        with torch.autocast(x.device.type, enabled=False):
            if isinstance(layer, nn.Conv2d):
                return _Fp4Conv.apply(x, layer.weight, layer.bias, layer, recipe)
            return _Fp4Linear.apply(x, layer.weight, layer.bias, recipe)


@dataclass(frozen=True)
class Fp4Method(Method):
    fmt: str = "nvfp4"
    weights_only: bool = True
    weight_2d: bool = False  # one scale per 16 x 16 weight tile instead of per 1 x block
    wgrad_hadamard: bool = False  # random 16 x 16 Hadamard transform on both weight-gradient GEMM inputs
    keep_first_last: bool = False  # first conv and last linear in float32

    def __post_init__(self):
        if self.fmt not in FORMATS:
            raise ValueError(f"fmt must be one of {', '.join(FORMATS)}, got {self.fmt!r}")
        if self.weights_only and self.wgrad_hadamard:
            raise ValueError("wgrad_hadamard needs weights_only=False: a weights-only method quantizes no gradient")
        object.__setattr__(self, "quantizes_gradients", not self.weights_only)

    def _quantized(self, index: int, count: int) -> bool:
        return not self.keep_first_last or 0 < index < count - 1

    def layer_quantizer(self, index: int, count: int) -> LayerQuantizer | None:
        if not self._quantized(index, count):
            return None
        fmt = FORMATS[self.fmt]
        if self.weights_only:
            return Fp4WeightQuantizer(fmt, self.weight_2d)
        return Fp4GemmQuantizer(fmt, self.weight_2d, self.wgrad_hadamard)

    def kernels(self, layer_count: int) -> str:
        note = "no kernel here computes in FP4; the export holds the weights dequantized, in fp32.onnx only"
        if self.weights_only:
            return f"float32 GEMMs on {self.fmt.upper()} fake-quantized weights (encoded and decoded); {note}"
        return (f"simulated: every GEMM runs in float32 on {self.fmt.upper()} fake-quantized weights, activations "
                f"and output gradients; the 4-bit saving is the bit-operation estimate, not a measured time; {note}")

    def bitops_ratio(self, layer_macs: Sequence[int], total_steps: int) -> float | None:
        """CPT's cost model at 4-bit elements on every quantized layer (scale bits not counted)."""
        if self.weights_only:
            return None
        count = len(layer_macs)
        b = ELEMENT_BITS
        bits = [GemmBits(b, b, b) if self._quantized(i, count) else FP32_GEMM for i in range(count)]
        return layers_bitops_ratio(layer_macs, bits)
