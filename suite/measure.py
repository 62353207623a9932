"""Measurements, each saying how it was obtained: host fingerprint, SGEMM ceiling, interleaved training
throughput windows, eval throughput, peak memory, energy (RAPL, or an estimate with its power model).

Measurement code returns numbers and their provenance; it never decides whether a figure is good.
Functions that need torch import it inside, so the bench parent can use the rest without loading it."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .profiles import usable_cpus
from .provenance import package_version
from .spec import CONV_PASSES

# ---------------------------------------------------------------------------------------------
# Host fingerprint

ISA_FLAGS = {
    # name in the result -> any of these /proc/cpuinfo flags (x86 "flags", arm64 "Features")
    "avx2": ("avx2",),
    "avx512f": ("avx512f",),
    "avx512_vnni": ("avx512_vnni",),
    "avx_vnni": ("avx_vnni",),
    "avx512_bf16": ("avx512_bf16",),
    "amx": ("amx_tile",),
    "neon": ("asimd", "neon"),
    "arm_dotprod": ("asimddp",),
    "sve": ("sve",),
}


# Environment variables that cap the instruction set oneDNN and MKL may use (set to test AVX2 code paths on an
# AVX-512 host). A result made under a cap records it, so it is never taken for the host's full speed.
ISA_CAP_VARS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY")


def isa_caps() -> dict[str, str]:
    """The ISA caps in force for this process's kernels: {variable: value}, empty when uncapped."""
    return {var: os.environ[var].strip() for var in ISA_CAP_VARS if os.environ.get(var, "").strip()}


def _cpuinfo_linux(path: str = "/proc/cpuinfo") -> tuple[str | None, set[str]]:
    model, flags = None, set()
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model", "cpu model") and model is None:
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    return model, flags


def host_fingerprint() -> dict:
    """What the figures were measured on. Reads /proc/cpuinfo (py-cpuinfo elsewhere); does not import torch."""
    import psutil

    model, flags = _cpuinfo_linux()
    if model is None or not flags:
        try:
            import cpuinfo

            info = cpuinfo.get_cpu_info()
            model = model or info.get("brand_raw")
            flags = flags or set(info.get("flags", []))
        except Exception:  # py-cpuinfo fails on some exotic platforms; the fingerprint just says less
            pass
    logical = os.cpu_count() or 1
    fingerprint = {
        "cpu_model": model or platform.processor() or "unknown",
        "machine": platform.machine(),
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cpus": logical,
        "usable_cpus": usable_cpus(),
        "isa": {name: any(f in flags for f in names) for name, names in ISA_FLAGS.items()},
        "isa_caps": isa_caps(),
        "memory_bytes": psutil.virtual_memory().total,
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": package_version("torch"),
        "onnxruntime": package_version("onnxruntime"),
    }
    fingerprint["host_id"] = host_id(fingerprint)
    return fingerprint


def _machine_id() -> str:
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            value = Path(path).read_text().strip()
        except OSError:
            continue
        if value:
            return value
    return platform.node()


def _cpu_identity(path: str = "/proc/cpuinfo") -> str:
    """The first CPU's vendor, family, model, stepping and its full flag list: fixed for a machine's
    hardware, different between CPU generations that may share a model-name string."""
    keep = ("vendor_id", "cpu family", "model", "stepping", "CPU implementer", "CPU part", "CPU variant",
            "CPU revision", "flags", "Features")
    found: dict[str, str] = {}
    try:
        with open(path) as f:
            for line in f:
                if not line.strip():
                    if found:
                        break  # the first processor block is enough
                    continue
                key, _, value = line.partition(":")
                key = key.strip()
                if key in keep and key not in found:
                    value = value.strip()
                    found[key] = " ".join(sorted(value.split())) if key in ("flags", "Features") else value
    except OSError:
        pass
    return ";".join(f"{k}={found[k]}" for k in keep if k in found)


def _machine_secret(fingerprint: dict | None = None) -> str:
    """What the host id hashes. /etc/machine-id alone is not enough: machines cloned from one image share
    it (an Intel Xeon and an AMD EPYC of this project both hashed to 0035969e). So the hardware is mixed
    in: CPU model and identity (vendor, family, model, stepping, every ISA flag), logical CPUs and memory
    in GiB. Everything here is fixed for one machine (no clock, load, boot id or hostname), so its id
    stays stable; only the hash leaves the machine, never the machine id itself."""
    fingerprint = fingerprint or {}
    memory = fingerprint.get("memory_bytes")
    parts = [
        f"machine-id={_machine_id()}",
        f"cpu={fingerprint.get('cpu_model', '')}",
        f"arch={fingerprint.get('machine') or platform.machine()}",
        f"logical={fingerprint.get('logical_cpus', os.cpu_count())}",
        f"memory_gib={round(memory / 2**30) if memory else ''}",
        _cpu_identity(),
    ]
    return "|".join(parts)


def host_id(fingerprint: dict) -> str:
    """A stable folder name for a machine: readable hardware summary plus a short hash of the machine id
    mixed with the hardware (so two machines cloned from one image stay apart, two identical cloud
    instances stay apart by their machine ids, and the machine id itself is not published)."""
    slug = re.sub(r"[^a-z0-9]+", "-", fingerprint["cpu_model"].lower()).strip("-")[:40].strip("-") or "cpu"
    memory_gib = round(fingerprint["memory_bytes"] / 2**30)
    digest = hashlib.sha256(_machine_secret(fingerprint).encode()).hexdigest()[:8]
    return f"{slug}-{fingerprint['logical_cpus']}t-{memory_gib}g-{digest}"


# ---------------------------------------------------------------------------------------------
# Memory


def peak_rss_bytes() -> int:
    """The calling process's resident high-water mark: VmHWM on Linux, else ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(maxrss if sys.platform == "darwin" else maxrss * 1024)  # bytes on macOS, KiB on Linux


# ---------------------------------------------------------------------------------------------
# Energy

POWERCAP_ROOT = Path("/sys/class/powercap")

# Manufacturer TDP and hardware threads per chip, for the estimate when RAPL is unreadable. A vCPU is
# charged TDP / chip_threads, so a 2-vCPU slice of a 64-core server is not charged the whole socket.
TDP_TABLE: tuple[tuple[str, float, int], ...] = (
    (r"EPYC 7763\b", 280.0, 128),
    (r"EPYC 7B13\b", 280.0, 128),  # Google's variant of the 7763
    (r"EPYC 9654\b", 360.0, 192),
    (r"Xeon\(R\) Platinum 8259CL", 210.0, 48),
    (r"Xeon\(R\) Platinum 8375C", 300.0, 64),
    (r"Xeon\(R\) Platinum 8481C", 350.0, 112),
    (r"Core\(TM\) i7-1165G7", 28.0, 8),
    (r"Core\(TM\) i5-1135G7", 28.0, 8),
    (r"Ryzen 7 5800X\b", 105.0, 16),
    (r"Ryzen 9 5950X\b", 105.0, 32),
)
# CodeCarbon's fallback when the CPU model is unknown is a TDP of 4 W per thread;
# here it is charged per busy thread at full value (not CodeCarbon's 50% average).
DEFAULT_WATTS_PER_THREAD = 4.0


@dataclass(frozen=True)
class PowerModel:
    watts_per_busy_thread: float
    source: str  # where the figure comes from, written into the result

    def describe(self) -> str:
        return f"CPU seconds x {self.watts_per_busy_thread:.2f} W per busy logical CPU ({self.source})"


def power_model(cpu_model: str, profile_watts: float | None = None) -> PowerModel:
    """The profile's figure, else the TDP table by CPU model, else the documented default."""
    if profile_watts is not None:
        return PowerModel(profile_watts, "the profile's watts_per_busy_thread")
    for pattern, tdp, threads in TDP_TABLE:
        if re.search(pattern, cpu_model):
            return PowerModel(tdp / threads, f"TDP table: {tdp:g} W over {threads} threads for {pattern!r}")
    return PowerModel(
        DEFAULT_WATTS_PER_THREAD,
        f"default: CPU model {cpu_model!r} is not in the TDP table; CodeCarbon's 4 W-per-thread fallback",
    )


@dataclass
class RaplDomain:
    name: str
    energy_file: Path
    max_range_uj: int


class RaplReader:
    """Package-level RAPL counters under the powercap tree (intel-rapl:N; AMD uses the same names)."""

    method = "measured_rapl"

    def __init__(self, root: Path = POWERCAP_ROOT):
        self.domains: list[RaplDomain] = []
        self.reason: str | None = None
        if not root.is_dir():
            self.reason = f"{root} does not exist (no RAPL driver, or a VM/container hides it)"
            return
        for zone in sorted(root.glob("intel-rapl:*")):
            if zone.name.count(":") != 1:
                continue  # sub-domains (core, dram) are inside the package figure or not comparable
            energy = zone / "energy_uj"
            try:
                int(energy.read_text())
                max_range = int((zone / "max_energy_range_uj").read_text())
            except PermissionError:
                self.reason = f"{energy} is not readable by this user (root only since the PLATYPUS fix)"
                self.domains = []
                return
            except (OSError, ValueError):
                continue
            name = (zone / "name").read_text().strip() if (zone / "name").exists() else zone.name
            self.domains.append(RaplDomain(name, energy, max_range))
        if not self.domains and self.reason is None:
            self.reason = f"no readable package domain under {root}"

    @property
    def available(self) -> bool:
        return bool(self.domains)

    def read(self) -> list[int]:
        return [int(d.energy_file.read_text()) for d in self.domains]

    def joules_between(self, before: list[int], after: list[int]) -> float:
        """Energy between two readings; a counter that went down wrapped around once at max_energy_range_uj."""
        total_uj = 0
        for domain, b, a in zip(self.domains, before, after):
            delta = a - b
            if delta < 0:
                delta += domain.max_range_uj
            total_uj += delta
        return total_uj / 1e6


class NvmlReader:
    """The GPU's own energy counter (NVML nvmlDeviceGetTotalEnergyConsumption, millijoules since the driver
    loaded; Volta and newer), read through nvidia-ml-py when it is installed. Same interface as RaplReader."""

    method = "measured_nvml"

    def __init__(self, index: int = 0):
        self.domains: list[RaplDomain] = []
        self.reason: str | None = None
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self._read = lambda: int(pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))
            self._read()
            name = pynvml.nvmlDeviceGetName(self._handle)
            name = name.decode() if isinstance(name, bytes) else name
            self.domains = [RaplDomain(f"GPU {index} ({name})", Path("nvml"), 2**63)]
        except Exception as exc:  # no package, no driver, or a GPU without the counter: say which
            self.reason = f"NVML energy counter unreadable ({type(exc).__name__}: {str(exc)[:120]})"

    @property
    def available(self) -> bool:
        return bool(self.domains)

    def read(self) -> list[int]:
        return [self._read() * 1000]  # microjoules, as RAPL

    def joules_between(self, before: list[int], after: list[int]) -> float:
        return (after[0] - before[0]) / 1e6


@dataclass
class EnergyMeter:
    """Accumulates energy and CPU time over timed windows of one method."""

    rapl: RaplReader
    joules: float = 0.0
    cpu_seconds: float = 0.0
    images: int = 0
    _start: tuple | None = field(default=None, repr=False)

    def start(self) -> None:
        self._start = (self.rapl.read() if self.rapl.available else None, time.process_time())

    def stop(self, images: int) -> None:
        rapl_before, cpu_before = self._start
        self.cpu_seconds += time.process_time() - cpu_before
        if rapl_before is not None:
            self.joules += self.rapl.joules_between(rapl_before, self.rapl.read())
        self.images += images


def energy_result(meter: EnergyMeter, model: PowerModel | None, epoch_images: int) -> dict:
    """{"joules_per_epoch", "method", "model", ...}: measured RAPL when readable, else the CPU-time estimate
    when a power model is given, else unavailable. Never a blend of the two."""
    base = {"epoch_images": epoch_images, "cpu_seconds": round(meter.cpu_seconds, 6), "images": meter.images}
    if meter.images <= 0:
        return {"joules_per_epoch": None, "method": "unavailable", "model": "no timed images", **base}
    if meter.rapl.available:
        per_image = meter.joules / meter.images
        domains = ", ".join(d.name for d in meter.rapl.domains)
        if getattr(meter.rapl, "method", "measured_rapl") == "measured_nvml":
            what = f"NVML board energy of {domains} over the timed windows (the GPU only, not the host CPU)"
        else:
            what = (f"RAPL package energy ({domains}) over the timed windows, whole socket (other processes "
                    f"included), wrap-around corrected")
        return {
            "joules_per_epoch": per_image * epoch_images,
            "method": getattr(meter.rapl, "method", "measured_rapl"),
            "model": f"{what}; scaled from {meter.images} images to {epoch_images}",
            **base,
        }
    if model is None:
        return {"joules_per_epoch": None, "method": "unavailable", "model": meter.rapl.reason or "no RAPL", **base}
    joules = meter.cpu_seconds * model.watts_per_busy_thread
    return {
        "joules_per_epoch": joules / meter.images * epoch_images,
        "method": "estimated",
        "model": f"{model.describe()}; RAPL unavailable: {meter.rapl.reason}",
        **base,
    }


# ---------------------------------------------------------------------------------------------
# Compute: the SGEMM ceiling and the model's counted FLOPs


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


def sgemm_gflops(n: int, repeats: int) -> dict:
    """Median rate over `repeats` multiplies after one warm-up."""
    probe = SgemmProbe(n)
    for _ in range(repeats):
        probe.sample()
    return probe.result()


FLOP_CONVENTION = (
    "2 FLOPs per multiply-accumulate of every conv and linear, counted for the forward pass, the weight "
    "gradient and the input gradient (none for the first layer, whose input needs no gradient); "
    "batch norm, activations, pooling, the quantizer and the optimizer are not counted"
)


def train_flops_per_image(model) -> int:
    """Counted FLOPs of one training step per image (see FLOP_CONVENTION)."""
    from .model import layer_macs_per_image

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

    from .model import conv_layers, conv_macs_per_image

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


def forward_flops_per_image(model) -> int:
    from .model import forward_macs_per_image

    return 2 * forward_macs_per_image(model)


# ---------------------------------------------------------------------------------------------
# Throughput


@dataclass
class WindowPlan:
    warmup_steps: int
    windows: int
    steps_per_window: int


def interleaved_training_windows(
    steppers: dict[str, Callable],
    next_batch: Callable[[], tuple],
    plan: WindowPlan,
    meters: dict[str, EnergyMeter],
    between_rounds: Callable[[], object] | None = None,
) -> dict[str, list[float]]:
    """Seconds per timed window for each method. Methods take turns window by window (the order rotates
    each round) so drift in machine load hits all of them alike; warm-up steps are not timed.
    between_rounds (the SGEMM probe) runs once before every round, outside the timed windows.

    steppers: name -> callable(images, labels) doing one optimizer step (suite.train.Stepper)."""
    names = list(steppers)
    batches = [next_batch() for _ in range(max(plan.steps_per_window, 1))]
    for name in names:
        for i in range(plan.warmup_steps):
            steppers[name](*batches[i % len(batches)])
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for window in range(plan.windows):
        if between_rounds is not None:
            between_rounds()
        shift = window % len(names)
        for name in names[shift:] + names[:shift]:
            images = 0
            meters[name].start()
            start = time.perf_counter()
            for batch in batches:
                float(steppers[name](*batch)[0])  # float() waits for the step (a GPU would run ahead)
                images += batch[1].shape[0]
            seconds[name].append(time.perf_counter() - start)
            meters[name].stop(images)
    return seconds


def eval_throughput(model, batches: list[tuple], placement=None) -> float:
    """Images per second of the model in eval mode over `batches` (the first one is a warm-up), under the
    placement's autocast; the clock stops when the device has finished."""
    import contextlib

    import torch

    autocast = placement.autocast() if placement is not None else contextlib.nullcontext()
    device = placement.device if placement is not None else "cpu"
    model.eval()
    with torch.inference_mode(), autocast:
        model(batches[0][0])
        synchronize(device)
        images, start = 0, time.perf_counter()
        for x, _ in batches[1:]:
            model(x).argmax(1)
            images += x.shape[0]
        synchronize(device)
        return images / (time.perf_counter() - start)


def paired_ratios(seconds: dict[str, list[float]], baseline: str) -> dict[str, float]:
    """method -> median over balanced cycles of (its time / the baseline's time in the same cycle)."""
    return {name: r["median"] for name, r in ratio_estimates(seconds, baseline).items()}


def ratio_estimates(seconds: dict[str, list[float]], baseline: str) -> dict[str, dict]:
    """method -> {"median", "low", "high", "cycles"} of its step-time ratio to the baseline.

    interleaved_training_windows rotates the order every round, so within each cycle of len(seconds)
    consecutive rounds every method runs once in every position. Measured here (quick tier, 1 thread),
    per-round tathe4/fp32 ratios alternated with who ran first after the SGEMM probe: 0.89-0.97 in
    one order, 1.13-1.14 in the other; a cycle's summed times cancel that position effect.
    low/high: the extreme cycles, the resolution a reader should grant the median. With fewer rounds
    than one cycle, rounds stand alone."""
    rounds = len(seconds[baseline])
    cycle = len(seconds) if rounds >= len(seconds) else 1
    spans = [range(start, start + cycle) for start in range(0, rounds - cycle + 1, cycle)]
    out = {}
    for name, times in seconds.items():
        ratios = [sum(times[i] for i in span) / sum(seconds[baseline][i] for i in span) for span in spans]
        out[name] = {"median": statistics.median(ratios), "low": min(ratios), "high": max(ratios), "cycles": len(ratios)}
    return out


def load_average() -> list[float] | None:
    """The 1/5/15-minute load averages, recorded beside every timing (a busy host shows there)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
