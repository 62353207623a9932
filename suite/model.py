"""The paper's two networks: VGG4bit (docs/method.md) and SimpleResNet4bit (docs/method.md, "second
model", 73,178 parameters), in an architecture registry (ARCHS). Conv and linear layers take an
optional per-layer quantizer; with none, the same network is the FP32 baseline."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .bounds import check_arch_name
from .spec import PAPER_ARCH
from .methods.base import LayerQuantizer

ARCH_NAME = PAPER_ARCH  # the default architecture (the paper's)


class QuantConv2d(nn.Conv2d):
    """Conv2d whose weight (and, for some methods, input and output gradient) pass through a quantizer.
    The quantizer runs the layer (LayerQuantizer.apply), so a method may also change how its
    gradients are computed (SBM's bifurcation) or run it more than once (FracTrain's DFQ)."""

    quantizer: LayerQuantizer | None = None

    def op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.quantizer
        if q is None:
            return self.op(x, self.weight, self.bias)
        return q.apply(self, x)


class QuantLinear(nn.Linear):
    quantizer: LayerQuantizer | None = None

    def op(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return F.linear(x, w, b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.quantizer
        if q is None:
            return F.linear(x, self.weight, self.bias)
        return q.apply(self, x)


QUANT_LAYERS = (QuantConv2d, QuantLinear)


def _conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    return [
        QuantConv2d(c_in, c_out, 3, padding=1, bias=True),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        QuantConv2d(c_out, c_out, 3, padding=1, bias=True),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2, 2),
    ]


def init_paper_weights(model: nn.Module) -> None:
    """The paper's code (its Conv4bit/Linear4bit, so both networks): He-normal (fan-in) for convs,
    N(0, 1/in) for linears, zero biases, BN defaults."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                m.weight.normal_(0.0, math.sqrt(2.0 / fan_in))
                m.bias.zero_()
            elif isinstance(m, nn.Linear):
                m.weight.normal_(0.0, math.sqrt(1.0 / m.in_features))
                m.bias.zero_()


class VGG4bit(nn.Module):
    arch_name = "vgg4bit"
    memory_format = torch.channels_last  # see __init__; set_memory_format() switches one instance

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.num_classes = num_classes
        self.features = nn.Sequential(*_conv_block(3, 64), *_conv_block(64, 128), *_conv_block(128, 256))
        self.classifier = nn.Sequential(
            QuantLinear(256 * 4 * 4, 512),
            nn.BatchNorm1d(512),
            nn.ReLU(inplace=True),
            nn.Dropout(0.5),
            QuantLinear(512, num_classes),
        )
        init_paper_weights(self)
        # channels_last (NHWC) is oneDNN's native CPU layout: measured here (2 threads, batch 128,
        # interleaved, medians) a training step is 8-20% faster than in NCHW, for every method alike.
        # Only the memory order changes; parameters, state dicts and checkpoints are the same values.
        self.to(memory_format=self.memory_format)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=self.memory_format)  # a no-op for inputs already in that layout
        return self.classifier(torch.flatten(self.features(x), 1))

    def conv_inputs(self) -> list[tuple[nn.Conv2d, int]]:
        """(conv, side of its square input) in forward order: 32 for CIFAR's images, halved by each pool."""
        convs, size = [], 32
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                convs.append((m, size))
            elif isinstance(m, nn.MaxPool2d):
                size //= 2
        return convs


class SimpleResNet4bit(nn.Module):
    """The paper code's second network (not in the paper): six 3x3 convs (bias kept,
    as in VGG4bit) 3->16, 16->16, 16->32 stride 2, 32->32, 32->64 stride 2, 64->64, each followed by
    BatchNorm and ReLU; one identity residual around the second conv (added after its ReLU, as in the
    code: out = relu(bn2(conv2(h))) + h with h the first conv's output); global average pooling; a
    quantized linear head 64->K. 73,178 parameters for K = 10."""

    arch_name = "simpleresnet4bit"
    memory_format = torch.channels_last

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.num_classes = num_classes
        widths = [(3, 16, 1), (16, 16, 1), (16, 32, 2), (32, 32, 1), (32, 64, 2), (64, 64, 1)]
        for i, (c_in, c_out, stride) in enumerate(widths, start=1):
            setattr(self, f"conv{i}", QuantConv2d(c_in, c_out, 3, stride=stride, padding=1, bias=True))
            setattr(self, f"bn{i}", nn.BatchNorm2d(c_out))
            setattr(self, f"relu{i}", nn.ReLU(inplace=True))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = QuantLinear(64, num_classes)
        init_paper_weights(self)
        self.to(memory_format=self.memory_format)  # as VGG4bit

    def _unit(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, f"relu{i}")(getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=self.memory_format)
        identity = self._unit(1, x)
        out = self._unit(2, identity) + identity
        for i in range(3, 7):
            out = self._unit(i, out)
        return self.fc(torch.flatten(self.avgpool(out), 1))

    def conv_inputs(self) -> list[tuple[nn.Conv2d, int]]:
        convs, size = [], 32
        for i in range(1, 7):
            conv = getattr(self, f"conv{i}")
            convs.append((conv, size))
            size = conv_output_side(conv, size)
        return convs


ARCHS: dict[str, type[nn.Module]] = {cls.arch_name: cls for cls in (VGG4bit, SimpleResNet4bit)}


def check_arch(name: str) -> type[nn.Module]:
    check_arch_name(name)
    return ARCHS[name]


def set_memory_format(model: nn.Module, memory_format: torch.memory_format) -> nn.Module:
    """The same network computing in another layout (for speed trials): parameters keep their values."""
    model.memory_format = memory_format
    return model.to(memory_format=memory_format)


def build_arch(name: str, num_classes: int) -> nn.Module:
    """A fresh network of a registered architecture (FP32: no quantizer attached yet)."""
    return check_arch(name)(num_classes)


def quant_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The quantizable layers in forward order, with their qualified names."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, QUANT_LAYERS)]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def forward_macs_per_image(model: nn.Module) -> int:
    """Multiply-accumulates of one forward pass (convs and linears), counted from the layer shapes."""
    return sum(layer_macs_per_image(model))


def conv_layers(model: nn.Module) -> list[tuple[nn.Conv2d, int]]:
    """(conv, side of its square input) in forward order, for either architecture."""
    return model.conv_inputs()


def conv_output_side(conv: nn.Conv2d, size: int) -> int:
    k, s, p, d = conv.kernel_size[0], conv.stride[0], conv.padding[0], conv.dilation[0]
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def conv_macs_per_image(conv: nn.Conv2d, size: int) -> int:
    """MACs of one image through ``conv`` given its input side (its output side counts: stride-2 halves it)."""
    out = conv_output_side(conv, size)
    return conv.in_channels * conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1] * out * out // conv.groups


def layer_macs_per_image(model: nn.Module) -> list[int]:
    """MACs of one forward pass per quantizable layer, in quant_layers order (for cost models)."""
    sides = {id(conv): size for conv, size in conv_layers(model)}
    macs = []
    for _, m in quant_layers(model):
        if isinstance(m, nn.Conv2d):
            macs.append(conv_macs_per_image(m, sides[id(m)]))
        else:
            macs.append(m.in_features * m.out_features)
    return macs
