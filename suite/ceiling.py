"""The compute ceiling a training step's efficiency is read against, and the ISA's theoretical peak beside it.

Ceiling: per precision (fp32 for the fp32 arms, bf16 for the bf16 arms), the best GFLOP/s over several GEMM
shapes timed on the same threads: one square n x n x n product and the network's own convolutions as GEMMs
(im2col: forward M = batch x out_h x out_w, K = in_channels x kh x kw, N = out_channels; backward-data and
backward-weights the same three sizes in their own order), the batch dimension capped at n rows (a slice of
the batch: a GEMM's rate hardly grows past a few thousand rows). A step cannot do its GEMMs faster than the
best GEMM the host ran, so efficiency = achieved / ceiling <= 1; a value above 1 is a measurement fault the
bench flags in the result (efficiency_anomaly), never a finding.

Theoretical peak: cores x GHz x FMA units per core x lanes x 2 (an FMA is two FLOPs), with lanes the
float32 lanes of the widest vector ISA (AVX-512 16, AVX2 8, NEON 4), the cores those the profile's threads
use, and the clock the maximum cpufreq reports (else /proc/cpuinfo's current clock, said so). The FMA units
per core are an assumption by vendor and ISA (two, or one for AMD's AVX-512, which Zen 4 runs on two
256-bit pipes), so the peak is an estimate, labelled as one; bf16 with AVX512_BF16 is twice fp32 (two bf16
products per fp32 lane). No peak where the clock or the ISA cannot be read, or on a GPU."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

CPUFREQ_MAX = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
CPUINFO = Path("/proc/cpuinfo")
PEAK_FORMULA = "cores x GHz x FMA units x lanes x 2"
_TORCH_DTYPES = {"fp32": "float32", "bf16": "bfloat16"}


@dataclass(frozen=True)
class GemmShape:
    m: int
    k: int
    n: int
    origin: str  # "square" or "<layer index> forward" etc.

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n

    def as_dict(self) -> dict:
        return {"m": self.m, "k": self.k, "n": self.n, "origin": self.origin}


def conv_gemm_shapes(model, batch_size: int, max_rows: int) -> list[GemmShape]:
    """The square max_rows^3 product and every convolution's three passes as im2col GEMMs (no backward-data
    for the first layer, as in training), the batch dimension capped at max_rows; duplicates once."""
    from .model import conv_layers, conv_output_side

    shapes = [GemmShape(max_rows, max_rows, max_rows, "square")]
    for index, (conv, side) in enumerate(conv_layers(model)):
        out = conv_output_side(conv, side)
        rows = min(batch_size * out * out, max_rows)
        patch = conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]
        shapes.append(GemmShape(rows, patch, conv.out_channels, f"conv {index} forward"))
        if index:
            shapes.append(GemmShape(rows, conv.out_channels, patch, f"conv {index} backward-data"))
        shapes.append(GemmShape(conv.out_channels, rows, patch, f"conv {index} backward-weights"))
    unique: dict[tuple, GemmShape] = {}
    for s in shapes:
        unique.setdefault((s.m, s.k, s.n), s)
    return list(unique.values())


def gemm_rate(shape: GemmShape, precision: str, repeats: int, device: str = "cpu") -> float:
    """Median GFLOP/s of `repeats` products of this shape in this precision, after one untimed call."""
    import torch

    from .measure.compute import synchronize

    dtype = getattr(torch, _TORCH_DTYPES[precision])
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(shape.m, shape.k, generator=generator).to(device=device, dtype=dtype)
    b = torch.randn(shape.k, shape.n, generator=generator).to(device=device, dtype=dtype)
    out = torch.empty(shape.m, shape.n, device=device, dtype=dtype)
    torch.mm(a, b, out=out)
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return shape.flops / statistics.median(times) / 1e9


def measure_ceiling(shapes: list[GemmShape], precision: str, repeats: int, device: str = "cpu") -> dict:
    """The best rate over the shapes, with the shape that reached it and every shape's rate."""
    rates = [(gemm_rate(s, precision, repeats, device), s) for s in shapes]
    best, shape = max(rates, key=lambda r: r[0])
    return {"gflops": best, "shape": shape.as_dict(), "repeats": repeats,
            "shapes": [dict(s.as_dict(), gflops=r) for r, s in rates]}


def efficiency_against(achieved_gflops: float, ceiling_gflops: float, precision: str) -> dict:
    """efficiency, its baseline and, above 1, the anomaly the bench reports instead of hiding it."""
    efficiency = achieved_gflops / ceiling_gflops
    anomaly = None
    if efficiency > 1:
        anomaly = (f"efficiency {efficiency:.2f} above 1: the step's counted rate {achieved_gflops:.1f} GFLOP/s beat "
                   f"the best {precision} GEMM measured ({ceiling_gflops:.1f} GFLOP/s); a measurement fault (the "
                   "ceiling timed under other load, or uncounted FLOPs), not the hardware exceeded")
    return {"efficiency": efficiency, "efficiency_baseline": precision, "efficiency_anomaly": anomaly}


# ---------------------------------------------------------------------------------------------
# The ISA's theoretical FMA peak


def cpu_clock_ghz(cpufreq: Path = CPUFREQ_MAX, cpuinfo: Path = CPUINFO) -> tuple[float, str] | None:
    """(GHz, where it was read): cpufreq's maximum, else /proc/cpuinfo's clock at the time; None if neither."""
    try:
        return int(cpufreq.read_text().strip()) / 1e6, "cpufreq cpuinfo_max_freq (maximum)"
    except (OSError, ValueError):
        pass
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.lower().startswith("cpu mhz"):
                return float(line.split(":", 1)[1]) / 1e3, "/proc/cpuinfo cpu MHz (the clock when read, not the boost)"
    except (OSError, ValueError, IndexError):
        pass
    return None


def _lanes_and_units(cpu_model: str, isa: dict) -> tuple[int, int] | None:
    """(fp32 lanes of the widest vector ISA, FMA units per core assumed for it); None if no FMA vector ISA."""
    if isa.get("avx512f"):
        return 16, 1 if "amd" in cpu_model.lower() else 2
    if isa.get("avx2"):
        return 8, 2
    if isa.get("neon"):
        return 4, 2
    return None


def fma_peak(host: dict, threads: int, device: str = "cpu", clock: tuple[float, str] | None = None) -> dict:
    """The theoretical peak of the profile's cores, or {"fp32_gflops": None, "reason": ...} where it cannot be
    stated. ``clock`` (GHz, source) defaults to cpu_clock_ghz()."""
    if device != "cpu":
        return {"fp32_gflops": None, "reason": "no GPU peak is estimated"}
    found = _lanes_and_units(str(host.get("cpu_model", "")), host.get("isa") or {})
    if found is None:
        return {"fp32_gflops": None, "reason": "no AVX2, AVX-512 or NEON in the host's ISA flags"}
    clock = clock if clock is not None else cpu_clock_ghz()
    if clock is None:
        return {"fp32_gflops": None, "reason": "the CPU clock could not be read"}
    lanes, units = found
    physical = host.get("physical_cores")
    cores = min(threads, physical) if isinstance(physical, int) and physical > 0 else threads
    fp32 = cores * clock[0] * units * lanes * 2
    isa = host.get("isa") or {}
    bf16 = 2 * fp32 if isa.get("avx512_bf16") and not isa.get("amx") else None
    return {"fp32_gflops": fp32, "bf16_gflops": bf16, "ghz": clock[0], "clock_source": clock[1], "cores": cores,
            "fma_units": units, "lanes_fp32": lanes, "method": "estimated",
            "formula": f"{PEAK_FORMULA} = {cores} x {clock[0]:.2f} x {units} x {lanes} x 2"}
