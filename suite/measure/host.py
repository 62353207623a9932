"""What the figures were measured on, and the state of the host and process while measuring: the host
fingerprint and its stable id, the one /proc/cpuinfo reader, ISA caps, load average and peak memory.
Never imports torch."""

from __future__ import annotations

import hashlib
import os
import platform
import re
import resource
import sys
from dataclasses import dataclass
from pathlib import Path

from ..profiles import usable_cpus
from ..provenance import package_version

CPUINFO = "/proc/cpuinfo"

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


# ---------------------------------------------------------------------------------------------
# /proc/cpuinfo

MODEL_KEYS = ("model name", "Model", "cpu model")  # x86, arm boards, mips/others
FLAG_KEYS = ("flags", "Features")  # x86, arm64
# The first CPU's fields that are fixed for a machine's hardware and differ between CPU generations that may
# share a model-name string: vendor, family, model, stepping (arm: implementer, part, variant, revision), flags.
IDENTITY_KEYS = ("vendor_id", "cpu family", "model", "stepping", "CPU implementer", "CPU part", "CPU variant",
                 "CPU revision", *FLAG_KEYS)


@dataclass(frozen=True)
class CpuInfo:
    model: str | None  # the first model line anywhere (an arm board names itself after the processor blocks)
    flags: frozenset[str]  # the first non-empty flags line: x86 "flags" or arm64 "Features"
    identity: tuple[tuple[str, str], ...]  # IDENTITY_KEYS of the first processor block, flag lists sorted


def parse_cpuinfo(text: str) -> CpuInfo:
    model, flags, identity, first_block = None, frozenset(), {}, True
    for line in text.splitlines():
        if not line.strip():
            first_block = first_block and not identity  # the first processor block ends at its blank line
            continue
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key in MODEL_KEYS and model is None:
            model = value
        elif key in FLAG_KEYS and not flags:
            flags = frozenset(value.split())
        if first_block and key in IDENTITY_KEYS and key not in identity:
            identity[key] = " ".join(sorted(value.split())) if key in FLAG_KEYS else value
    return CpuInfo(model, flags, tuple((k, identity[k]) for k in IDENTITY_KEYS if k in identity))


def read_cpuinfo(path: str | os.PathLike = CPUINFO) -> CpuInfo | None:
    """The parsed file; None where it cannot be read (not Linux, or hidden)."""
    try:
        return parse_cpuinfo(Path(path).read_text(errors="replace"))
    except OSError:
        return None


def cpu_flags(path: str | os.PathLike = CPUINFO) -> frozenset[str]:
    """The CPU's feature flags (x86 "flags", arm64 "Features"); empty where /proc/cpuinfo is unreadable."""
    info = read_cpuinfo(path)
    return info.flags if info else frozenset()


# ---------------------------------------------------------------------------------------------
# Fingerprint and host id


def host_fingerprint() -> dict:
    """What the figures were measured on. Reads /proc/cpuinfo (py-cpuinfo elsewhere); does not import torch."""
    import psutil

    info = read_cpuinfo()
    model, flags = (info.model, set(info.flags)) if info else (None, set())
    if model is None or not flags:
        try:
            import cpuinfo

            found = cpuinfo.get_cpu_info()
            model = model or found.get("brand_raw")
            flags = flags or set(found.get("flags", []))
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


def _cpu_identity(path: str = CPUINFO) -> str:
    """The first CPU's vendor, family, model, stepping and its full flag list: fixed for a machine's
    hardware, different between CPU generations that may share a model-name string."""
    info = read_cpuinfo(path)
    return ";".join(f"{k}={v}" for k, v in info.identity) if info else ""


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
# The host and this process while measuring


def load_average() -> list[float] | None:
    """The 1/5/15-minute load averages, recorded beside every timing (a busy host shows there)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


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
