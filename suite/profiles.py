"""Hardware profiles: hardware_profiles/<name>.toml -> a validated Profile, and what a child process
does with one (its torch threads, the memory cap; suite/child.py sets its thread variables).

A profile file holds:
    description = "..."          what real machine it stands for (required)
    threads = 2                  intra-op threads, an integer >= 1 or "all" (every CPU this process may use)
    memory_cap_mib = 12288       optional; the child's memory limit
    batch_size = 128             optional; the training batch (default 128, the paper's)
    watts_per_busy_thread = 6.0  optional; the power model for energy estimates when RAPL is unreadable
    device = "cpu"               optional; "cpu" (default) or "cuda" (the first GPU)
    precision = "auto"           optional; what is measured beside the fp32 baseline arms: "fp32" (nothing
                                 more), "bf16" (every method also under bf16 autocast), or "auto" (default:
                                 bf16 too where this CPU has bf16 instructions or the device is a GPU, since
                                 that is what a user there would otherwise train in)
"""

from __future__ import annotations

import os
import resource
from dataclasses import dataclass
from pathlib import Path

from .bounds import MAX_WATTS_PER_THREAD, check_count, check_number
from .errors import UserError
from .userfiles import CONFIG_MAX_BYTES, parse_user_toml, read_user_text

# hardware_profiles/ at the top of a checkout; an install puts them beside the package (pyproject.toml maps them).
_INSTALLED_PROFILES = Path(__file__).resolve().parent / "hardware_profiles"
PROFILES_DIR = (_INSTALLED_PROFILES if _INSTALLED_PROFILES.is_dir()
                else Path(__file__).resolve().parents[1] / "hardware_profiles")
PROFILES_ENV = "Q4BENCH_PROFILES"

# CIFAR-10 held in memory as uint8 (50,000 train + 10,000 test images of 3x32x32 bytes): a cap below this
# cannot even load the data, so it is refused up front rather than reported as an out-of-memory run.
DATA_BYTES = 60_000 * 3 * 32 * 32
MIN_MEMORY_CAP_MIB = -(-DATA_BYTES // 2**20)  # 176

_KEYS = {"description", "threads", "memory_cap_mib", "batch_size", "watts_per_busy_thread", "device", "precision"}
DEVICE_CHOICES = ("cpu", "cuda")
PRECISION_CHOICES = ("auto", "fp32", "bf16")


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    threads: int  # resolved: "all" becomes the host's usable CPU count
    memory_cap_mib: int | None
    batch_size: int
    watts_per_busy_thread: float | None
    path: Path
    threads_spec: str  # as written: "2" or "all"
    device: str = "cpu"
    precision: str = "auto"

    def precisions(self, cpu_flags: set[str]) -> list[str]:
        """The precisions measured under this profile: fp32 always first (the baseline), then bf16 when asked,
        or, for "auto", when the CPU has bf16 instructions (avx512_bf16, amx_bf16) or the device is a GPU."""
        if self.precision == "bf16":
            return ["fp32", "bf16"]
        if self.precision == "auto" and (self.device == "cuda" or cpu_flags & {"avx512_bf16", "amx_bf16"}):
            return ["fp32", "bf16"]
        return ["fp32"]

    def oversubscribed(self, host_cpus: int | None = None) -> bool:
        return self.threads > (host_cpus or usable_cpus())


def usable_cpus() -> int:
    """Logical CPUs this process may run on (its affinity mask, which a container or taskset narrows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def _int_field(path: Path, data: dict, key: str) -> int:
    return check_count(data[key], key, label=f"{path}: key {key!r}")


def parse_profile(path: Path, text: str, host_cpus: int | None = None) -> Profile:
    """Validate one profile's TOML text; every error names the file and the key."""
    data = parse_user_toml(path, text, "profile")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise UserError(f"{path}: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(_KEYS))}")
    for key in ("description", "threads"):
        if key not in data:
            raise UserError(f"{path}: missing key {key!r}")
    description = data["description"]
    if not isinstance(description, str) or not description.strip():
        raise UserError(f"{path}: key 'description' must be a non-empty string")
    threads_value = data["threads"]
    if threads_value == "all":
        threads, threads_spec = host_cpus or usable_cpus(), "all"
    elif isinstance(threads_value, str):
        raise UserError(f"{path}: key 'threads' must be an integer or \"all\", found {threads_value!r}")
    else:
        threads = _int_field(path, data, "threads")
        threads_spec = str(threads)
    cap = None
    if "memory_cap_mib" in data:
        cap = _int_field(path, data, "memory_cap_mib")
        if cap < MIN_MEMORY_CAP_MIB:
            raise UserError(
                f"{path}: key 'memory_cap_mib' = {cap} is too small to load the data: CIFAR-10 alone takes "
                f"{MIN_MEMORY_CAP_MIB} MiB in memory"
            )
    batch_size = _int_field(path, data, "batch_size") if "batch_size" in data else 128
    watts = data.get("watts_per_busy_thread")
    if watts is not None:
        watts = check_number(watts, f"{path}: key 'watts_per_busy_thread'", 0, MAX_WATTS_PER_THREAD)
    device = _choice(path, data, "device", DEVICE_CHOICES, "cpu")
    precision = _choice(path, data, "precision", PRECISION_CHOICES, "auto")
    return Profile(path.stem, description.strip(), threads, cap, batch_size, watts, path, threads_spec, device,
                   precision)


def _choice(path: Path, data: dict, key: str, choices: tuple[str, ...], default: str) -> str:
    value = data.get(key, default)
    if value not in choices:
        raise UserError(f"{path}: key {key!r} must be one of {', '.join(map(repr, choices))}, found {value!r}")
    return value


def load_profile(path: str | os.PathLike, host_cpus: int | None = None) -> Profile:
    path = Path(path)
    return parse_profile(path, read_user_text(path, "profile", CONFIG_MAX_BYTES), host_cpus)


def profiles_dir(directory: str | os.PathLike | None = None) -> Path:
    if directory:
        return Path(directory)
    return Path(os.environ.get(PROFILES_ENV) or PROFILES_DIR)


def available_profiles(directory: str | os.PathLike | None = None) -> list[str]:
    return sorted(p.stem for p in profiles_dir(directory).glob("*.toml"))


def resolve_profile(name_or_path: str, directory: str | os.PathLike | None = None, host_cpus: int | None = None) -> Profile:
    """A profile by name (hardware_profiles/<name>.toml) or by path to a .toml file."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or os.sep in name_or_path:
        return load_profile(candidate, host_cpus)
    path = profiles_dir(directory) / f"{name_or_path}.toml"
    if not path.is_file():
        known = ", ".join(available_profiles(directory)) or "none"
        raise UserError(f"unknown profile {name_or_path!r}; known: {known}")
    return load_profile(path, host_cpus)


# ---------------------------------------------------------------------------------------------
# Inside the child process


def apply_rlimit_cap(cap_mib: int) -> str:
    """Cap the calling process's private writable memory with RLIMIT_DATA; returns a description.

    RLIMIT_AS would count address space that torch and glibc reserve but never touch (thread arenas,
    library mappings): `import torch` already reserves ~3x its resident size, and low RLIMIT_AS values
    break the import itself. RLIMIT_DATA counts heap, anonymous mappings and thread stacks, which is
    where tensors live, so it tracks resident memory closely for this workload. RLIMIT_RSS is not
    enforced by Linux at all."""
    limit = cap_mib * 2**20
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY and hard < limit:
        limit = hard
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    return f"RLIMIT_DATA = {limit // 2**20} MiB (private writable memory: heap, anonymous mappings, thread stacks)"


def apply_threads(threads: int) -> int:
    """Set torch's intra-op threads (the environment variables were set before torch was imported)."""
    import torch

    torch.set_num_threads(threads)
    return torch.get_num_threads()


# ---------------------------------------------------------------------------------------------
# cgroup v2: the parent makes one group per measured child under a delegated root; the child joins it


CGROUP_ENV = "Q4BENCH_CGROUP_ROOT"


def cgroup_root_usable(root: Path) -> str | None:
    """None when q4bench may create memory-capped groups under root, else why not."""
    try:
        controllers = (root / "cgroup.subtree_control").read_text().split()
    except OSError:
        return f"{root}/cgroup.subtree_control is not readable (not a cgroup v2 directory)"
    if "memory" not in controllers:
        return f"the memory controller is not enabled in {root}/cgroup.subtree_control"
    if not os.access(root, os.W_OK):
        return f"{root} is not writable by this user (no delegated cgroup)"
    return None


def find_delegated_cgroup(mounts: str = "/proc/self/mounts", membership: str = "/proc/self/cgroup") -> Path | None:
    """$Q4BENCH_CGROUP_ROOT, else this process's own cgroup v2 directory when it is delegated to us
    (writable, memory enabled for its children). The hierarchy's root is never used on its own."""
    if os.environ.get(CGROUP_ENV):
        return Path(os.environ[CGROUP_ENV])
    try:
        mount = next(
            (line.split()[1] for line in Path(mounts).read_text().splitlines() if line.split()[2:3] == ["cgroup2"]), None
        )
        own = next((line[3:] for line in Path(membership).read_text().splitlines() if line.startswith("0::")), None)
    except OSError:
        return None
    if mount is None or own is None or own.strip() in ("", "/"):
        return None
    candidate = Path(mount) / own.strip().lstrip("/")
    return candidate if cgroup_root_usable(candidate) is None else None


@dataclass
class CgroupSlot:
    """One child group with memory.max set; the measured child writes its pid to cgroup.procs."""

    path: Path
    cap_mib: int

    @classmethod
    def create(cls, root: Path, name: str, cap_mib: int) -> "CgroupSlot":
        path = root / name
        path.mkdir()
        (path / "memory.max").write_text(str(cap_mib * 2**20))
        if (path / "memory.swap.max").exists():
            (path / "memory.swap.max").write_text("0")  # swap would let the child exceed the cap unseen
        return cls(path, cap_mib)

    def events(self) -> dict[str, int]:
        try:
            lines = (self.path / "memory.events").read_text().splitlines()
        except OSError:
            return {}
        return {k: int(v) for k, v in (line.split() for line in lines if len(line.split()) == 2)}

    def oom_killed(self) -> bool:
        return self.events().get("oom_kill", 0) > 0

    def describe(self) -> str:
        return f"cgroup v2 memory.max = {self.cap_mib} MiB ({self.path.parent})"

    def remove(self) -> None:
        try:
            self.path.rmdir()  # a real cgroup directory goes with its interface files
        except OSError:
            # A stand-in directory (tests) holds plain files; a real one may still be draining. Best effort.
            for child in self.path.iterdir():
                try:
                    child.unlink()
                except OSError:
                    pass
            try:
                self.path.rmdir()
            except OSError:
                pass
