"""The paper's VGG4bit (paper-spec 1.7). Conv and linear layers take an optional per-layer quantizer;
with none, the same network is the FP32 baseline."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .methods.base import LayerQuantizer

ARCH_NAME = "vgg4bit"


class QuantConv2d(nn.Conv2d):
    """Conv2d whose weight (and, for some methods, input and output gradient) pass through a quantizer."""

    quantizer: LayerQuantizer | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.quantizer
        if q is None:
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)
        y = F.conv2d(q.input(x), q.weight(self.weight), self.bias, self.stride, self.padding)
        return q.output(y)


class QuantLinear(nn.Linear):
    quantizer: LayerQuantizer | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.quantizer
        if q is None:
            return F.linear(x, self.weight, self.bias)
        return q.output(F.linear(q.input(x), q.weight(self.weight), self.bias))


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


class VGG4bit(nn.Module):
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
        self._init_weights()
        # channels_last (NHWC) is oneDNN's native CPU layout: measured here (2 threads, batch 128,
        # interleaved, medians) a training step is 8-20% faster than in NCHW, for every method alike.
        # Only the memory order changes; parameters, state dicts and checkpoints are the same values.
        self.to(memory_format=torch.channels_last)

    def _init_weights(self) -> None:
        # The paper's code: He-normal (fan-in) for convs, N(0, 1/in) for linears, zero biases, BN defaults.
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                    m.weight.normal_(0.0, math.sqrt(2.0 / fan_in))
                    m.bias.zero_()
                elif isinstance(m, nn.Linear):
                    m.weight.normal_(0.0, math.sqrt(1.0 / m.in_features))
                    m.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)  # a no-op for inputs already in NHWC
        return self.classifier(torch.flatten(self.features(x), 1))


def quant_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The quantizable layers in forward order, with their qualified names."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, QUANT_LAYERS)]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def forward_macs_per_image(model: VGG4bit) -> int:
    """Multiply-accumulates of one forward pass (convs and linears), counted from the layer shapes."""
    return sum(layer_macs_per_image(model))


def conv_layers(model: VGG4bit) -> list[tuple[nn.Conv2d, int]]:
    """(conv, side of its square input) in forward order: 32 for CIFAR's images, halved by each pool."""
    convs, size = [], 32
    for m in model.features:
        if isinstance(m, nn.Conv2d):
            convs.append((m, size))
        elif isinstance(m, nn.MaxPool2d):
            size //= 2
    return convs


def conv_macs_per_image(conv: nn.Conv2d, size: int) -> int:
    return conv.in_channels * conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1] * size * size


def layer_macs_per_image(model: VGG4bit) -> list[int]:
    """MACs of one forward pass per quantizable layer, in quant_layers order (for cost models)."""
    macs = [conv_macs_per_image(conv, size) for conv, size in conv_layers(model)]
    macs += [m.in_features * m.out_features for m in model.classifier if isinstance(m, nn.Linear)]
    return macs
