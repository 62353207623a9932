"""CPT, cyclic precision training (Fu et al., ICLR 2021): the forward bit width of weights and
activations follows a cosine cycle between B_min and B_max, set before every step; the output
gradients stay at a fixed B_bw bits with stochastic rounding. docs/methods.md.

Schedule: with T = total_steps / cycles,
    b_fw(t) = rint(B_min + 0.5 (B_max - B_min) (1 - cos(pi (t mod T) / T)))
rising from B_min to B_max within each cycle, then dropping straight back. Not exactly the official
code's (RICE-EIC/CPT cpt_cifar/train.py, cyclic_adjust_precision): there the period is the integer
int(iters / cycles) and the formula is written 1 + cos(. + pi). Here the period is the float
total_steps / cycles, a choice kept on purpose: the last cycle is whole and the run ends at B_max (the
bits evaluation uses). For the paper recipe's 58,650 steps and 32 cycles the two schedules give other
bits on 2,540 steps (4.3%), and the official one ends in a partial 33rd cycle at 3 bits; the run's
bit-operation cost is the same to 0.1%.

Quantizers (min/max asymmetric, as the official code's; 2^b levels from min to max):
- weights: per output channel, round to nearest, STE;
- activations (each quantized layer's input): per tensor, round to nearest, STE. Simplification:
  the min/max of the tensor itself, in training and in evaluation; the code keeps a running min/max
  for evaluation, which would be state outside the model's checkpoint;
- output gradients: per tensor, stochastic rounding (unbiased), B_bw bits.
- Evaluation (a forward pass without autograd, as train.evaluate) runs at B_max: the schedule's value
  at an epoch boundary is arbitrary within 3..8 bits, and a CPT run ends on a cycle's top, B_max.
- Layers: every conv and the first linear; the classifier (last linear) stays FP32, as the code keeps
  its final FC in full precision.
The optimizer is the harness's shared AdamW recipe with clipping 0.5 and no projection (CPT's CIFAR
code uses SGD lr 0.1, momentum 0.9, wd 1e-4, step decay at 32k/48k of 64k iterations).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from .base import FP32_GEMM, GemmBits, LayerQuantizer, Method, layers_bitops_ratio


def cyclic_bits(step: int, total_steps: int, min_bits: int, max_bits: int, cycles: int) -> int:
    """b_fw(t) of CPT's cosine cycle (docs/methods.md). Python's round() is half to even like rint."""
    period = max(total_steps, 1) / cycles
    phase = (step % period) / period
    return int(round(min_bits + 0.5 * (max_bits - min_bits) * (1.0 - math.cos(math.pi * phase))))


def cyclic_bits_all(total_steps: int, min_bits: int, max_bits: int, cycles: int) -> np.ndarray:
    """cyclic_bits for every step 0..total_steps-1, vectorised (numpy's rint is half to even)."""
    period = max(total_steps, 1) / cycles
    t = np.arange(total_steps, dtype=np.float64)
    phase = np.mod(t, period) / period
    return np.rint(min_bits + 0.5 * (max_bits - min_bits) * (1.0 - np.cos(np.pi * phase))).astype(np.int64)


def minmax_quantize(
    x: torch.Tensor,
    bits: int,
    per_channel: bool = False,
    stochastic: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Asymmetric uniform quantization onto 2^bits levels from min(x) to max(x) (per tensor, or per
    dim-0 slice with per_channel). Round to nearest, or stochastic rounding floor(v + U[0,1)), which
    is unbiased. No gradient."""
    x = x.detach()
    if per_channel:
        lo, hi = torch.aminmax(x.reshape(x.shape[0], -1), dim=1)
        shape = (-1,) + (1,) * (x.dim() - 1)
        lo, hi = lo.view(shape), hi.view(shape)
    else:
        lo, hi = torch.aminmax(x)
    qmax = 2**bits - 1
    scale = (hi - lo).clamp_min(1e-8) / qmax
    v = (x - lo).div_(scale)
    if stochastic:
        v.add_(torch.empty_like(v).uniform_(generator=generator)).floor_()  # noise in v's memory layout
    else:
        v.round_()
    return v.clamp_(0, qmax).mul_(scale).add_(lo)


class _MinMaxSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, bits: int, per_channel: bool) -> torch.Tensor:
        return minmax_quantize(x, bits, per_channel)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad, None, None


class _StochasticGradient(torch.autograd.Function):
    """Identity forward; per-tensor min/max stochastic rounding of the gradient at ``bits``."""

    @staticmethod
    def forward(ctx, y: torch.Tensor, bits: int) -> torch.Tensor:
        ctx.bits = bits
        return y.view_as(y)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return minmax_quantize(grad, ctx.bits, stochastic=True), None


@dataclass
class CptQuantizer(LayerQuantizer):
    forward_bits: int  # set by CptMethod.on_step before every training step
    eval_bits: int
    grad_bits: int

    def _bits(self) -> int:
        return self.forward_bits if torch.is_grad_enabled() else self.eval_bits

    def weight(self, w: torch.Tensor) -> torch.Tensor:
        return _MinMaxSTE.apply(w, self._bits(), True)

    def input(self, x: torch.Tensor) -> torch.Tensor:
        return _MinMaxSTE.apply(x, self._bits(), False)

    def output(self, y: torch.Tensor) -> torch.Tensor:
        return _StochasticGradient.apply(y, self.grad_bits)


@dataclass(frozen=True)
class CptMethod(Method):
    min_bits: int = 3
    max_bits: int = 8
    grad_bits: int = 8
    cycles: int = 32
    quantize_last: bool = False
    quantizes_gradients: bool = True

    def _quantized(self, index: int, count: int) -> bool:
        return self.quantize_last or index < count - 1

    def layer_quantizer(self, index: int, count: int) -> LayerQuantizer | None:
        if not self._quantized(index, count):
            return None
        return CptQuantizer(self.min_bits, self.max_bits, self.grad_bits)

    def forward_bits(self, step: int, total_steps: int) -> int:
        return cyclic_bits(step, total_steps, self.min_bits, self.max_bits, self.cycles)

    def on_step(self, quantizers: list[LayerQuantizer | None], step: int, total_steps: int) -> None:
        bits = self.forward_bits(step, total_steps)
        for q in quantizers:
            if isinstance(q, CptQuantizer):
                q.forward_bits = bits

    def bitops_ratio(self, layer_macs: Sequence[int], total_steps: int) -> float:
        """The cost model averaged over the run's steps (the ratio is linear in each step's cost)."""
        count, steps = len(layer_macs), max(total_steps, 1)
        schedule = cyclic_bits_all(steps, self.min_bits, self.max_bits, self.cycles)
        values, counts = np.unique(schedule, return_counts=True)
        total = 0.0
        for b, n in zip(values.tolist(), counts.tolist()):
            bits = [
                GemmBits(b, b, self.grad_bits) if self._quantized(i, count) else FP32_GEMM for i in range(count)
            ]
            total += n * layers_bitops_ratio(layer_macs, bits)
        return total / steps
