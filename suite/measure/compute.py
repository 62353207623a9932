"""Compute: the SGEMM ceiling the training figures are read against, the model's counted FLOPs and its
convolutions timed pass by pass. torch is imported inside the functions that need it."""

from __future__ import annotations

import statistics
import time

from ..spec import CONV_PASSES


class SgemmProbe:
    """float32 n x n matrix multiply at torch's current thread count (or on the GPU, TF32 off by the caller's
    Placement.numerics()): the ceiling the training figures are read against. Samples are taken up front and
    again between training rounds, so on a busy machine the ceiling sees the same load as the windows it is
    compared with."""

    def __init__(self, n: int, device: str = "cpu"):
        import torch

        generator = torch.Generator().manual_seed(0)
        self.n, self.device = n, device
        self.a = torch.randn(n, n, generator=generator).to(device)
        self.b = torch.randn(n, n, generator=generator).to(device)
        self.out = torch.empty(n, n, device=device)
        torch.mm(self.a, self.b, out=self.out)  # warm-up: first-call allocation and kernel selection
        self.samples: list[float] = []

    def sample(self) -> float:
        import torch

        synchronize(self.device)
        start = time.perf_counter()
        torch.mm(self.a, self.b, out=self.out)
        synchronize(self.device)
        rate = 2.0 * self.n**3 / (time.perf_counter() - start) / 1e9
        self.samples.append(rate)
        return rate

    def result(self) -> dict:
        return {"gflops": statistics.median(self.samples), "n": self.n, "repeats": len(self.samples),
                "samples_gflops": self.samples}


def synchronize(device) -> None:
    """Wait for the device's queued work (a GPU runs ahead of the host; a timer must not)."""
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


FLOP_CONVENTION = (
    "2 FLOPs per multiply-accumulate of every conv and linear, counted for the forward pass, the weight "
    "gradient and the input gradient (none for the first layer, whose input needs no gradient); "
    "batch norm, activations, pooling, the quantizer and the optimizer are not counted"
)


def train_flops_per_image(model) -> int:
    """Counted FLOPs of one training step per image (see FLOP_CONVENTION)."""
    from ..model import layer_macs_per_image

    macs = layer_macs_per_image(model)
    return 2 * (3 * sum(macs) - macs[0])


def conv_kernel_rates(model, batch_size: int, repeats: int, device: str = "cpu") -> dict:
    """The network's own convolutions timed pass by pass, alone, at torch's current threads and in the
    model's memory format: GFLOP/s of the forward pass, of the input gradient (backward_data; not for
    the first layer, as in training) and of the weight and bias gradient (backward_weights).

    Efficiency reads a whole step against SGEMM; these say which kernel holds it there. Measured here
    (q4bench bench, quick tier, batch 128, channels_last): forward and backward-data 0.89-1.19 of SGEMM,
    backward-weights 0.53-0.65 (oneDNN picks a jit:avx2 kernel for it on AVX2, not the brgemm kernels
    of the other two passes). Per layer: one untimed call, then the median of `repeats`."""
    import torch

    from ..model import conv_layers, conv_macs_per_image

    convs = conv_layers(model)
    weight = convs[0][0].weight
    channels_last = weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    generator = torch.Generator().manual_seed(0)
    seconds = dict.fromkeys(CONV_PASSES, 0.0)
    flops = dict.fromkeys(CONV_PASSES, 0)
    for index, (conv, size) in enumerate(convs):
        shape = (batch_size, conv.in_channels, size, size)
        x = torch.randn(shape, generator=generator).to(device).contiguous(memory_format=memory_format)
        weight = conv.weight.detach().contiguous(memory_format=memory_format)
        bias = conv.bias
        bias_sizes = [conv.out_channels] if conv.bias is not None else None
        args = (bias_sizes, list(conv.stride), list(conv.padding), list(conv.dilation), False, [0, 0], conv.groups)
        out = torch.nn.functional.conv2d(x, weight, None, conv.stride, conv.padding)
        grad = torch.randn(out.shape, generator=generator).to(device).contiguous(memory_format=memory_format)
        layer_flops = 2 * batch_size * conv_macs_per_image(conv, size)
        calls = {
            "forward": lambda: torch.nn.functional.conv2d(x, weight, bias, conv.stride, conv.padding),
            "backward_data": lambda: torch.ops.aten.convolution_backward(grad, x, weight, *args, [True, False, False]),
            "backward_weights": lambda: torch.ops.aten.convolution_backward(
                grad, x, weight, *args, [False, True, conv.bias is not None]),
        }
        for name, call in calls.items():
            if name == "backward_data" and index == 0:
                continue  # training never needs the image's gradient
            with torch.no_grad():
                call()
                times = []
                for _ in range(repeats):
                    synchronize(device)
                    start = time.perf_counter()
                    call()
                    synchronize(device)
                    times.append(time.perf_counter() - start)
            seconds[name] += statistics.median(times)
            flops[name] += layer_flops
    passes = {name: {"gflops": flops[name] / seconds[name] / 1e9, "seconds": seconds[name]} for name in CONV_PASSES}
    return {
        **passes,
        "layers": len(convs),
        "batch_size": batch_size,
        "repeats": repeats,
        "memory_format": "channels_last" if channels_last else "contiguous",
    }
