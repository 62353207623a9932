"""Energy per epoch, saying how it was obtained: RAPL package counters or the GPU's NVML counter (measured),
else CPU seconds times a power model (estimated, the model named), never a blend of the two."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

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
