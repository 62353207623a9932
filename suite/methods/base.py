"""What a training method is, as data: per-layer quantizers plus the optimizer-side knobs
(gradient clipping, post-step projection). Methods know nothing of the training loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, NamedTuple, Sequence

import torch


class LayerQuantizer:
    """Identity on every path; a method overrides the paths it quantizes.

    weight(w): the weight the forward pass uses; input(x): the layer's input activation;
    output(y): identity in the forward pass, the place to quantize the output gradient in backward.
    """

    def weight(self, w: torch.Tensor) -> torch.Tensor:
        return w

    def input(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def output(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def codes(self, w: torch.Tensor) -> torch.Tensor | None:
        """Integer weight codes, for methods with a fixed integer weight grid; None otherwise."""
        return None

    def apply(self, layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Run ``layer`` (a QuantConv2d/QuantLinear: ``layer.op(x, w, b)``) on x through this quantizer.
        Methods that change more than the three paths above (SBM's bifurcated backward, DFQ's
        per-input choice among bit widths) override this."""
        return self.output(layer.op(self.input(x), self.weight(layer.weight), layer.bias))


class GemmBits(NamedTuple):
    """Bit widths of one layer's three training GEMMs: forward Y = X W (weight x activation),
    backward dX = G W (gradient x weight) and dW = G^T X (gradient x activation). ``samples`` > 1
    means the backward GEMMs run once per averaged gradient sample (LUQ's variance reduction)."""

    weight: int = 32
    activation: int = 32
    gradient: int = 32
    samples: int = 1


FP32_GEMM = GemmBits()


def gemm_bitops_ratio(bits: GemmBits) -> float:
    """CPT's cost model (docs/methods.md) for one layer, relative to FP32 (32 x 32 bit MACs):
    mean(b_w*b_a, b_g*b_w, b_g*b_a) / 32^2, the three GEMMs having the same MAC count. With
    b_w = b_a = b_fw and b_g = b_bw this is exactly mean(b_fw^2, b_fw*b_bw, b_fw*b_bw)/32^2."""
    forward = bits.weight * bits.activation
    backward = bits.samples * bits.gradient * (bits.weight + bits.activation)
    return (forward + backward) / (3 * 32 * 32)


def layers_bitops_ratio(layer_macs: Sequence[int], layer_bits: Sequence[GemmBits]) -> float:
    """The MAC-weighted mean of gemm_bitops_ratio over layers (FP32 layers count as 1)."""
    total = sum(layer_macs)
    if len(layer_macs) != len(layer_bits) or total <= 0:
        raise ValueError("layer_macs and layer_bits must be equally long, with a positive total")
    return sum(m * gemm_bitops_ratio(b) for m, b in zip(layer_macs, layer_bits)) / total


@dataclass(frozen=True)
class Method:
    """A training method. The base class is the FP32 baseline: no quantizer, the shared recipe's
    AdamW and gradient clipping, no projection."""

    name: str
    summary: str
    grad_clip_norm: float | None = 0.5  # global L2 norm over all parameters, before the optimizer step
    projection: str | None = None  # "tanh": W <- a*tanh(W/a); "hardclip": W <- clamp(W, -a, a)
    projection_alpha: float = 3.0
    quantizes_gradients: bool = False  # the saving is then simulated on float kernels
    range_bn: bool = False  # replace every BatchNorm by SBM's Range BN (methods/sbm.py)
    uses_step_loss: bool = False  # after_step reads the loss (PFQ); under DDP it is then averaged over ranks

    def layer_quantizer(self, index: int, count: int) -> LayerQuantizer | None:
        """The quantizer for quantizable layer ``index`` of ``count`` (forward order); None keeps it FP32."""
        return None

    def on_step(self, quantizers: list[LayerQuantizer | None], step: int, total_steps: int) -> None:
        """Called before every optimizer step; schedules (cyclic precision) change quantizers here."""

    def prepare_model(self, model: torch.nn.Module, quantizers: list[LayerQuantizer | None]) -> None:
        """Called once by build_model after the quantizers are attached, before the optimizer exists:
        a method may swap modules (Range BN) or add its own trainable or stateful submodules (DFQ's
        gates, PFQ's indicator), which then train, save and resume with the model."""
        if self.range_bn:
            from .sbm import use_range_bn  # here, not at import: sbm imports this module

            use_range_bn(model)

    def extra_loss(self, quantizers: list[LayerQuantizer | None]) -> torch.Tensor | None:
        """A term the training step adds to the cross-entropy of the forward pass just run (DFQ's cost
        regularizer), or None. Must not synchronise with the device."""
        return None

    def after_step(self, quantizers: list[LayerQuantizer | None], loss: torch.Tensor, step: int) -> None:
        """Called after every optimizer step with the step's (detached, on-device) cross-entropy.
        The base does nothing, so methods that do not need the loss never force a host sync."""

    def epoch_report(self, quantizers: list[LayerQuantizer | None]) -> dict:
        """Per-epoch data merged into the epoch's history entry (e.g. PFQ's switch points, DFQ's
        chosen-bits histogram); read once per epoch, so a host sync here is cheap."""
        return {}

    def bitops_ratio(self, layer_macs: Sequence[int], total_steps: int) -> float | None:
        """Bit operations of a training run relative to FP32 under CPT's cost model (averaged over
        the run's steps for methods whose bits change), or None where the method has no such model
        (its kernels compute in float and it quantizes no gradient). ``layer_macs``: MACs of each
        quantizable layer in forward order (model.layer_macs_per_image)."""
        return None

    def kernels(self, layer_count: int) -> str:
        """What the method's GEMMs really run on this CPU (bench's method_costs)."""
        if self.quantizes_gradients:
            return ("simulated: every GEMM runs in float32 on this CPU; the low-bit saving is the bit-operation "
                    "estimate, not a measured time")
        if self.layer_quantizer(0, layer_count) is not None:
            return ("float32 GEMMs on fake-quantized weights (codes x scale); the 4-bit storage is real in the "
                    "exported int4.onnx")
        return "float32"

    def project_(self, params: list[torch.Tensor]) -> None:
        """The post-step projection of the master weights (in place, outside autograd)."""
        if self.projection is None or not params:
            return
        a = self.projection_alpha
        with torch.no_grad():
            if self.projection == "tanh":
                torch._foreach_div_(params, a)
                torch._foreach_tanh_(params)
                torch._foreach_mul_(params, a)
            elif self.projection == "hardclip":
                torch._foreach_clamp_min_(params, -a)
                torch._foreach_clamp_max_(params, a)
            else:
                raise ValueError(f"unknown projection {self.projection!r}")


BITOPS_MODEL = (
    "CPT's cost model (Fu et al. 2021): per conv/linear layer the mean of (weight bits x activation bits), "
    "(gradient bits x weight bits) and (gradient bits x activation bits) over 32 x 32, for the forward, "
    "input-gradient and weight-gradient GEMMs, weighted by the layer's MACs, averaged over the run's steps"
)


def method_cost(method: Method, layer_macs: Sequence[int], total_steps: int) -> dict:
    """What the method would save on low-bit hardware, an estimate beside the measured step times: the
    kernels it really runs here, and its bit operations relative to FP32 under CPT's cost model."""
    ratio = method.bitops_ratio(layer_macs, total_steps)
    return {
        "summary": method.summary,
        "quantizes_gradients": method.quantizes_gradients,
        "kernels": method.kernels(len(layer_macs)),
        "bitops_ratio": {
            "value": ratio,
            "method": "estimated" if ratio is not None else "unavailable",
            "model": BITOPS_MODEL if ratio is not None else "not estimated: the method quantizes no gradient",
        },
    }


def projected_parameters(params: Iterable[torch.nn.Parameter]) -> list[torch.Tensor]:
    """The paper projects every parameter of 2 or more dimensions: all conv and linear weights."""
    return [p for p in params if p.dim() >= 2]
