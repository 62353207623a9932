"""SBM, "Scalable Methods for 8-bit Training of Neural Networks" (Banner, Hubara, Hoffer, Soudry,
NeurIPS 2018); reimplemented after the official code, eladhoffer/quantized.pytorch
models/modules/quantize.py (UniformQuantize, UniformQuantizeGrad, conv2d_biprec/linear_biprec, QConv2d,
QLinear, RangeBN) and models/resnet_quantized.py (which layers: every conv and FC, every BN a RangeBN).

What runs here:
- Weights: per-tensor min/max uniform quantization at ``bits`` (2^bits levels from min(W) to max(W),
  round to nearest), straight-through estimator: QConv2d/QLinear's ``quantize(weight, min, max)``.
- Activations (each conv/linear input): per-tensor min/max at ``bits``, round to nearest, STE.
  Simplification: the tensor's own min and max in training and evaluation; the code's QuantMeasure
  takes the batch mean of per-sample minima/maxima (clipping beyond them) and a running average of
  those for evaluation, state that would live outside the model's parameters.
- Gradient bifurcation (conv2d_biprec): the output gradient is quantized to ``grad_bits`` with
  stochastic rounding (per-tensor min/max, UniformQuantizeGrad) only on the path to the layer's
  input (dX); the weight and bias gradients use the unquantized output gradient. The code gets this
  by running the layer twice (one copy with x detached, one with W detached); here one custom
  autograd function runs the forward GEMM once and the two backward GEMMs from the two gradients,
  the same arithmetic at the cost of an ordinary layer.
- Range BN (RangeBN, the chunked official form) replaces every BatchNorm (1d and 2d).
- Biases stay FP32 (the code quantizes them to the weight bits with their own min/max; the paper's
  other methods here keep biases in float too). The BN output's gradient is not quantized (the
  code's RangeBN also quantizes it at its output; only the conv/linear dX path is quantized here).
- Every conv and linear is quantized, first and last included, as resnet_quantized.py does.
The optimizer is the harness's shared AdamW recipe with clipping 0.5 and no projection (SBM trained
ImageNet ResNets with SGD). Simulated: every GEMM runs in float (float32, or bfloat16 under autocast)
on values that lie on the 8-bit grids; the saving is the bit-operation estimate, not a measured time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import LayerQuantizer, Method
from .cpt import _MinMaxSTE, minmax_quantize

# --- Range BN --------------------------------------------------------------------------------------


def range_bn_scale_fix(chunk_size: int) -> float:
    """The official RangeBN's constant 0.5*0.35*(1 + sqrt(pi ln 4)) / sqrt(2 ln m), m the chunk size:
    for Gaussian data the mean per-chunk range E[max - min] ~ 2 sigma sqrt(2 ln m), so range * this
    is ~ sigma: measured 0.90-0.98 sigma for the conv layers' chunks (hundreds to thousands of values),
    coarser for small chunks (BatchNorm1d over a batch of 128: chunks of 8, 0.65-0.91 sigma)."""
    if chunk_size < 2:
        raise ValueError(f"Range BN needs chunks of at least 2 values, got {chunk_size}")
    return 0.5 * 0.35 * (1.0 + math.sqrt(math.pi * math.log(4.0))) / math.sqrt(2.0 * math.log(chunk_size))


def range_bn_chunks(n: int, num_chunks: int) -> int:
    """How many chunks the n values of a channel are split into: num_chunks when it divides n (every
    conv batch here: H*W is a multiple of 16), else the largest smaller count that divides n and
    leaves chunks of 2 or more (the code requires divisibility and fails otherwise; BatchNorm1d over
    a short last batch or the smoke tier's batch of 16 needs this)."""
    for chunks in range(min(num_chunks, n // 2), 0, -1):
        if n % chunks == 0:
            return chunks
    raise ValueError(f"Range BN cannot train on {n} value(s) per channel (needs at least 2)")


class RangeBatchNorm(nn.Module):
    """Range batch normalization (RangeBN in the official code), for (N, C) or (N, C, H, W) inputs.

    Training: per channel, the N*H*W values (in (N, H, W) order) are split into ``num_chunks`` equal
    chunks; scale = (mean over chunks of the chunk max - mean over chunks of the chunk min) *
    range_bn_scale_fix(chunk size); out = (x - mean) / (scale + eps) * gamma + beta, differentiated
    through max/min/mean like the code. Running mean and scale are exponential averages used in
    evaluation. Differences from the code, on purpose: the averaging follows torch's BatchNorm
    convention (running = 0.9 running + 0.1 batch; the code weights the *new* batch 0.9); gamma starts
    at 1 as BatchNorm's (the code draws it from U[0, 1)); running scale starts at 1 (the code's 0 would
    divide by eps before the first training step); no quantization of the input, scale or gamma inside
    the layer (the code's first version does it, its later one, FracTrain's copy, does not)."""

    def __init__(self, num_features: int, momentum: float = 0.1, eps: float = 1e-5, num_chunks: int = 16):
        super().__init__()
        self.num_features, self.momentum, self.eps, self.num_chunks = num_features, momentum, eps, num_chunks
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_scale", torch.ones(num_features))

    def extra_repr(self) -> str:
        return f"{self.num_features}, momentum={self.momentum}, eps={self.eps}, num_chunks={self.num_chunks}"

    def batch_stats(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, scale) per channel of a training batch."""
        c = x.shape[1]
        # (N*H*W) x C rows in the code's (N, H, W) order: a view, no copy, for channels_last inputs
        rows = x.movedim(1, -1).reshape(-1, c)
        n = rows.shape[0]
        chunks = range_bn_chunks(n, self.num_chunks)
        y = rows.view(chunks, n // chunks, c) if rows.is_contiguous() else rows.reshape(chunks, n // chunks, c)
        mean_max = y.amax(1).mean(0)
        mean_min = y.amin(1).mean(0)
        scale = (mean_max - mean_min) * range_bn_scale_fix(n // chunks)
        return rows.mean(0), scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        if self.training:
            mean, scale = self.batch_stats(x)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), self.momentum)
                self.running_scale.lerp_(scale.detach().to(self.running_scale.dtype), self.momentum)
        else:
            mean, scale = self.running_mean, self.running_scale
        # (x - mean) / (scale + eps) * gamma + beta as one pass over x: x * a + b per channel
        a = self.weight / (scale + self.eps)
        b = self.bias - mean * a
        return torch.addcmul(b.view(shape).to(x.dtype), x, a.view(shape).to(x.dtype))


def use_range_bn(model: nn.Module) -> None:
    """Replace every BatchNorm1d/2d of ``model`` in place by a RangeBatchNorm of the same width
    (the module names, so the forward passes and checkpoint keys of the parameters, stay)."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d)):
                setattr(parent, name, RangeBatchNorm(child.num_features, momentum=0.1, eps=1e-5))


# --- gradient bifurcation ---------------------------------------------------------------------------


def _autocast_cast(x: torch.Tensor, *tensors: torch.Tensor | None) -> list[torch.Tensor | None]:
    """The tensors in the dtype autocast would run the GEMM in (unchanged outside autocast), so the
    custom function below saves and differentiates exactly what its forward multiplied."""
    device = x.device.type
    if not torch.is_autocast_enabled(device):
        return [x, *tensors]
    dtype = torch.get_autocast_dtype(device)
    return [None if t is None else t.to(dtype) for t in (x, *tensors)]


class _BifurcatedConv(torch.autograd.Function):
    """conv2d forward once; backward: dX from the grad_bits stochastic-rounded output gradient, dW and
    db from the unquantized one (the official conv2d_biprec's gradients, one forward GEMM)."""

    @staticmethod
    def forward(ctx, x, w, b, geometry, grad_bits):  # geometry: the conv's (stride, padding, dilation, groups)
        ctx.save_for_backward(x, w)
        ctx.conf = (*geometry, grad_bits, None if b is None else [b.shape[0]])
        with torch.autocast(x.device.type, enabled=False):
            return F.conv2d(x, w, b, *geometry)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        stride, padding, dilation, groups, grad_bits, bias_sizes = ctx.conf
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        conv_bw = torch.ops.aten.convolution_backward
        dx = dw = db = None
        if need_x:
            gq = minmax_quantize(g, grad_bits, stochastic=True)
            dx = conv_bw(gq, x, w, None, stride, padding, dilation, False, [0, 0], groups, [True, False, False])[0]
        if need_w or need_b:
            _, dw, db = conv_bw(g, x, w, bias_sizes, stride, padding, dilation, False, [0, 0], groups,
                                [False, need_w, need_b and bias_sizes is not None])
        return dx, dw, db, None, None


class _BifurcatedLinear(torch.autograd.Function):
    """linear_biprec's gradients: dX = Q(G) W, dW = G^T X, db = sum G."""

    @staticmethod
    def forward(ctx, x, w, b, grad_bits):
        ctx.save_for_backward(x, w)
        ctx.grad_bits, ctx.has_bias = grad_bits, b is not None
        with torch.autocast(x.device.type, enabled=False):
            return F.linear(x, w, b)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        g2 = g.reshape(-1, g.shape[-1])
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = (minmax_quantize(g2, ctx.grad_bits, stochastic=True) @ w).reshape(x.shape)
        if ctx.needs_input_grad[1]:
            dw = g2.t() @ x.reshape(-1, x.shape[-1])
        if ctx.has_bias and ctx.needs_input_grad[2]:
            db = g2.sum(0)
        return dx, dw, db, None


def bifurcated(layer: nn.Module, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, grad_bits: int) -> torch.Tensor:
    """``layer``'s op on (x, w, b) with SBM's bifurcated backward (layer: a conv or a linear)."""
    x, w, b = _autocast_cast(x, w, b)
    if isinstance(layer, nn.Conv2d):
        geometry = (layer.stride, layer.padding, layer.dilation, layer.groups)
        return _BifurcatedConv.apply(x, w, b, geometry, grad_bits)
    return _BifurcatedLinear.apply(x, w, b, grad_bits)


# --- the method -------------------------------------------------------------------------------------


@dataclass
class SbmQuantizer(LayerQuantizer):
    bits: int = 8  # weights and activations
    grad_bits: int = 8  # the dX path's output gradient

    def weight(self, w: torch.Tensor) -> torch.Tensor:
        return _MinMaxSTE.apply(w, self.bits, False)  # per tensor, as the code's float(weight.min()/max())

    def input(self, x: torch.Tensor) -> torch.Tensor:
        return _MinMaxSTE.apply(x, self.bits, False)

    def apply(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return bifurcated(layer, self.input(x), self.weight(layer.weight), layer.bias, self.grad_bits)


@dataclass(frozen=True)
class SbmMethod(Method):
    bits: int = 8
    grad_bits: int = 8
    # SBM keeps the weight-gradient GEMM's output gradient in high precision; the paper names 16 bits,
    # used for that GEMM in the cost estimate (it is float32 here).
    weight_grad_bits: int = 16
    range_bn: bool = True
    quantizes_gradients: bool = True

    def layer_quantizer(self, index: int, count: int) -> LayerQuantizer:
        return SbmQuantizer(self.bits, self.grad_bits)

    def bitops_ratio(self, layer_macs: Sequence[int], total_steps: int) -> float:
        """CPT's cost model with the bifurcation's two gradients: forward W x A at bits x bits, dX = G W
        at grad_bits x bits, dW = G^T A at weight_grad_bits x bits; the same on every layer."""
        b = self.bits
        return (b * b + self.grad_bits * b + self.weight_grad_bits * b) / (3 * 32 * 32)
