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

from .bounds import MAX_WATTS_PER_THREAD
from .config import Choice, Count, Number, Text, check_fields, read_table, setting
from .errors import FieldError, UserError
from .spec import CIFAR10_TEST_IMAGES, CIFAR10_TRAIN_IMAGES, FULL_PRECISION, PRECISIONS
from .userfiles import CONFIG_MAX_BYTES, parse_user_toml, read_user_text

# hardware_profiles/ at the top of a checkout; an install puts them beside the package (pyproject.toml maps them).
_INSTALLED_PROFILES = Path(__file__).resolve().parent / "hardware_profiles"
PROFILES_DIR = (_INSTALLED_PROFILES if _INSTALLED_PROFILES.is_dir()
                else Path(__file__).resolve().parents[1] / "hardware_profiles")
PROFILES_ENV = "Q4BENCH_PROFILES"

# CIFAR-10 held in memory as uint8 (50,000 train + 10,000 test images of 3x32x32 bytes): a cap below this
# cannot even load the data, so it is refused up front rather than reported as an out-of-memory run.
DATA_BYTES = (CIFAR10_TRAIN_IMAGES + CIFAR10_TEST_IMAGES) * 3 * 32 * 32
MIN_MEMORY_CAP_MIB = -(-DATA_BYTES // 2**20)  # 176

DEVICE_CHOICES = ("cpu", "cuda")
PRECISION_CHOICES = ("auto", *PRECISIONS)
ALL_THREADS = "all"  # threads = "all": every CPU this process may use


@dataclass(frozen=True)
class Profile:
    """A profile file's keys (the settings below) and what the reader derives: the name (the file's stem), the
    path, and the threads as written."""

    name: str
    description: str = setting(Text(nonempty=True))
    threads: int = setting(Count("threads", alternative=f'"{ALL_THREADS}"'))  # resolved: "all" is a CPU count
    memory_cap_mib: int | None = setting(Count("memory_cap_mib"), None)
    batch_size: int = setting(Count("batch_size"), 128)
    watts_per_busy_thread: float | None = setting(Number(0, MAX_WATTS_PER_THREAD), None)
    path: Path | None = None
    threads_spec: str = ""  # as written: "2" or "all"; "" means str(threads)
    device: str = setting(Choice(DEVICE_CHOICES), "cpu")
    precision: str = setting(Choice(PRECISION_CHOICES), "auto")

    def __post_init__(self):
        check_fields(self)
        if self.memory_cap_mib is not None and self.memory_cap_mib < MIN_MEMORY_CAP_MIB:
            raise FieldError("memory_cap_mib", f"= {self.memory_cap_mib} is too small to load the data: CIFAR-10 "
                                               f"alone takes {MIN_MEMORY_CAP_MIB} MiB in memory")
        if not self.threads_spec:
            object.__setattr__(self, "threads_spec", str(self.threads))

    def precisions(self, cpu_flags: set[str]) -> list[str]:
        """The precisions measured under this profile: fp32 always first (the baseline), then bf16 when asked,
        or, for "auto", when the CPU has bf16 instructions (avx512_bf16, amx_bf16) or the device is a GPU."""
        if self.precision == "bf16":
            return list(PRECISIONS)
        if self.precision == "auto" and (self.device == "cuda" or cpu_flags & {"avx512_bf16", "amx_bf16"}):
            return list(PRECISIONS)
        return [FULL_PRECISION]

    def oversubscribed(self, host_cpus: int | None = None) -> bool:
        return self.threads > (host_cpus or usable_cpus())


def usable_cpus() -> int:
    """Logical CPUs this process may run on (its affinity mask, which a container or taskset narrows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def parse_profile(path: Path, text: str, host_cpus: int | None = None) -> Profile:
    """Validate one profile's TOML text; every error names the file and the key."""
    table = parse_user_toml(path, text, "profile")
    if table.get("threads") == ALL_THREADS:
        table = {**table, "threads": host_cpus or usable_cpus()}
        return read_table(Profile, table, str(path), name=path.stem, path=path, threads_spec=ALL_THREADS)
    return read_table(Profile, table, str(path), name=path.stem, path=path)


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
