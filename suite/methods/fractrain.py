"""FracTrain (Fu et al., NeurIPS 2020; docs/methods.md): progressive (PFQ) and dynamic (DFQ) fractional
quantization, reimplemented after the official code, GATECH-EIC/FracTrain fractrain_cifar/:
train_pfq.py (loss_diff_indicator, adaptive_adjust_precision, the window loop), train_dfq.py (the
option lists, cost vectors and computation loss of run_training), models.py (RNNGate,
ResNetRecurrentGateSP) and modules/quantize.py (QConv2d, QuantMeasure, quantize_grad).

Quantizers (both methods, as modules/quantize.py's QConv2d on its non-fixed path): weights per output
channel min/max, activations (each quantized layer's input) per tensor min/max, both round to nearest
with a straight-through estimator; the output gradient per tensor min/max with stochastic rounding.
Simplification shared with CPT (cpt.py): activations use the tensor's own min/max in evaluation too
(the code's QuantMeasure keeps running ranges). The optimizer is the harness's shared AdamW recipe
with clipping 0.5 (the code trains with SGD lr 0.1, 64k iterations). Simulated: every GEMM runs in
float on values on the low-bit grids; the saving is the bit-operation estimate (CPT's cost model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .base import FP32_GEMM, GemmBits, LayerQuantizer, Method, gemm_bitops_ratio, layers_bitops_ratio
from .cpt import CptQuantizer, _MinMaxSTE, _StochasticGradient

# --- PFQ: progressive fractional quantization ------------------------------------------------------


class PlateauIndicator:
    """train_pfq.py's loss_diff_indicator and the loop around it, on window-average training losses.

    Window e (1, 2, ...): the scale is the mean of the first min(e, 10) window losses. While switches
    remain, the last ``keep`` (5) window losses are kept; once there are 5, a turning point is when
    |L_i - L_now| / scale <= eps for each of the 4 earlier ones. Then the stage advances, eps is
    multiplied by ``decay`` after the 1st and the 2nd turning point (adaptive_threshold's two cases),
    and the kept losses are cleared. Host-side floats only: fed once per window."""

    def __init__(self, eps: float, decay: float, switches: int, keep: int = 5, scale_windows: int = 10):
        self.eps, self.decay, self.switches, self.keep, self.scale_windows = eps, decay, switches, keep, scale_windows
        self.stage, self.windows, self.scale_sum, self.recent = 0, 0, 0.0, []

    def feed(self, loss: float) -> bool:
        """One window's mean loss; True when this window is a turning point (stage just advanced)."""
        self.windows += 1
        if self.windows <= self.scale_windows:
            self.scale_sum += loss
        scale = self.scale_sum / min(self.windows, self.scale_windows)
        if self.stage >= self.switches:
            return False
        self.recent = (self.recent + [loss])[-self.keep :]
        if len(self.recent) < self.keep:
            return False
        now = self.recent[-1]
        if any(abs(before - now) / scale > self.eps for before in self.recent[:-1]):
            return False
        self.stage += 1
        if self.stage in (1, 2):
            self.eps *= self.decay
        self.recent = []
        return True

    def state(self) -> dict:
        return {"stage": self.stage, "windows": self.windows, "scale_sum": self.scale_sum, "recent": list(self.recent),
                "eps": self.eps}

    def load(self, state: dict) -> None:
        self.stage, self.windows = int(state["stage"]), int(state["windows"])
        self.scale_sum, self.recent, self.eps = float(state["scale_sum"]), [float(v) for v in state["recent"]], float(state["eps"])


class PfqSchedule(nn.Module):
    """PFQ's run state as a module of the model, so it is saved in checkpoints and resumes
    (get/set_extra_state, plain numbers: loadable with weights_only=True). The window loss sum stays
    on the device; one .item() per window feeds the indicator."""

    def __init__(self, method: "PfqMethod", quantizers: list[LayerQuantizer | None]):
        super().__init__()
        self.forward_schedule, self.grad_schedule = method.forward_bits, method.grad_bits
        self.window = method.window
        self.indicator = PlateauIndicator(method.eps, method.decay, len(method.forward_bits) - 1)
        self.quantizers = [q for q in quantizers if isinstance(q, CptQuantizer)]  # plain list: not submodules
        self.loss_sum: torch.Tensor | None = None
        self.count = 0
        self.switch_points: list[dict] = []
        self.apply_stage()

    def apply_stage(self) -> None:
        stage = self.indicator.stage
        for q in self.quantizers:
            q.forward_bits = q.eval_bits = self.forward_schedule[stage]
            q.grad_bits = self.grad_schedule[stage]

    def observe(self, loss: torch.Tensor, step: int) -> None:
        loss = loss.detach().float()
        self.loss_sum = loss if self.loss_sum is None else self.loss_sum + loss
        self.count += 1
        if self.count < self.window:
            return
        mean = (self.loss_sum / self.count).item()  # the one host sync, once per window
        self.loss_sum, self.count = None, 0
        if self.indicator.feed(mean):
            stage = self.indicator.stage
            self.switch_points.append({"stage": stage, "step": step + 1, "window": self.indicator.windows,
                                       "forward_bits": self.forward_schedule[stage],
                                       "grad_bits": self.grad_schedule[stage], "window_loss": mean})
            self.apply_stage()

    def report(self) -> dict:
        stage = self.indicator.stage
        return {"stage": stage, "forward_bits": self.forward_schedule[stage], "grad_bits": self.grad_schedule[stage],
                "eps": self.indicator.eps, "windows": self.indicator.windows, "switches": list(self.switch_points)}

    def get_extra_state(self) -> dict:
        partial = 0.0 if self.loss_sum is None else float(self.loss_sum.item())  # at checkpoint time only
        return {"indicator": self.indicator.state(), "loss_sum": partial, "count": self.count,
                "switch_points": list(self.switch_points)}

    def set_extra_state(self, state: dict) -> None:
        self.indicator.load(state["indicator"])
        self.count = int(state["count"])
        self.loss_sum = torch.tensor(float(state["loss_sum"])) if self.count else None
        self.switch_points = [dict(p) for p in state["switch_points"]]
        self.apply_stage()


def _schedule_of(quantizers: list[LayerQuantizer | None]) -> PfqSchedule | None:
    for q in quantizers:
        schedule = getattr(q, "schedule", None)
        if schedule is not None:
            return schedule
    return None


@dataclass(frozen=True)
class PfqMethod(Method):
    """FW/BW bits rise in stages (README example: FW 3->4->6->8, BW 6->6->8->8, eps 0.05, decay 0.3;
    the code's argparse defaults are eps 0.15, decay 0.4), switched by the loss-plateau indicator over
    windows of ``window`` steps (the code's eval_every, 400). Every conv and linear but the last is
    quantized (the code's ResNets keep their final nn.Linear in float; its first conv is quantized).
    The window loss is the mean step loss over the window (the code divides the window's sum by the
    loader length, 391 for 400 steps, a 2% quirk). Evaluation runs at the current stage's bits."""

    forward_bits: tuple[int, ...] = (3, 4, 6, 8)
    grad_bits: tuple[int, ...] = (6, 6, 8, 8)
    window: int = 400
    eps: float = 0.05
    decay: float = 0.3
    quantize_last: bool = False
    quantizes_gradients: bool = True
    uses_step_loss: bool = True  # the plateau indicator

    def __post_init__(self):
        if len(self.forward_bits) != len(self.grad_bits) or not self.forward_bits:
            raise ValueError("forward_bits and grad_bits must be equally long and not empty")
        if self.window < 1:
            raise ValueError(f"window must be at least 1, got {self.window}")

    def _quantized(self, index: int, count: int) -> bool:
        return self.quantize_last or index < count - 1

    def layer_quantizer(self, index: int, count: int) -> LayerQuantizer | None:
        if not self._quantized(index, count):
            return None
        return CptQuantizer(self.forward_bits[0], self.forward_bits[0], self.grad_bits[0])

    def prepare_model(self, model: nn.Module, quantizers: list[LayerQuantizer | None]) -> None:
        super().prepare_model(model, quantizers)
        schedule = PfqSchedule(self, quantizers)
        model.add_module("pfq", schedule)
        for q in schedule.quantizers:
            q.schedule = schedule  # how after_step finds it; the quantizers are plain objects

    def after_step(self, quantizers: list[LayerQuantizer | None], loss: torch.Tensor, step: int) -> None:
        schedule = _schedule_of(quantizers)
        if schedule is not None:
            schedule.observe(loss, step)

    def epoch_report(self, quantizers: list[LayerQuantizer | None]) -> dict:
        schedule = _schedule_of(quantizers)
        return {"pfq": schedule.report()} if schedule is not None else {}

    def bitops_ratio(self, layer_macs: Sequence[int], total_steps: int) -> float:
        """An estimate that assumes the stages split the run equally (the real switch points depend on
        the loss curve; each run's history records them)."""
        count = len(layer_macs)
        total = 0.0
        for fw, bw in zip(self.forward_bits, self.grad_bits):
            bits = [GemmBits(fw, fw, bw) if self._quantized(i, count) else FP32_GEMM for i in range(count)]
            total += layers_bitops_ratio(layer_macs, bits)
        return total / len(self.forward_bits)


# --- DFQ: dynamic fractional quantization ----------------------------------------------------------


class DfqGates(nn.Module):
    """models.py's per-block gate (AvgPool -> 1x1 conv C->32 -> ReLU -> 1x1 conv 32->16) for each gated
    layer, feeding one shared LSTM(16, 16) whose state is reset at the start of every forward pass
    (ResNetRecurrentGateSP.forward's init_hidden), then Linear(16 -> options), softmax and a
    straight-through argmax (RNNGate.forward). On a pooled 1x1 map a 1x1 conv is a Linear, which is
    what is used, so the same gate also serves a linear layer's (N, C) input.

    Also holds what the cost regularizer and the history need from the current forward pass and epoch:
    the masks (for extra_loss; dropped after the step), and per gated layer the count of choices of each
    option over the epoch's training steps, on the device."""

    def __init__(self, method: "DfqMethod", names: list[str], in_channels: list[int], macs: list[int]):
        super().__init__()
        k = len(method.forward_bits)
        self.gates = nn.ModuleList(
            nn.Sequential(nn.Linear(c, method.gate_dim), nn.ReLU(), nn.Linear(method.gate_dim, method.embed_dim))
            for c in in_channels
        )
        self.lstm = nn.LSTM(method.embed_dim, method.hidden_dim)
        self.proj = nn.Linear(method.hidden_dim, k)
        # models.py's init: conv weights N(0, 2/(k*k*out)) (k = 1 here), linear weights N(0, 2/(in*out))
        with torch.no_grad():
            for gate in self.gates:
                for m in gate:
                    if isinstance(m, nn.Linear):
                        m.weight.normal_(0.0, math.sqrt(2.0 / m.out_features))
            self.proj.weight.normal_(0.0, math.sqrt(2.0 / (method.hidden_dim * k)))
        self.names = names
        mean = sum(macs) / len(macs)
        # per gated layer: its MACs over the mean (train_dfq.py's conv_info / mean(conv_info); the code reads
        # per-layer FLOPs from a --conv_info file when given and weighs layers equally otherwise; VGG4bit's
        # gated layers differ in MACs by up to 18x, so they are weighed by MACs here)
        self.register_buffer("layer_weight", torch.tensor([m / mean for m in macs]), persistent=False)
        # per option: the bit products of its three GEMMs over 32^2 (cost_fw + cost_eb + cost_gc)
        costs = [3 * gemm_bitops_ratio(GemmBits(method.weight_bits, a, g)) for a, g in zip(method.forward_bits, method.grad_bits)]
        self.register_buffer("option_cost", torch.tensor(costs), persistent=False)
        self.register_buffer("counts", torch.zeros(len(names), k), persistent=False)
        self.register_buffer("cp_sum", torch.zeros(()), persistent=False)
        self.cp_steps = 0
        self.hidden = None
        self.masks: list[torch.Tensor] = []

    def decide(self, slot: int, x: torch.Tensor) -> torch.Tensor:
        """(N, options) mask, exactly one-hot in value, with the softmax's gradient (straight-through)."""
        if slot == 0:  # the first gated layer of a forward pass: a new batch
            self.hidden, self.masks = None, []
        # The gate runs in float32 whatever the backbone's autocast dtype (LSTM weights stay float32).
        with torch.autocast(x.device.type, enabled=False):
            pooled = x.float().mean((2, 3)) if x.dim() == 4 else x.float()
            out, self.hidden = self.lstm(self.gates[slot](pooled).unsqueeze(0), self.hidden)
            prob = F.softmax(self.proj(out.squeeze(0)), dim=1)
            hard = F.one_hot(prob.argmax(1), prob.shape[1]).to(prob.dtype)
            mask = hard + (prob - prob.detach())  # value: hard exactly; gradient: the softmax's
        if torch.is_grad_enabled():  # training steps only, not evaluation
            self.masks.append(mask)
            self.counts[slot] += hard.sum(0)
        return mask

    def cost_term(self, beta: float, target_percent: float, relax: float) -> torch.Tensor | None:
        """train_dfq.py's regularizer: computation_cost = sum over gated layers and options of
        (choices in the batch) * option cost * layer weight; cp = its ratio to FP32 in percent; the loss
        term is beta * computation_cost * reg with reg = -1 below target - relax, +1 from target + relax
        up, +-0.1 in between (the sign from the batch's cp, no gradient through it). On the device."""
        if not self.masks:
            return None
        per_layer = torch.stack([m.sum(0) @ self.option_cost for m in self.masks])  # (gated layers,)
        cost = (per_layer * self.layer_weight[: len(self.masks)]).sum()
        batch = self.masks[0].shape[0]
        cp = cost.detach() / (batch * 3 * len(self.masks)) * 100  # = sum(macs*cost) / (batch*3*sum(macs)) * 100
        one = torch.ones_like(cp)
        reg = torch.where(cp < target_percent - relax, -one,
                          torch.where(cp >= target_percent + relax, one, torch.where(cp >= target_percent, 0.1 * one, -0.1 * one)))
        self.cp_sum += cp
        self.cp_steps += 1
        return reg * cost * beta

    def report(self, forward_bits: Sequence[int], grad_bits: Sequence[int]) -> dict:
        counts = self.counts.tolist()  # the once-per-epoch sync
        cp = float(self.cp_sum) / self.cp_steps if self.cp_steps else None
        chosen = sum(sum(row) for row in counts)
        mean_bits = sum(n * forward_bits[k] for row in counts for k, n in enumerate(row)) / chosen if chosen else None
        self.counts.zero_(), self.cp_sum.zero_()
        self.cp_steps = 0
        return {
            "options": [f"{a}/{g}" for a, g in zip(forward_bits, grad_bits)],
            "chosen_per_layer": {name: [int(n) for n in row] for name, row in zip(self.names, counts)},
            "mean_forward_bits": mean_bits,
            "mean_cp_percent": cp,
        }


@dataclass
class DfqQuantizer(LayerQuantizer):
    """A gated layer: its output is the mask-weighted sum of the layer run at every (forward bits,
    gradient bits) option, as ResNetRecurrentGateSP.forward mixes its block's candidates. The layer
    runs once per distinct forward bit width (3 times for [3, 4, 4, 6, 6]); options sharing it differ
    only in the gradient quantizer applied to the shared output, the same sum of gradients."""

    gates: DfqGates
    slot: int
    forward_bits: tuple[int, ...]
    grad_bits: tuple[int, ...]
    weight_bits: int

    def weight(self, w: torch.Tensor) -> torch.Tensor:
        return _MinMaxSTE.apply(w, self.weight_bits, True)  # per output channel, fixed bits (--weight_bits)

    def apply(self, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        mask = self.gates.decide(self.slot, x)
        w = self.weight(layer.weight)
        outputs: dict[int, torch.Tensor] = {}
        mixed = None
        for k, (a, g) in enumerate(zip(self.forward_bits, self.grad_bits)):
            if a not in outputs:
                outputs[a] = layer.op(_MinMaxSTE.apply(x, a, False), w, layer.bias)
            y = _StochasticGradient.apply(outputs[a], g)
            term = mask[:, k].to(y.dtype).view((-1,) + (1,) * (y.dim() - 1)) * y
            mixed = term if mixed is None else mixed + term
        return mixed


@dataclass(frozen=True)
class DfqMethod(Method):
    """Per layer and per input, a gate picks one (forward, gradient) bit pair from the options
    (train_dfq.py: forward [3, 4, 4, 6, 6], gradient [6, 6, 8, 8, 12]); weights at a fixed
    ``weight_bits`` (the README's example: 4, target cp 3 %). Gated: every conv and linear but the first
    and the last (the code's block convs are gated, its stem conv and final FC run in float; here
    "per block" is per layer). A cost regularizer holds the batch's cp near ``target_percent``.
    Simulated: every option's output is computed and mixed by the one-hot mask, as the code does."""

    forward_bits: tuple[int, ...] = (3, 4, 4, 6, 6)
    grad_bits: tuple[int, ...] = (6, 6, 8, 8, 12)
    weight_bits: int = 4
    target_percent: float = 3.0
    beta: float = 1e-3
    relax: float = 0.0
    gate_dim: int = 32
    embed_dim: int = 16
    hidden_dim: int = 16
    quantizes_gradients: bool = True

    def _gated(self, index: int, count: int) -> bool:
        return 0 < index < count - 1

    def layer_quantizer(self, index: int, count: int) -> LayerQuantizer | None:
        return None  # prepare_model attaches the gated layers' quantizers once the gates exist

    def prepare_model(self, model: nn.Module, quantizers: list[LayerQuantizer | None]) -> None:
        from ..model import layer_macs_per_image, quant_layers  # here: the model module imports methods

        super().prepare_model(model, quantizers)
        layers, macs = quant_layers(model), layer_macs_per_image(model)
        gated = [i for i in range(len(layers)) if self._gated(i, len(layers))]
        gates = DfqGates(
            self,
            [layers[i][0] for i in gated],
            [getattr(layers[i][1], "in_channels", None) or layers[i][1].in_features for i in gated],
            [macs[i] for i in gated],
        )
        model.add_module("dfq", gates)
        for slot, i in enumerate(gated):
            q = DfqQuantizer(gates, slot, self.forward_bits, self.grad_bits, self.weight_bits)
            layers[i][1].quantizer = quantizers[i] = q

    def extra_loss(self, quantizers: list[LayerQuantizer | None]) -> torch.Tensor | None:
        gates = _gates_of(quantizers)
        return None if gates is None else gates.cost_term(self.beta, self.target_percent, self.relax)

    def after_step(self, quantizers: list[LayerQuantizer | None], loss: torch.Tensor, step: int) -> None:
        gates = _gates_of(quantizers)
        if gates is not None:
            gates.masks = []  # release this step's graph

    def epoch_report(self, quantizers: list[LayerQuantizer | None]) -> dict:
        gates = _gates_of(quantizers)
        return {"dfq": gates.report(self.forward_bits, self.grad_bits)} if gates is not None else {}

    def bitops_ratio(self, layer_macs: Sequence[int], total_steps: int) -> float:
        """An estimate: the gated layers at the target cp (what the regularizer holds the mix near; each
        run's history has the cp it reached), the first and last layers FP32; the gates' own few
        thousand MACs per layer are left out."""
        count = len(layer_macs)
        total = sum(layer_macs)
        return sum(m * (self.target_percent / 100 if self._gated(i, count) else 1.0) for i, m in enumerate(layer_macs)) / total


def _gates_of(quantizers: list[LayerQuantizer | None]) -> DfqGates | None:
    for q in quantizers:
        if isinstance(q, DfqQuantizer):
            return q.gates
    return None
