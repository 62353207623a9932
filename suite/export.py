"""PyTorch VGG4bit or SimpleResNet4bit -> three ONNX files of the same trained network.

fp32.onnx  dequantized weights (codes * scale) as float initializers: the size and speed reference.
           MXFP4/NVFP4 checkpoints export this file alone, their weights decoded to float32 (FP4_NOTE).
int4.onnx  true 4-bit storage: each quantized weight is an INT4 initializer (two codes a byte, in raw_data)
           -> DequantizeLinear(opset 21, per-layer scale) -> Conv/Gemm.
int8.onnx  the deployable fast path: the same codes in int8 containers, activations quantized to uint8
           with static calibration, QDQ form that onnxruntime fuses into QLinearConv/QGemm on x86.

BatchNorm: fp32 and int4 keep every BatchNorm as its own BatchNormalization node. Folding it into the
weights would change the int4 codes (impossible without breaking "the file holds the trained codes")
and in float it is exact only up to rounding, so neither file folds it; onnxruntime may still fuse
Conv+BN in the fp32 file at load time, which is its choice and shows in optimized_node_types.
int8 has to fold it (a QLinearConv output goes straight to a QuantizeLinear): BN's per-channel
multiplier goes into a per-output-channel weight scale (the int8 codes stay the trained codes,
sign-flipped for a negative multiplier) and its shift into the int32 bias. The int8 file is
therefore exact in its codes, not in its float weights; its target is accuracy, not bit agreement.

SimpleResNet4bit adds three things, all standard ONNX: strided convs, its identity residual (an Add
after the second conv's ReLU; in int8 the two uint8 operands are dequantized, added in float and
requantized with the sum's calibrated range) and global average pooling before the head
(GlobalAveragePool, float-only in ONNX, so int8 dequantizes around it). Range BN (tathe4-rangebn) is
an affine map per channel in evaluation, written as a BatchNormalization with var = (scale + eps)^2
and epsilon 0.

The graphs are built directly with onnx.helper: the paper's STE fake-quant traces to float
Div/Round/Clip/Mul, and torch.onnx only emits Q/DQ for 8-bit ranges.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper
from torch import nn

from . import data as datamod
from .atomic import write_atomic
from .bounds import check_count, check_optional_count
from .errors import UserError
from .locks import claim, hold
from .spec import ONNX_FILES, VERIFY_FILE
from .provenance import stamp
from .threads import torch_threads
from .userfiles import check_output_dir
from .methods import Fp4GemmQuantizer, Fp4WeightQuantizer, RangeBatchNorm, SymmetricWeightQuantizer, symmetric_codes
from .model import ARCH_NAME, QuantConv2d, QuantLinear, SimpleResNet4bit, VGG4bit, quant_layers
from .train import model_from_checkpoint

OPSET = 21  # first opset whose DequantizeLinear takes int4
IR_VERSION = 10  # the IR version that introduced INT4
FILES = ONNX_FILES
INPUT_NAME, OUTPUT_NAME = "input", "logits"
METADATA_KEY = "q4bench"  # metadata_props key holding the JSON description verify reads back
DEFAULT_CALIBRATION_IMAGES = 1024
FP4_NOTE = ("fp32.onnx only, weights MXFP4/NVFP4-decoded to float32: ONNX has no block-scaled FP4 type and no "
            "onnxruntime CPU kernel runs these formats")
FP4_ACTIVATIONS_NOTE = "; the file does not quantize activations, which this method's PyTorch forward pass does"


# ---------------------------------------------------------------------------------------------
# The network as a list of stages (one quantized layer with what follows it)


@dataclass
class BatchNormParams:
    mean: np.ndarray
    var: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    eps: float

    def multiplier_and_shift(self) -> tuple[np.ndarray, np.ndarray]:
        """BN in eval mode is y = a*x + b per channel; (a, b) in float64."""
        a = self.gamma.astype(np.float64) / np.sqrt(self.var.astype(np.float64) + self.eps)
        return a, self.beta.astype(np.float64) - a * self.mean.astype(np.float64)


@dataclass
class Stage:
    """A quantized conv or linear layer and the eval-mode ops after it, up to the next such layer."""

    name: str  # the PyTorch module name, e.g. "features.0"
    kind: str  # "conv" or "linear"
    codes: np.ndarray | None  # int8, values in -levels..levels; None for an FP4 (float_weight) stage
    scale: np.float32 | None  # the per-layer scale: forward weight = codes * scale, bit for bit
    bias: np.ndarray  # float32
    levels: int
    float_weight: np.ndarray | None = None  # an MXFP4/NVFP4 layer's decoded weight (or a float32 layer's)
    padding: int = 0
    flatten_before: bool = False
    bn: BatchNormParams | None = None
    relu: bool = False
    pool: bool = False  # MaxPool(2, 2) after the ReLU
    stride: int = 1
    residual_from: int | None = None  # add that earlier stage's output after this stage's ReLU
    global_pool_before: bool = False  # GlobalAveragePool (then Flatten) before this layer
    end: str = ""  # the module whose output is the stage's output before any residual (calibration)

    @property
    def weight(self) -> np.ndarray:
        if self.float_weight is not None:
            return self.float_weight
        # float32 product, the same IEEE operation as the PyTorch quantizer's codes * scale
        return self.codes.astype(np.float32) * self.scale

    @property
    def shape(self) -> tuple[int, ...]:
        return self.weight.shape if self.codes is None else self.codes.shape


def _layer_codes(name: str, layer: nn.Module, method: str) -> tuple[np.ndarray, np.float32, int]:
    q = layer.quantizer
    # Exactly this class: a subclass might also quantize the layer's input, which no file here reproduces.
    if type(q) is not SymmetricWeightQuantizer:
        kind = "no quantizer (FP32)" if q is None else type(q).__name__
        raise UserError(
            f"method {method!r}: layer {name} has {kind}; int4/int8 export needs symmetric per-layer 4-bit "
            f"weights (e.g. a tathe4 checkpoint), so this checkpoint cannot be exported"
        )
    if q.levels > 7:
        raise UserError(
            f"method {method!r}: layer {name} uses {q.bits}-bit weights (levels {q.levels}); INT4 holds at most 7"
        )
    with torch.no_grad():
        codes, scale = symmetric_codes(layer.weight, q.levels)
        forward_weight = q.weight(layer.weight)
        # The file must hold exactly the weights the PyTorch forward pass uses.
        if not torch.equal(codes.to(torch.float32) * scale, forward_weight):
            raise RuntimeError(f"layer {name}: codes * scale differ from the quantizer's forward weight")
    return codes.contiguous().numpy().copy(), np.float32(scale.item()), q.levels  # NCHW order (the model is NHWC)


def is_fp4(model: nn.Module) -> bool:
    """Whether a model trained with an MXFP4/NVFP4 method (its float32 layers included)."""
    return any(isinstance(m.quantizer, Fp4WeightQuantizer) for _, m in quant_layers(model))


def _fp4_weight(layer: nn.Module) -> np.ndarray:
    """The weight the forward pass uses, decoded to float32 (NCHW order); a layer the recipe keeps in float32
    (no quantizer) as it is."""
    q = layer.quantizer
    with torch.no_grad():
        w = layer.weight.detach().float() if q is None else q.dequantized_weight(layer.weight)
    return w.contiguous().numpy().copy()


def _bn_params(m: nn.Module) -> BatchNormParams:
    """A BatchNorm1d/2d, or a Range BN (eval: (x - mean) / (scale + eps) * gamma + beta, the same map as a
    BatchNorm with var (scale + eps)^2 and epsilon 0)."""
    if isinstance(m, RangeBatchNorm):
        stats = (m.running_mean, (m.running_scale.double() + m.eps) ** 2, m.weight, m.bias)
        eps = 0.0
    else:
        stats, eps = (m.running_mean, m.running_var, m.weight, m.bias), float(m.eps)
    arrays = (t.detach().numpy().astype(np.float32).copy() for t in stats)
    return BatchNormParams(*arrays, eps=eps)


BATCH_NORMS = (nn.BatchNorm2d, nn.BatchNorm1d, RangeBatchNorm)


def _quant_stage(name: str, m: nn.Module, method: str, fp4: bool, **fields) -> Stage:
    if fp4:
        codes, scale, levels, fields["float_weight"] = None, None, 4, _fp4_weight(m)
    else:
        codes, scale, levels = _layer_codes(name, m, method)
    conv = isinstance(m, QuantConv2d)
    if conv and (m.stride[0] != m.stride[1] or m.padding[0] != m.padding[1] or m.groups != 1 or m.dilation != (1, 1)):
        raise UserError(f"layer {name}: only square-strided, square-padded, ungrouped convs are exported")
    return Stage(
        name=name,
        kind="conv" if conv else "linear",
        codes=codes,
        scale=scale,
        bias=m.bias.detach().numpy().astype(np.float32).copy(),
        levels=levels,
        padding=m.padding[0] if conv else 0,
        stride=m.stride[0] if conv else 1,
        **{"end": name, **fields},
    )


def network_stages(model: nn.Module, method: str) -> list[Stage]:
    """Walk the eval-mode network; anything outside the two networks' vocabulary is refused."""
    fp4 = is_fp4(model)
    if isinstance(model, SimpleResNet4bit):
        return _simpleresnet_stages(model, method, fp4)
    if not isinstance(model, VGG4bit):
        raise UserError(f"network {type(model).__name__} is not exportable")
    stages: list[Stage] = []
    named = [(f"features.{i}", m) for i, m in enumerate(model.features)]
    named += [("flatten", None)] + [(f"classifier.{i}", m) for i, m in enumerate(model.classifier)]
    flatten_pending = False
    for name, m in named:
        if m is None:
            flatten_pending = True
        elif isinstance(m, (QuantConv2d, QuantLinear)):
            stages.append(_quant_stage(name, m, method, fp4, flatten_before=flatten_pending))
            flatten_pending = False
        elif not stages:
            raise UserError(f"module {name} ({type(m).__name__}) comes before any conv; not a VGG4bit")
        elif isinstance(m, BATCH_NORMS):
            stages[-1].bn = _bn_params(m)
            stages[-1].end = name
        elif isinstance(m, nn.ReLU):
            stages[-1].relu = True
            stages[-1].end = name
        elif isinstance(m, nn.MaxPool2d):
            if m.kernel_size not in (2, (2, 2)) or m.stride not in (2, (2, 2)) or m.padding not in (0, (0, 0)):
                raise UserError(f"module {name}: only MaxPool2d(2, 2) is exported")
            stages[-1].pool = True
        elif isinstance(m, nn.Dropout):
            pass  # identity in eval
        else:
            raise UserError(f"module {name} ({type(m).__name__}) is not exportable")
    return stages


def _simpleresnet_stages(model: SimpleResNet4bit, method: str, fp4: bool) -> list[Stage]:
    """conv_i -> bn_i -> relu_i for i = 1..6, the identity residual (stage 0's output added after stage
    1's ReLU), global average pooling, the linear head; the same order as SimpleResNet4bit.forward."""
    stages = []
    for i in range(1, 7):
        bn = getattr(model, f"bn{i}")
        if not isinstance(bn, BATCH_NORMS):
            raise UserError(f"module bn{i} ({type(bn).__name__}) is not exportable")
        stage = _quant_stage(f"conv{i}", getattr(model, f"conv{i}"), method, fp4, bn=_bn_params(bn), relu=True, end=f"relu{i}")
        stages.append(stage)
    stages[1].residual_from = 0
    stages.append(_quant_stage("fc", model.fc, method, fp4, flatten_before=True, global_pool_before=True))
    return stages


# ---------------------------------------------------------------------------------------------
# int4 packing (raw_data, never make_tensor's int32_data, whose int4 packing is wrong)


def pack_int4(codes: np.ndarray) -> bytes:
    """Two's-complement nibbles, element 2k in the low nibble and 2k+1 in the high nibble (the ONNX layout)."""
    flat = codes.astype(np.int8).ravel()
    if flat.size and (flat.min() < -8 or flat.max() > 7):
        raise ValueError("int4 codes must lie in -8..7")
    nibbles = flat.view(np.uint8) & 0x0F
    if nibbles.size % 2:
        nibbles = np.append(nibbles, np.uint8(0))
    return (nibbles[0::2] | (nibbles[1::2] << 4)).astype(np.uint8).tobytes()


def unpack_int4(raw: bytes, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of pack_int4: int8 array of the given shape, sign-extended."""
    count = math.prod(shape)
    packed = np.frombuffer(raw, dtype=np.uint8)
    if packed.size != (count + 1) // 2:
        raise ValueError(f"{packed.size} bytes of int4 data for {count} elements (expected {(count + 1) // 2})")
    nibbles = np.empty(packed.size * 2, dtype=np.uint8)
    nibbles[0::2], nibbles[1::2] = packed & 0x0F, packed >> 4
    signed = nibbles[:count].astype(np.int8)
    signed[signed > 7] -= 16
    return signed.reshape(shape)


def int4_initializer(name: str, codes: np.ndarray) -> TensorProto:
    return helper.make_tensor(name, TensorProto.INT4, list(codes.shape), pack_int4(codes), raw=True)


# ---------------------------------------------------------------------------------------------
# Graph building


class GraphBuilder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []

    def const(self, name: str, array: np.ndarray) -> str:
        self.initializers.append(onnx.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def add(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=f"{output}/{op}", **attrs))
        return output

    def model(self, doc: str, metadata: dict) -> onnx.ModelProto:
        graph = helper.make_graph(
            self.nodes,
            metadata.get("arch", ARCH_NAME),
            [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", 3, 32, 32])],
            [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N", None])],
            self.initializers,
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="q4bench", doc_string=doc
        )
        model.ir_version = IR_VERSION
        helper.set_model_props(model, {METADATA_KEY: json.dumps(metadata, sort_keys=True)})
        return model


def _float_layer(g: GraphBuilder, stage: Stage, x: str, weight: str, last: bool, outputs: list[str]) -> str:
    """Conv/Gemm with a float weight input, then BN, ReLU, MaxPool, the residual Add as separate nodes;
    ``outputs``: the earlier stages' output names (for the residual)."""
    p = stage.name
    if stage.global_pool_before:
        x = g.add("GlobalAveragePool", [x], f"{p}.gap")
    if stage.flatten_before:
        x = g.add("Flatten", [x], f"{p}.flat", axis=1)
    bias = g.const(f"{p}.bias", stage.bias)
    out = OUTPUT_NAME if last and stage.bn is None and not stage.relu else f"{p}.out"
    if stage.kind == "conv":
        pads = [stage.padding] * 4
        strides = [stage.stride] * 2
        x = g.add("Conv", [x, weight, bias], out, kernel_shape=list(stage.shape[2:]), pads=pads, strides=strides)
    else:
        x = g.add("Gemm", [x, weight, bias], out, transB=1)
    if stage.bn is not None:
        bn = stage.bn
        params = (("gamma", bn.gamma), ("beta", bn.beta), ("mean", bn.mean), ("var", bn.var))
        names = [g.const(f"{p}.bn.{k}", v) for k, v in params]
        x = g.add("BatchNormalization", [x, *names], f"{p}.bn", epsilon=bn.eps)
    if stage.relu:
        x = g.add("Relu", [x], f"{p}.relu")
    if stage.pool:
        x = g.add("MaxPool", [x], f"{p}.pool", kernel_shape=[2, 2], strides=[2, 2])
    if stage.residual_from is not None:
        x = g.add("Add", [x, outputs[stage.residual_from]], f"{p}.residual")
    return x


def _layers_metadata(stages: list[Stage], fmt: str, **extra) -> dict:
    return {
        "format": fmt,
        "arch": ARCH_NAME,  # meta's "arch" (export passes the checkpoint's) overrides
        "layers": [
            {"name": s.name, "kind": s.kind, "shape": list(s.shape), "scale": None if s.scale is None else float(s.scale)}
            for s in stages
        ],
        **extra,
    }


def build_fp32(stages: list[Stage], meta: dict) -> onnx.ModelProto:
    g = GraphBuilder()
    x, outputs = INPUT_NAME, []
    for i, s in enumerate(stages):
        x = _float_layer(g, s, x, g.const(f"{s.name}.weight", s.weight), i == len(stages) - 1, outputs)
        outputs.append(x)
    _rename_output(g, x)
    return g.model(f"{meta.get('arch', ARCH_NAME)}, dequantized 4-bit weights in float32", _layers_metadata(stages, "fp32", **meta))


def build_int4(stages: list[Stage], meta: dict) -> onnx.ModelProto:
    g = GraphBuilder()
    x, outputs = INPUT_NAME, []
    for i, s in enumerate(stages):
        g.initializers.append(int4_initializer(f"{s.name}.weight_int4", s.codes))
        scale = g.const(f"{s.name}.weight_scale", np.array(s.scale, dtype=np.float32))
        weight = g.add("DequantizeLinear", [f"{s.name}.weight_int4", scale], f"{s.name}.weight")
        x = _float_layer(g, s, x, weight, i == len(stages) - 1, outputs)
        outputs.append(x)
    _rename_output(g, x)
    return g.model(
        f"{meta.get('arch', ARCH_NAME)}, INT4 weight initializers -> DequantizeLinear -> Conv/Gemm; BatchNorm kept as nodes",
        _layers_metadata(stages, "int4", **meta),
    )


def _rename_output(g: GraphBuilder, x: str) -> None:
    """Make the last node's output the graph output 'logits'."""
    if x == OUTPUT_NAME:
        return
    last = g.nodes[-1]
    assert last.output[0] == x
    last.output[0] = OUTPUT_NAME


# ---------------------------------------------------------------------------------------------
# int8: calibration and the QDQ graph


@dataclass
class ActivationRange:
    low: float
    high: float


@dataclass
class Calibration:
    """Float ranges of the network input and of every stage's output (after BN, ReLU, pool)."""

    images: int
    input_range: ActivationRange
    stage_ranges: list[ActivationRange] = field(default_factory=list)
    residual_ranges: dict[int, ActivationRange] = field(default_factory=dict)  # stage index -> range of the sum
    pooled_ranges: dict[int, ActivationRange] = field(default_factory=dict)  # stage index -> its pooled input


@torch.inference_mode()
def calibrate(model: nn.Module, stages: list[Stage], images: torch.Tensor, batch_size: int = 128) -> Calibration:
    """Min/max over the calibration images (normalized float batches) of each stage output, via a hook on
    the module that ends the stage (Stage.end: its ReLU; the layer itself when nothing follows); of each
    residual sum (the next stage's layer input) and of each globally pooled vector (its layer's input)."""
    modules = dict(model.named_modules())
    probes = [(modules[s.end], "out", ("stage", i)) for i, s in enumerate(stages)]
    for i, s in enumerate(stages):
        if s.residual_from is not None:
            if i + 1 >= len(stages):
                raise UserError(f"layer {s.name}: a residual add cannot end the network")
            probes.append((modules[stages[i + 1].name], "in", ("residual", i)))
        if s.global_pool_before:
            probes.append((modules[s.name], "in", ("pooled", i)))
    lows = {key: math.inf for _, _, key in probes}
    highs = {key: -math.inf for _, _, key in probes}

    def hook(key):
        def record(_module, inputs, output=None):
            t = inputs[0] if output is None else output
            lows[key] = min(lows[key], float(t.min()))
            highs[key] = max(highs[key], float(t.max()))

        return record

    handles = [m.register_forward_hook(hook(key)) if where == "out" else m.register_forward_pre_hook(hook(key))
               for m, where, key in probes]
    try:
        model.eval()
        for start in range(0, images.shape[0], batch_size):
            model(images[start : start + batch_size])
    finally:
        for h in handles:
            h.remove()
    # The input range is known exactly: normalize() of 0..255 per channel.
    lo = min((0.0 - m) / s for m, s in zip(datamod.MEAN, datamod.STD))
    hi = max((1.0 - m) / s for m, s in zip(datamod.MEAN, datamod.STD))
    ranges = {key: ActivationRange(lows[key], highs[key]) for key in lows}
    return Calibration(
        images=int(images.shape[0]),
        input_range=ActivationRange(lo, hi),
        stage_ranges=[ranges[("stage", i)] for i in range(len(stages))],
        residual_ranges={i: r for (kind, i), r in ranges.items() if kind == "residual"},
        pooled_ranges={i: r for (kind, i), r in ranges.items() if kind == "pooled"},
    )


def uint8_params(r: ActivationRange) -> tuple[np.float32, np.uint8]:
    """Asymmetric uint8 (scale, zero point) covering [min(low,0), max(high,0)]; a post-ReLU range gets zero point 0,
    so QuantizeLinear's saturation at 0 *is* the ReLU."""
    low, high = min(r.low, 0.0), max(r.high, 0.0)
    scale = (high - low) / 255.0 if high > low else 1.0
    zero = int(np.clip(round(-low / scale), 0, 255))
    return np.float32(scale), np.uint8(zero)


@dataclass(frozen=True)
class QuantizedTensor:
    """A uint8 tensor of the int8 graph: its name, and its scale and zero point (values and initializer names)."""

    name: str
    scale: np.float32
    zero: np.uint8
    scale_name: str
    zero_name: str


def _quantize(g: GraphBuilder, value: str, r: ActivationRange, output: str) -> QuantizedTensor:
    """QuantizeLinear of a float tensor to uint8 over range r; its scale and zero point are OUTPUT_scale/_zero."""
    scale, zero = uint8_params(r)
    scale_name = g.const(f"{output}_scale", np.array(scale))
    zero_name = g.const(f"{output}_zero", np.array(zero))
    return QuantizedTensor(g.add("QuantizeLinear", [value, scale_name, zero_name], output), scale, zero, scale_name,
                           zero_name)


def _dequantize(g: GraphBuilder, x: QuantizedTensor, output: str) -> str:
    return g.add("DequantizeLinear", [x.name, x.scale_name, x.zero_name], output)


def build_int8(stages: list[Stage], calibration: Calibration, meta: dict) -> onnx.ModelProto:
    g = GraphBuilder()
    x = _quantize(g, INPUT_NAME, calibration.input_range, "input.q")
    layers_meta = []
    quantized_outputs: list[QuantizedTensor] = []  # per stage but the last: its uint8 output
    for i, s in enumerate(stages):
        last = i == len(stages) - 1
        x = _int8_layer_input(g, s, x, calibration.pooled_ranges.get(i))
        y = OUTPUT_NAME if last else f"{s.name}.out"
        layer = _int8_layer(g, s, x, y)
        if not last:
            x = _int8_layer_output(g, s, y, calibration, i, quantized_outputs, layer)
            quantized_outputs.append(x)
        elif s.bn is not None or s.relu or s.pool:
            raise UserError(f"layer {s.name}: the last layer must end the network (found BN/ReLU/pool after it)")
        layers_meta.append(layer)
    metadata = {
        "format": "int8",
        "arch": ARCH_NAME,  # meta's "arch" (export passes the checkpoint's) overrides
        "layers": layers_meta,
        "activation_type": "uint8",
        "calibration_images": calibration.images,
        **meta,
    }
    return g.model(
        f"{meta.get('arch', ARCH_NAME)}, int8-container 4-bit weight codes (BN folded into per-channel scales), uint8 activations, QDQ",
        metadata,
    )


def _int8_layer_input(g: GraphBuilder, s: Stage, x: QuantizedTensor, pooled: ActivationRange | None) -> QuantizedTensor:
    """The global average pool and the flatten before a layer, where it has them."""
    p = s.name
    if s.global_pool_before:  # GlobalAveragePool is float-only in ONNX: DQ -> pool -> Q
        pooled_value = g.add("GlobalAveragePool", [_dequantize(g, x, f"{p}.gap_in")], f"{p}.gap")
        x = _quantize(g, pooled_value, pooled, f"{p}.gap_q")
    if s.flatten_before:
        x = replace(x, name=g.add("Flatten", [x.name], f"{p}.flat", axis=1))  # on uint8: no float island
    return x


def _int8_layer(g: GraphBuilder, s: Stage, x: QuantizedTensor, y: str) -> dict:
    """The layer on its dequantized uint8 input, BN folded into its int8 codes' per-channel scales; writes y and
    returns the layer's metadata."""
    p = s.name
    # Fold BN: per-output-channel weight scale s*a (codes unchanged, sign moved into the codes) and bias.
    channels = s.codes.shape[0]
    a, shift = s.bn.multiplier_and_shift() if s.bn is not None else (np.ones(channels), np.zeros(channels))
    sign = np.where(a < 0, -1, 1).astype(np.int8)
    codes = s.codes * sign.reshape((-1,) + (1,) * (s.codes.ndim - 1))
    w_scale = (np.float64(s.scale) * np.abs(a)).astype(np.float32)
    w_scale = np.maximum(w_scale, np.float32(1e-30))  # a zero BN gamma would give a zero scale
    bias = a * s.bias.astype(np.float64) + shift
    bias_scale = np.float64(x.scale) * w_scale.astype(np.float64)
    bias_q = np.clip(np.round(bias / bias_scale), -(2**31), 2**31 - 1).astype(np.int32)
    x_dq = _dequantize(g, x, f"{p}.in_dq")
    # The explicit int8 zero point matters: onnxruntime 1.32 fuses DQ->Gemm into QGemm only when the
    # weight DequantizeLinear has one (measured; Conv fuses either way).
    w = g.add(
        "DequantizeLinear",
        [
            g.const(f"{p}.weight_int8", codes.astype(np.int8)),
            g.const(f"{p}.weight_scale", w_scale),
            g.const(f"{p}.weight_zero", np.zeros(codes.shape[0], dtype=np.int8)),
        ],
        f"{p}.weight",
        axis=0,
    )
    b = g.add(
        "DequantizeLinear",
        [g.const(f"{p}.bias_int32", bias_q), g.const(f"{p}.bias_scale", bias_scale.astype(np.float32))],
        f"{p}.bias",
        axis=0,
    )
    if s.kind == "conv":
        g.add("Conv", [x_dq, w, b], y, kernel_shape=list(codes.shape[2:]), pads=[s.padding] * 4,
              strides=[s.stride] * 2)
    else:
        g.add("Gemm", [x_dq, w, b], y, transB=1)
    return {"name": p, "kind": s.kind, "shape": list(codes.shape), "scale": float(s.scale),
            "sign_flipped_channels": int((sign < 0).sum())}


def _int8_layer_output(g: GraphBuilder, s: Stage, y: str, calibration: Calibration, i: int,
                       quantized_outputs: list[QuantizedTensor], layer: dict) -> QuantizedTensor:
    """The layer's output quantized to uint8 (the ReLU), max-pooled and added to an earlier stage's output where
    the stage says so; the activation and residual quantization recorded in ``layer``."""
    p = s.name
    # No Relu node: it would sit between Conv and QuantizeLinear and block the fusion; the uint8
    # zero point 0 of a post-ReLU range makes the saturation do the ReLU exactly.
    x = _quantize(g, y, calibration.stage_ranges[i], f"{p}.q")
    layer.update(activation_scale=float(x.scale), activation_zero_point=int(x.zero))
    if s.pool:  # max commutes with Q
        x = replace(x, name=g.add("MaxPool", [x.name], f"{p}.pool", kernel_shape=[2, 2], strides=[2, 2]))
    if s.residual_from is not None:  # DQ both operands, Add in float, Q with the sum's range
        res = quantized_outputs[s.residual_from]
        total = g.add("Add", [_dequantize(g, x, f"{p}.res_a"), _dequantize(g, res, f"{p}.res_b")], f"{p}.residual")
        x = _quantize(g, total, calibration.residual_ranges[i], f"{p}.res_q")
        layer.update(residual_scale=float(x.scale), residual_zero_point=int(x.zero))
    return x


# ---------------------------------------------------------------------------------------------
# Entry point


@dataclass
class ExportResult:
    out_dir: str
    files: dict[str, int]  # name -> bytes
    calibration_images: int
    method: str
    removed_stale_verify: bool = False  # OUT held a verify.json of the models this export replaced
    note: str = ""  # what the files leave out (FP4 checkpoints)


def checkpoint_data(checkpoint_state: dict, data_dir: str | None) -> tuple[datamod.Split, datamod.Split, str]:
    """(train, test, description) of the data a checkpoint was trained on: its dataset, its synthetic
    data regenerated from its seed, or real data from data_dir (which overrides the checkpoint's)."""
    config = checkpoint_state.get("config", {})
    synthetic = bool(config.get("synthetic", False)) and data_dir is None
    return datamod.load_data(
        config.get("dataset", "cifar10"),
        data_dir if data_dir is not None else config.get("data_dir"),
        synthetic,
        config.get("subset"),
        int(config.get("seed", 0)),
    )


def calibration_images(checkpoint_state: dict, data_dir: str | None, count: int, seed: int = 0) -> torch.Tensor:
    """Un-augmented, normalized training images: a seeded random sample of the checkpoint's training set."""
    train_split, _, _ = checkpoint_data(checkpoint_state, data_dir)
    order = torch.randperm(len(train_split), generator=torch.Generator().manual_seed(seed))[:count]
    return datamod.normalize(train_split.images[order])


def save_models(models: dict[str, onnx.ModelProto], out: Path) -> dict[str, int]:
    """Check and serialize every file first, then write each atomically: a refused model writes nothing, and
    a kill can only fall between renames (each file whole; the set may mix old and new until a rerun)."""
    blobs = {}
    for name, model in models.items():
        onnx.checker.check_model(model, full_check=True)
        blobs[name] = model.SerializeToString()
    for name, blob in blobs.items():
        write_atomic(out / f"{name}.onnx", lambda f, blob=blob: f.write(blob))
    return {name: len(blob) for name, blob in blobs.items()}


def export(
    checkpoint: str | Path,
    out_dir: str | Path,
    data_dir: str | None = None,
    calibration_count: int = DEFAULT_CALIBRATION_IMAGES,
    threads: int | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """overwrite: replace ONNX files and a verify.json in OUT that no export wrote (else refused)."""
    check_count(calibration_count, "calibration_images")
    check_optional_count(threads, "threads")
    check_output_dir(out_dir, "--out")
    with torch_threads(threads):
        return _export(checkpoint, out_dir, data_dir, calibration_count, overwrite)


def _export(checkpoint: str | Path, out_dir: str | Path, data_dir: str | None, calibration_count: int,
            overwrite: bool) -> ExportResult:
    model, method, state = model_from_checkpoint(checkpoint)
    stages = network_stages(model, method.name)
    meta = {"method": method.name, "epoch": int(state.get("epoch", 0)), "checkpoint": str(checkpoint),
            "arch": model.arch_name, "provenance": stamp()}  # in each file's metadata: the code that exported it
    out = Path(out_dir)
    if stages[0].codes is None:  # MXFP4/NVFP4: float weights only, no int4/int8 codes to store
        note = FP4_NOTE + (FP4_ACTIVATIONS_NOTE if any(isinstance(m.quantizer, Fp4GemmQuantizer) for _, m in quant_layers(model)) else "")
        models, images_used = {"fp32": build_fp32(stages, {**meta, "note": note})}, 0
    else:
        note = ""
        calibration = calibrate(model, stages, calibration_images(state, data_dir, calibration_count))
        models = {"fp32": build_fp32(stages, meta), "int4": build_int4(stages, meta),
                  "int8": build_int8(stages, calibration, meta)}
        images_used = calibration.images
    with hold(out, "export"):  # taken only now: a refused checkpoint leaves no folder behind
        claim(out, "export", (*(f"{name}.onnx" for name in models), VERIFY_FILE), overwrite)
        # A verify.json already here checked the models this export replaces; removed first, so that a kill
        # at any point leaves either no check or the old check beside the old files, never one beside new files.
        stale = out / VERIFY_FILE
        removed = stale.exists()
        stale.unlink(missing_ok=True)
        sizes = save_models(models, out)
    return ExportResult(str(out), sizes, images_used, method.name, removed, note)


def describe(result: ExportResult) -> str:
    files = ", ".join(f"{k}.onnx {v / 1e6:.2f} MB" for k, v in result.files.items())
    return (
        f"exported {result.method} checkpoint to {result.out_dir}: {files} "
        + (f"({result.note})" if result.note else f"(int8 calibrated on {result.calibration_images} training images)")
        + (f"; removed the {VERIFY_FILE} there, which checked the replaced files: rerun verify-onnx"
           if result.removed_stale_verify else "")
    )

