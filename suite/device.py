"""Where and in what precision a run computes: the `device` (cpu | cuda) and `precision` (fp32 | bf16)
dimensions shared by train, bench and compare.

- fp32 means fp32: on CUDA, TF32 tensor-core math is switched off for matmuls and convolutions while a
  run lasts (torch enables it for cuDNN convolutions by default), and restored afterwards.
- bf16 means torch.autocast(bfloat16) around forward and loss only; master weights, AdamW, gradient
  clipping and the post-step projection stay in fp32.
- A CPU without bf16 instructions (no avx512_bf16 / amx_bf16) runs bf16 emulated, slower than fp32;
  such runs go ahead, say so in one line and are recorded as "emulated".
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .errors import UserError
from .measure.host import cpu_flags, host_fingerprint
from .spec import FULL_PRECISION, PRECISIONS

DEVICES = ("cpu", "cuda")
_CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@dataclass(frozen=True)
class Placement:
    """A validated (device, precision) pair and what this host does with it."""

    device: str
    precision: str

    def __post_init__(self):
        if self.device not in DEVICES:
            raise UserError(f"--device {self.device!r} is not one of: {', '.join(DEVICES)}")
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision {self.precision!r} is not one of: {', '.join(PRECISIONS)}")
        if self.device == "cuda" and not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise UserError(f"--device cuda: no CUDA GPU is visible to this torch ({torch.__version__}, {build}); "
                            "use --device cpu")

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    def device_name(self) -> str:
        if self.device == "cuda":
            return torch.cuda.get_device_name(torch.cuda.current_device())
        return host_fingerprint()["cpu_model"]

    def precision_support(self) -> str:
        """'fp32'; for bf16: 'native (<flag or GPU>)' or 'emulated (...)'."""
        if self.precision == FULL_PRECISION:
            return FULL_PRECISION
        if self.device == "cuda":
            return "native (CUDA)" if torch.cuda.is_bf16_supported() else "emulated (this GPU has no bf16 units)"
        present = [flag for flag in _CPU_BF16_FLAGS if flag in cpu_flags()]
        if present:
            return f"native ({', '.join(present)})"
        return "emulated (no avx512_bf16/amx_bf16 on this CPU: expect it slower than fp32)"

    def autocast(self):
        """The forward/loss context: bf16 autocast, or nothing for fp32."""
        if self.precision == "bf16":
            return torch.autocast(self.device, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def numerics(self):
        """For the length of a run: TF32 off on CUDA (fp32 means fp32) and cuDNN's autotuner on; restored after."""
        if self.device != "cuda":
            yield
            return
        saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = True  # fixed shapes: the fastest kernel per layer, chosen once
        try:
            yield
        finally:
            (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.benchmark) = saved

    def describe(self) -> str:
        support = self.precision_support()
        where = self.device_name()
        return f"{self.precision} on {self.device} ({where})" + (f", bf16 {support}" if self.precision == "bf16" else "")
