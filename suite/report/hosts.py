"""Which machine a figure came from, named so a reader can tell two hosts apart at a glance: GPU hosts by
their GPU, CPU hosts by CPU model, ISA class and cores ("AMD EPYC, AVX-512+bf16, 2 cores" against "AMD EPYC,
AVX2 only, 2 cores": the same model string on two machines whose kernels differ by 2x)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..spec import PAPER_ARCH
from .inputs import Inputs, RunHistory, submitted_folder_host

NETWORK_NAMES = {PAPER_ARCH: "VGG4bit", "simpleresnet4bit": "SimpleResNet4bit"}
NETWORK_NOTE = ("VGG4bit is the paper's network (3.25 M parameters); SimpleResNet4bit is the small network of the "
                "paper's code (73 k parameters), whose accuracies the paper's claims are not about.")
UNKNOWN_HOST = "unknown host"  # a history outside reports/submitted/<host>/ from before runs recorded their host
_HOST_ID_CPUS = re.compile(r"-(\d+)t-\d+g-[0-9a-f]{8}$")  # suite/measure/host.py host_id(): <cpu>-<logical>t-<mem>g-<hash>


def network_name(arch: str) -> str:
    return NETWORK_NAMES.get(arch, arch)


def isa_class(isa: dict | None) -> str:
    """The widest vector ISA the host's flags name: what decides how fast its fp32 and bf16 kernels run."""
    if not isa:
        return "ISA not recorded"
    if isa.get("amx"):
        return "AVX-512+AMX"
    if isa.get("avx512f"):
        return "AVX-512+bf16" if isa.get("avx512_bf16") else "AVX-512"
    if isa.get("avx2"):
        return "AVX2 only"
    if isa.get("sve"):
        return "Arm SVE"
    if isa.get("neon"):
        return "Arm NEON"
    return "no AVX2"


def short_cpu(model: str) -> str:
    """'Intel(R) Xeon(R) Processor' -> 'Intel Xeon': the marks and filler words say nothing."""
    model = re.sub(r"\((R|TM|tm|r)\)", "", model)
    model = re.sub(r"\bProcessor\b", "", model)
    return re.sub(r"\s+", " ", model).strip(" ,") or "unknown CPU"


def history_host(run: RunHistory) -> str:
    """The host a run is filed under: the folder under reports/submitted/<host>/ it sits in (a study resumed on
    other machines, even a seed begun elsewhere, stays one study under the host that began it; the claims rows
    name every host that trained it), else the host recorded in the history, else in its first epoch."""
    folder = submitted_folder_host(run.path)
    if folder is not None:
        return folder
    h = run.history
    if isinstance(h.get("host_id"), str):
        return h["host_id"]
    trained = run.epochs[0].get("trained_on") if run.epochs else None
    if isinstance(trained, dict) and isinstance(trained.get("host_id"), str):
        return trained["host_id"]
    return UNKNOWN_HOST


@dataclass(frozen=True)
class HostName:
    host_id: str
    label: str  # "AMD EPYC, AVX-512+bf16, 2 cores" or "NVIDIA H100 80GB HBM3"
    gpu: bool

    @property
    def short_id(self) -> str:
        """The host id's hash: what tells two hosts with the same label apart."""
        return self.host_id.rsplit("-", 1)[-1]


def _host_record(inputs: Inputs, host: str) -> dict:
    """The host fingerprint of the newest bench result of the host, else of a compare result; {} if neither."""
    results = sorted((r for r in inputs.results if r.host_id == host), key=lambda r: r.created)
    if results:
        return results[-1].data["host"]
    compared = next((c.host for c in inputs.compares if c.host_id == host and c.host), None)
    if compared:
        return compared
    return next((_epoch_host(r.history) for r in inputs.runs if history_host(r) == host and _epoch_host(r.history)), {})


def _epoch_host(history: dict) -> dict:
    """What a history's last epoch says of the host that trained it (histories record it since studies move
    between machines); {} when it says nothing usable."""
    epochs = history.get("epochs")
    last = epochs[-1] if isinstance(epochs, list) and epochs and isinstance(epochs[-1], dict) else {}
    where = last.get("trained_on")
    if not isinstance(where, dict) or not isinstance(where.get("isa"), dict):
        return {}
    return {"cpu_model": str(where.get("cpu_model", "")), "isa": {str(k): v is True for k, v in where["isa"].items()}}


def _gpu_name(inputs: Inputs, host: str) -> str | None:
    names = {c.device_name for c in inputs.compares if c.host_id == host and c.device == "cuda" and c.device_name}
    names |= {r.history.get("device_name") for r in inputs.runs
              if r.device == "cuda" and r.history.get("device_name") and history_host(r) == host}
    return ", ".join(sorted(names)) if names else None


def host_name(inputs: Inputs, host: str) -> HostName:
    if host == UNKNOWN_HOST:
        return HostName(host, "host not recorded (histories outside reports/submitted/<host>/)", False)
    gpu = _gpu_name(inputs, host)
    if gpu:  # a GPU host is named by its GPU; its CPU only fed it
        return HostName(host, gpu, True)
    record = _host_record(inputs, host)
    model = record.get("cpu_model") or next(
        (r.history.get("device_name") for r in inputs.runs if history_host(r) == host and r.history.get("device_name")),
        None) or "unknown CPU"
    cores = record.get("physical_cores")
    if isinstance(cores, int):
        count = f"{cores} core{'s' if cores != 1 else ''}"
    else:  # no fingerprint read: the logical CPU count is in the host id itself
        found = _HOST_ID_CPUS.search(host)
        count = f"{found.group(1)} CPUs" if found else "cores not recorded"
    return HostName(host, f"{short_cpu(model)}, {isa_class(record.get('isa'))}, {count}", False)


def host_names(inputs: Inputs, hosts: list[str]) -> dict[str, HostName]:
    """host id -> its name; two hosts whose labels would read the same get their host id's hash added."""
    names = {host: host_name(inputs, host) for host in hosts}
    labels = [n.label for n in names.values()]
    return {host: (n if labels.count(n.label) == 1 else HostName(host, f"{n.label} ({n.short_id})", n.gpu))
            for host, n in names.items()}
